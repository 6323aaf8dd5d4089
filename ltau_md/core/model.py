"""The model side of ltau-md: anything that yields energy, forces and per-atom features.

The core (estimator, calculator, observers) only talks to a :class:`FeatureModel`; the NequIP
implementation lives in :mod:`ltau_md.integrations.nequip`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from ase import Atoms

from ltau_md.core.exceptions import SpeciesError

__all__ = [
    "BATCH_MAX_ATOMS",
    "DEFAULT_BATCH_SIZE",
    "FeatureModel",
    "MODEL_SIGNALS",
    "ModelOutput",
    "check_species",
    "evaluate_structures",
    "frame_batches",
    "structure_offsets",
]

#: at most this many structures per model forward pass wherever ltau-md batches structures
DEFAULT_BATCH_SIZE = 16
#: ... and at most this many atoms (a structure of more atoms is a batch of its own): batching
#: small molecules pays (15-atom clusters: 3x the atoms per CPU-second at 16 per batch) while
#: batches of large cells are slower per atom than one cell at a time (108-atom Cu cells:
#: best at 2-4 per batch, 2x slower at 16); benchmarks/bench_descriptors.py, 1 thread
BATCH_MAX_ATOMS = 256


def frame_batches(frames: Sequence[Atoms], batch_size: int = DEFAULT_BATCH_SIZE,
                  max_atoms: int = BATCH_MAX_ATOMS) -> Iterator[slice]:
    """Consecutive slices of ``frames``, each of at most ``batch_size`` structures and
    ``max_atoms`` atoms (at least one structure)."""
    b = max(int(batch_size), 1)
    start, atoms = 0, 0
    for i, a in enumerate(frames):
        if i > start and (i - start >= b or atoms + len(a) > max_atoms):
            yield slice(start, i)
            start, atoms = i, 0
        atoms += len(a)
    if start < len(frames):
        yield slice(start, len(frames))


#: per-atom uncertainty signals a model may compute itself (:attr:`ModelOutput.signals`), by
#: result name -> what reports call them; each the square root of a predicted force variance
#: summed over x, y, z (eV/A), higher = less trusted (the NequIP heads of
#: :mod:`ltau_md.integrations.nequip.heads`)
MODEL_SIGNALS = {
    "shallow_ensemble": "shallow-ensemble force std (eV/Å)",
    "mve": "mean-variance force std (eV/Å)",
    "evidential": "evidential force std, epistemic (eV/Å)",
}


@dataclass
class ModelOutput:
    """One forward pass: energy (eV), forces (n, 3) eV/A, stress (6,) eV/A^3 in Voigt order
    or None, per-atom latent features (n, D) float32, and the per-atom uncertainty signals
    the model computes itself, if any (name in :data:`MODEL_SIGNALS` -> (n,) eV/A)."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    features: np.ndarray
    signals: dict[str, np.ndarray] = field(default_factory=dict)


@runtime_checkable
class FeatureModel(Protocol):
    """A force model that also returns per-atom descriptors from the same forward pass.

    An optional ``description`` attribute (str) names the model in errors (default
    "the model"), e.g. with the element-to-type map it is used through."""

    species: list[int]
    """Atomic numbers the model knows."""

    def evaluate(self, atoms: Atoms, stress: bool = False) -> ModelOutput:
        """Energy, forces, optional stress and per-atom features of ``atoms``."""
        ...


def check_species(numbers: Sequence[int] | np.ndarray, known: Sequence[int],
                  where: str = "the model") -> None:
    """Raise SpeciesError naming the atomic numbers in ``numbers`` absent from ``known``."""
    from ase.data import chemical_symbols

    unknown = sorted(set(int(z) for z in np.unique(numbers)) - set(int(k) for k in known))
    if unknown:
        names = ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z)
                          for z in unknown)
        known_s = ", ".join(chemical_symbols[int(z)] for z in sorted(known))
        raise SpeciesError(f"element(s) {names} not known to {where} ({known_s})")


def evaluate_structures(model: FeatureModel, frames: Sequence[Atoms],
                        batch_size: int = DEFAULT_BATCH_SIZE) -> list[ModelOutput]:
    """``model``'s outputs of every structure, in batches (:func:`frame_batches`) through
    ``evaluate_many`` where the model has it (NequIP), else one ``evaluate`` per structure."""
    many = getattr(model, "evaluate_many", None)
    outs: list[ModelOutput] = []
    for sl in frame_batches(frames, batch_size):
        part = list(frames[sl])
        outs.extend(many(part) if many is not None else [model.evaluate(a) for a in part])
    return outs


def structure_offsets(frames: Sequence[Atoms]) -> np.ndarray:
    """(F+1,) int64 frame offsets of ``frames``: the first atom of each, then the total."""
    return np.concatenate([[0], np.cumsum([len(a) for a in frames])]).astype(np.int64)
