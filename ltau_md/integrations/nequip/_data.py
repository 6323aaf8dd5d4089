"""Training-set bookkeeping shared by the callback, descriptor extraction and ``fit``.

The *logged atom order* is: frames in training-dataset order (``dataset[0]``,
``dataset[1]``, ...), atoms of each frame in their stored order, frames concatenated. The
callback, :func:`frames_info` and :func:`atoms_info` all use it, so the fingerprint written with
the error log can be recomputed from the same structures given as ASE ``Atoms``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from nequip.data import AtomicDataDict, register_fields

from ltau_md.core.errorlog import dataset_fingerprint
from ltau_md.core.exceptions import DataError
from ltau_md.core.files import atomic_path
from ltau_md.core.structures import reference_forces

#: per-frame field added to training batches in ``mode="train"``: index of the frame in the
#: training dataset (a long graph field, so nequip batches it like ``total_energy``)
FRAME_INDEX_KEY = "ltau_frame_index"
register_fields(graph_fields=[FRAME_INDEX_KEY], long_fields=[FRAME_INDEX_KEY])



@dataclass
class TrainingSetInfo:
    """Atoms of a training set in logged order: species (N,), frame_offsets (F+1,),
    positions (N, 3) A, forces (N, 3) eV/A, and their fingerprint."""

    species: np.ndarray
    frame_offsets: np.ndarray
    positions: np.ndarray
    forces: np.ndarray

    @property
    def n_atoms(self) -> int:
        return int(self.species.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.frame_offsets.shape[0] - 1)

    @property
    def ref_force_norm(self) -> np.ndarray:
        return np.linalg.norm(self.forces, axis=1)

    @property
    def fingerprint(self) -> str:
        return dataset_fingerprint(self.species, self.frame_offsets, self.positions, self.forces)


class IndexedDataset(torch.utils.data.Dataset):
    """Wraps a nequip dataset and adds ``FRAME_INDEX_KEY`` (the frame's index in the wrapped
    dataset) to every frame it returns. Other attributes are forwarded to the wrapped dataset."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    @staticmethod
    def _tag(data: AtomicDataDict.Type, index: int) -> AtomicDataDict.Type:
        data = dict(data)
        data[FRAME_INDEX_KEY] = torch.tensor([int(index)], dtype=torch.long)
        return data

    def __getitem__(self, index: int) -> AtomicDataDict.Type:
        return self._tag(self.dataset[int(index)], int(index))

    def __getitems__(self, indices: Sequence[int]) -> list[AtomicDataDict.Type]:
        indices = [int(i) for i in indices]
        if hasattr(self.dataset, "__getitems__"):
            frames = self.dataset.__getitems__(indices)
        else:
            frames = [self.dataset[i] for i in indices]
        return [self._tag(d, i) for d, i in zip(frames, indices, strict=True)]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def unwrap(dataset: Any) -> Any:
    """The dataset inside any number of :class:`IndexedDataset` wrappers."""
    while isinstance(dataset, IndexedDataset):
        dataset = dataset.dataset
    return dataset


def type_names_to_numbers(type_names: Sequence[str]) -> np.ndarray:
    """Atomic numbers of model type names that are element symbols (else DataError)."""
    from ase.data import atomic_numbers

    bad = [t for t in type_names if t not in atomic_numbers]
    if bad:
        raise DataError(
            f"the training data have no atomic numbers and the model type names {bad} are not "
            "element symbols, so the logged species cannot be determined"
        )
    return np.array([atomic_numbers[t] for t in type_names], dtype=np.int64)


def _frame_arrays(data: AtomicDataDict.Type, index: int,
                  type_numbers: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = data[AtomicDataDict.POSITIONS_KEY].detach().cpu().numpy().astype(np.float64)
    if AtomicDataDict.FORCE_KEY not in data:
        raise DataError(
            f"training frame {index} has no reference '{AtomicDataDict.FORCE_KEY}' field: LTAU "
            "logs per-atom force errors, so every training frame needs forces (check the "
            "dataset's key_mapping / include_keys)"
        )
    forces = data[AtomicDataDict.FORCE_KEY].detach().cpu().numpy().astype(np.float64)
    if AtomicDataDict.ATOMIC_NUMBERS_KEY in data:
        z = data[AtomicDataDict.ATOMIC_NUMBERS_KEY].detach().cpu().numpy().reshape(-1)
    elif AtomicDataDict.ATOM_TYPE_KEY in data and type_numbers is not None:
        z = type_numbers[data[AtomicDataDict.ATOM_TYPE_KEY].detach().cpu().numpy().reshape(-1)]
    else:
        raise DataError(f"training frame {index} has neither atomic numbers nor atom types")
    if forces.shape != pos.shape:
        raise DataError(f"training frame {index}: forces have shape {forces.shape}, "
                        f"positions {pos.shape}")
    if not np.all(np.isfinite(forces)):
        raise DataError(f"training frame {index} has NaN/inf in '{AtomicDataDict.FORCE_KEY}'")
    return z.astype(np.int64), pos, forces


def frame_numbers(data: AtomicDataDict.Type, type_names: Sequence[str] | None = None
                  ) -> np.ndarray:
    """Atomic numbers of one frame (from ``atomic_numbers``, else atom types + type names)."""
    if AtomicDataDict.ATOMIC_NUMBERS_KEY in data:
        return data[AtomicDataDict.ATOMIC_NUMBERS_KEY].detach().cpu().numpy().reshape(-1)
    if AtomicDataDict.ATOM_TYPE_KEY in data and type_names:
        types = data[AtomicDataDict.ATOM_TYPE_KEY].detach().cpu().numpy().reshape(-1)
        return type_names_to_numbers(type_names)[types]
    raise DataError("frame has neither atomic numbers nor atom types with known type names")


def frames_info(frames: Iterable[AtomicDataDict.Type],
                type_names: Sequence[str] | None = None) -> TrainingSetInfo:
    """TrainingSetInfo of nequip frames (AtomicDataDicts, unbatched) in the given order.

    ``type_names`` maps atom types to elements when frames lack atomic numbers."""
    tn = None
    zs, ps, fs, sizes = [], [], [], []
    for i, data in enumerate(frames):
        if tn is None and AtomicDataDict.ATOMIC_NUMBERS_KEY not in data and type_names:
            tn = type_names_to_numbers(type_names)
        z, p, f = _frame_arrays(data, i, tn)
        zs.append(z)
        ps.append(p)
        fs.append(f)
        sizes.append(len(z))
    if not sizes:
        raise DataError("the training dataset is empty")
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return TrainingSetInfo(np.concatenate(zs), offsets, np.concatenate(ps), np.concatenate(fs))


def atoms_info(atoms_list: Sequence[Atoms]) -> TrainingSetInfo:
    """TrainingSetInfo of ASE structures (same order convention as :func:`frames_info`)."""
    if len(atoms_list) == 0:
        raise DataError("no structures given")
    species = np.concatenate([a.numbers for a in atoms_list]).astype(np.int64)
    sizes = [len(a) for a in atoms_list]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    pos = np.concatenate([a.positions for a in atoms_list]).astype(np.float64)
    forces = np.concatenate([reference_forces(a, i, "the dataset fingerprint")
                             for i, a in enumerate(atoms_list)])
    return TrainingSetInfo(species, offsets, pos, forces)


def frame_to_atoms(data: AtomicDataDict.Type, z: np.ndarray) -> Atoms:
    """ASE Atoms (with a SinglePointCalculator holding the reference labels) of one frame."""
    pos = data[AtomicDataDict.POSITIONS_KEY].detach().cpu().numpy().astype(np.float64)
    cell = None
    pbc = False
    if AtomicDataDict.CELL_KEY in data:
        cell = data[AtomicDataDict.CELL_KEY].detach().cpu().numpy().reshape(3, 3)
    if AtomicDataDict.PBC_KEY in data:
        pbc = data[AtomicDataDict.PBC_KEY].detach().cpu().numpy().reshape(3)
    atoms = Atoms(numbers=z, positions=pos, cell=cell, pbc=pbc)
    results: dict[str, Any] = {}
    if AtomicDataDict.FORCE_KEY in data:
        results["forces"] = data[AtomicDataDict.FORCE_KEY].detach().cpu().numpy().astype(
            np.float64)
    if AtomicDataDict.TOTAL_ENERGY_KEY in data:
        results["energy"] = float(data[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1)[0])
    if AtomicDataDict.STRESS_KEY in data and data[AtomicDataDict.STRESS_KEY].numel() == 9:
        from ase.stress import full_3x3_to_voigt_6_stress

        s = data[AtomicDataDict.STRESS_KEY].detach().cpu().numpy().reshape(3, 3)
        results["stress"] = full_3x3_to_voigt_6_stress(s)
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def write_frames(path: str | os.PathLike, frames: Iterable[Atoms]) -> Path:
    """Write structures to an ASE trajectory atomically (float64, lossless)."""
    from ase.io.trajectory import Trajectory

    path = Path(path)
    with atomic_path(path, suffix=".traj") as tmp:
        with Trajectory(str(tmp), "w") as traj:
            for atoms in frames:
                traj.write(atoms)
    return path


