"""The model side of ltau-md: anything that yields energy, forces and per-atom features.

The core (estimator, calculator, observers) only talks to a :class:`FeatureModel`; the NequIP
implementation lives in :mod:`ltau_md.nequip`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from ase import Atoms


@dataclass
class ModelOutput:
    """One forward pass: energy (eV), forces (n, 3) eV/A, stress (6,) eV/A^3 in Voigt order
    or None, and per-atom latent features (n, D) float32."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    features: np.ndarray


@runtime_checkable
class FeatureModel(Protocol):
    """A force model that also returns per-atom descriptors from the same forward pass."""

    species: list[int]
    """Atomic numbers the model knows."""

    def evaluate(self, atoms: Atoms, stress: bool = False) -> ModelOutput:
        """Energy, forces, optional stress and per-atom features of ``atoms``."""
        ...
