"""A trained NequIP model as an ltau-md :class:`~ltau_md.core.model.FeatureModel`.

Descriptor used: the per-atom scalar node features (``node_features``) that enter NequIP's
per-atom energy readout (the ``per_atom_energy_readout`` ScalarMLP), i.e. the output of the last
message-passing (convnet) layer. For ``NequIPGNNModel`` this last layer is scalar-only, so the
dimension D equals ``num_features[0]`` (the 0e multiplicity, e.g. 8 for ``num_features: 8``).
They are captured with a forward pre-hook on the readout module during the same forward pass
that yields energy, forces and stress; for models without such a module the ``node_features``
entry of the model's output dict is used (the same tensor for NequIP models).

:meth:`NequIPFeatureModel.features` computes the features alone (descriptor extraction): the
hook ends the forward pass at the readout, without autograd bookkeeping, so neither the
readout nor the force backward runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from nequip.data import AtomicDataDict, from_ase

from ltau_md.core.exceptions import ArtifactError, DataError, InvalidParameterError
from ltau_md.core.model import DEFAULT_BATCH_SIZE, ModelOutput, check_species, frame_batches
from ltau_md.core.structures import read_structures
from ltau_md.integrations.nequip._data import atoms_info, frame_numbers, frame_to_atoms
from ltau_md.integrations.nequip.heads import output_signals

__all__ = ["NequIPFeatureModel", "descriptors_for_dataset", "READOUT_MODULE"]

#: name of the NequIP module whose input node features are the descriptors
READOUT_MODULE = "per_atom_energy_readout"


class _FeaturesReady(Exception):
    """Raised by the readout hook in a features-only pass: the rest of the model is skipped."""


def _readout_module(model: torch.nn.Module) -> torch.nn.Module | None:
    for name, mod in model.named_modules():
        if name.split(".")[-1] == READOUT_MODULE:
            return mod
    return None


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; InvalidParameterError for an unknown name or a CUDA
    device this torch build or machine does not have."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidParameterError(f"unknown torch device {device!r} (use cpu or cuda)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameterError(
                f"device {device!r}: this torch build or machine has no CUDA "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False); use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidParameterError(f"device {device!r}: only {torch.cuda.device_count()} "
                                        "CUDA device(s) visible")
    return dev


class NequIPFeatureModel:
    """Energy (eV), forces (eV/A), stress (eV/A^3, Voigt) and per-atom latent features of a
    trained NequIP model, from one forward pass (see module docstring for the features).

    Build with :meth:`from_file` (a ``.ckpt`` checkpoint, whose EMA weights are used when
    present, or a ``.nequip.zip`` package). ``chemical_species_to_atom_type_map`` maps element
    symbols to model type names (default: identity, type names must be element symbols).
    Input preprocessing (type mapping, neighbour list at the model's r_max) is the same as
    nequip's own ASE calculator.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str | torch.device = "cpu",
        chemical_species_to_atom_type_map: dict[str, str] | None = None,
        source: str | None = None,
    ):
        from ase.data import atomic_numbers
        from nequip.integrations.utils import basic_transforms
        from nequip.nn import graph_model

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.source = source
        metadata = dict(getattr(model, "metadata", {}) or {})
        type_names = list(getattr(model, "type_names", []) or [])
        if not type_names and graph_model.TYPE_NAMES_KEY in metadata:
            type_names = metadata[graph_model.TYPE_NAMES_KEY].split(" ")
        if not type_names or graph_model.R_MAX_KEY not in metadata:
            raise ArtifactError(f"model {source or ''} lacks type_names / r_max metadata")
        self.type_names: list[str] = type_names
        self.r_max = float(metadata[graph_model.R_MAX_KEY])
        smap = chemical_species_to_atom_type_map or {t: t for t in type_names}
        bad = [s for s in smap if s not in atomic_numbers]
        if bad:
            raise DataError(
                f"model type names {bad} are not element symbols: pass "
                "chemical_species_to_atom_type_map (element symbol -> type name)"
            )
        self.species_map = dict(smap)
        #: atomic numbers the model knows
        self.species: list[int] = sorted(atomic_numbers[s] for s in smap)
        #: how errors name this model: the type map is named when one was given, since an
        #: element it leaves out is unknown to the model through it
        self.description = "the NequIP model"
        if chemical_species_to_atom_type_map:
            self.description += (" through the type map " + ",".join(
                f"{k}={v}" for k, v in smap.items()) + f" (its types: {' '.join(type_names)})")
        self.transforms = basic_transforms(metadata, self.r_max, type_names, self.species_map)
        self._readout = _readout_module(self.model)
        self._captured: torch.Tensor | None = None
        self._features_only = False
        if self._readout is not None:
            self._readout.register_forward_pre_hook(self._capture)
        self.feature_dim: int | None = None
        irreps = getattr(self._readout, "irreps_in", None)
        if irreps is not None and AtomicDataDict.NODE_FEATURES_KEY in irreps:
            self.feature_dim = int(irreps[AtomicDataDict.NODE_FEATURES_KEY].dim)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        *,
        chemical_species_to_atom_type_map: dict[str, str] | None = None,
        model_key: str | None = None,
    ) -> NequIPFeatureModel:
        """Load a checkpoint (``.ckpt``) or package (``.nequip.zip``) eagerly."""
        from nequip.model.saved_models.load_utils import load_saved_model
        from nequip.train.lightning import _SOLE_MODEL_KEY
        from nequip.utils.global_state import set_global_state

        path = Path(path)
        if not path.exists():
            raise ArtifactError(f"model file {path} does not exist")
        if path.is_dir():
            raise ArtifactError(f"model path {path} is a directory; pass the checkpoint "
                                "(.ckpt) or package (.nequip.zip) file")
        resolve_device(device)  # before the (slow) load
        set_global_state(allow_tf32=False)
        try:
            model = load_saved_model(str(path), compile_mode="eager",
                                     model_key=model_key or _SOLE_MODEL_KEY)
        except Exception as exc:  # torch.load / zipfile / pickle raise many types
            raise ArtifactError(
                f"cannot load a NequIP model from {path} (expected a nequip-train checkpoint "
                f".ckpt or a nequip-package .nequip.zip): {type(exc).__name__}: {exc}"
            ) from exc
        return cls(model, device=device,
                   chemical_species_to_atom_type_map=chemical_species_to_atom_type_map,
                   source=str(path))

    def weights_sha256(self) -> str:
        """SHA-256 of the model's weights (every tensor of its ``state_dict``, by value,
        whatever the names): equal for a checkpoint and the ``nequip-package`` built from it,
        different for a model trained again."""
        import hashlib

        parts = sorted(
            hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode()
                           + t.detach().cpu().contiguous().view(-1).view(torch.uint8)
                           .numpy().tobytes()).hexdigest()
            for t in self.model.state_dict().values() if isinstance(t, torch.Tensor))
        return hashlib.sha256("".join(parts).encode()).hexdigest()

    # ------------------------------------------------------------------ evaluation
    def _capture(self, module: torch.nn.Module, args: Any) -> None:
        self._captured = args[0][AtomicDataDict.NODE_FEATURES_KEY].detach()
        if self._features_only:
            raise _FeaturesReady

    def atoms_to_data(self, atoms: Atoms) -> AtomicDataDict.Type:
        """nequip input dict of ``atoms`` (SpeciesError for elements the model lacks)."""
        check_species(atoms.numbers, self.species, self.description)
        data = from_ase(Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc))
        for t in self.transforms:
            data = t(data)
        return data

    def _batch(self, atoms_list: Sequence[Atoms]) -> AtomicDataDict.Type:
        """One nequip batch of ``atoms_list`` on the model's device."""
        batch = AtomicDataDict.batched_from_list([self.atoms_to_data(a) for a in atoms_list])
        return AtomicDataDict.to_(batch, self.device)

    def _accept(self, feats: torch.Tensor | None, batch: AtomicDataDict.Type) -> torch.Tensor:
        """``feats`` if it holds one row per atom of ``batch`` (recording ``feature_dim``),
        else ArtifactError."""
        n_atoms = batch[AtomicDataDict.POSITIONS_KEY].shape[0]
        if feats is None or feats.shape[0] != n_atoms:
            rows = "no" if feats is None else feats.shape[0]
            raise ArtifactError(f"captured features have {rows} rows for {n_atoms} atoms")
        if self.feature_dim is None:
            self.feature_dim = int(feats.shape[1])
        return feats

    def forward(self, atoms_list: Sequence[Atoms]) -> tuple[AtomicDataDict.Type, torch.Tensor]:
        """One batched forward pass: the model's output dict and the (n_atoms, D) features."""
        batch = self._batch(atoms_list)
        self._captured = None
        out = self.model(batch)
        feats = self._captured
        if feats is None:
            if AtomicDataDict.NODE_FEATURES_KEY not in out:
                raise ArtifactError("the model exposes no per-atom node features")
            feats = out[AtomicDataDict.NODE_FEATURES_KEY].detach()
        self._captured = None
        return out, self._accept(feats, batch)

    def features(self, atoms_list: Sequence[Atoms]) -> torch.Tensor:
        """The (n_atoms, D) features of ``atoms_list`` (one batch), as :meth:`forward` gives
        them, from a pass that stops at the readout: no energy, no forces, no autograd graph
        (a model without a readout module runs the full :meth:`forward`)."""
        if self._readout is None:
            return self.forward(atoms_list)[1]
        batch = self._batch(atoms_list)
        self._captured, self._features_only = None, True
        try:
            with torch.no_grad():
                self.model(batch)
        except _FeaturesReady:
            pass
        finally:
            self._features_only = False
        feats, self._captured = self._captured, None
        return self._accept(feats, batch)

    def evaluate_many(self, atoms_list: Sequence[Atoms], stress: bool = False
                      ) -> list[ModelOutput]:
        """:meth:`evaluate` for several structures in one batched forward pass."""
        if len(atoms_list) == 0:
            return []
        out, feats = self.forward(atoms_list)
        energy = out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().cpu().numpy().reshape(-1)
        forces = out[AtomicDataDict.FORCE_KEY].detach().cpu().numpy().astype(np.float64)
        feats_np = feats.cpu().numpy().astype(np.float32)
        signals = {k: v.cpu().numpy().astype(np.float64)
                   for k, v in output_signals(out).items()}
        st = None
        if stress and AtomicDataDict.STRESS_KEY in out:
            st = out[AtomicDataDict.STRESS_KEY].detach().cpu().numpy().reshape(-1, 3, 3)
        from ase.stress import full_3x3_to_voigt_6_stress

        res, start = [], 0
        for i, atoms in enumerate(atoms_list):
            stop = start + len(atoms)
            s = None
            if st is not None and bool(np.all(atoms.pbc)):
                s = full_3x3_to_voigt_6_stress(st[i].astype(np.float64))
            res.append(ModelOutput(energy=float(energy[i]), forces=forces[start:stop].copy(),
                                   stress=s, features=feats_np[start:stop].copy(),
                                   signals={k: v[start:stop].copy()
                                            for k, v in signals.items()}))
            start = stop
        return res

    def evaluate(self, atoms: Atoms, stress: bool = False) -> ModelOutput:
        """Energy (eV), forces (n, 3) eV/A, stress (6,) eV/A^3 Voigt (only for 3D-periodic
        ``atoms`` with ``stress=True``, else None) and features (n, D) float32."""
        return self.evaluate_many([atoms], stress=stress)[0]

    def __repr__(self) -> str:
        return (f"NequIPFeatureModel({self.source!r}, type_names={self.type_names}, "
                f"r_max={self.r_max}, feature_dim={self.feature_dim}, device={self.device})")


def as_atoms_list(data: Any, type_names: Sequence[str] | None = None) -> list[Atoms]:
    if isinstance(data, (str, os.PathLike)) or (
            isinstance(data, Sequence) and all(isinstance(a, Atoms) for a in data)):
        return read_structures(data)
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):  # nequip dataset
        frames = (data[i] for i in range(len(data)))
        return [frame_to_atoms(f, frame_numbers(f, type_names)) for f in frames]
    raise DataError(f"cannot read structures from a {type(data).__name__}")


def descriptors_for_dataset(
    model: NequIPFeatureModel,
    data: str | os.PathLike | Sequence[Atoms] | Any,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    fingerprint: str | None = None,
) -> np.ndarray:
    """Per-atom descriptors (N, D) float32 of all atoms of ``data`` in the logged order
    (frames in order, concatenated).

    ``data``: list of Atoms, an ASE-readable file (e.g. the log's ``frames.traj`` or the
    training xyz), or a nequip dataset. With ``fingerprint`` (an error log's), the structures'
    fingerprint (species, frames, positions, reference forces) must match or ArtifactError is
    raised, so descriptors can never be paired with the wrong atom order.
    """
    from tqdm.auto import tqdm

    atoms_list = as_atoms_list(data, model.type_names)
    if not atoms_list:
        raise DataError("no structures given")
    if fingerprint is not None:
        fp = atoms_info(atoms_list).fingerprint
        if fp != fingerprint:
            raise ArtifactError(
                f"the structures' fingerprint {fp} differs from the error log's {fingerprint}: "
                "they are not the logged training set in the logged order"
            )
    for i, a in enumerate(atoms_list):
        try:
            check_species(a.numbers, model.species, "the NequIP model")
        except Exception as exc:
            raise type(exc)(f"structure {i}: {exc}") from exc
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = []
    with tqdm(total=len(atoms_list), desc="descriptors", unit="frame",
              disable=not progress) as bar:
        for sl in frame_batches(atoms_list, batch_size):
            chunks.append(model.features(atoms_list[sl]).cpu().numpy().astype(np.float32))
            bar.update(sl.stop - sl.start)
    out = np.concatenate(chunks, axis=0)
    n = sum(len(a) for a in atoms_list)
    if out.shape[0] != n:
        raise DataError(f"got {out.shape[0]} descriptor rows for {n} atoms")
    return out
