"""Baselines LTAU is compared with, each one call, through the same API as LTAU itself.

* :class:`EnsembleCalculator` - the force spread of M models as an ASE calculator: energy and
  forces of member 0 (the deployed model), per-atom ``force_std`` (eV/A) and its structure
  aggregates, so :class:`~ltau_md.core.observers.UQMonitor` and
  ``Threshold(signal="force_std")`` watch it as they watch LTAU; with an ``estimator`` it
  also returns the LTAU results of member 0 (one run, both signals).
* :func:`force_std` - the same spread from arrays: sqrt of the per-component variance over
  members, summed over x, y, z.
* :func:`element_error` - the element-only baseline: each atom's signal is the training force
  MAE of its element (eV/A), which knows the chemistry but nothing about the geometry.
* :func:`latent_distance` - mean distance to the k nearest training atoms in descriptor space
  (``Prediction.distances.mean(1)``), LTAU's neighbour search without the error trajectories.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ltau_md.core.calculator import RESULT_KEYS as LTAU_KEYS
from ltau_md.core.calculator import LTAUCalculator
from ltau_md.core.estimator import NO_ERROR_LOG
from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.metrics import frame_statistic, stat_key
from ltau_md.core.model import FeatureModel, check_species
from ltau_md.core.structures import free_atoms
from ltau_md.core.validation import check_is_fitted

if TYPE_CHECKING:
    from ltau_md.core.estimator import LTAUEstimator, Prediction

__all__ = ["ENSEMBLE_KEYS", "EnsembleCalculator", "element_error", "force_std",
           "latent_distance"]

#: results of :class:`EnsembleCalculator` beyond those of LTAUCalculator (its RESULT_KEYS)
#: (``force_std:max``/``force_std:mean`` over the free atoms, as the calculator's statistics)
ENSEMBLE_KEYS = ("force_std", stat_key("force_std", "max"), stat_key("force_std", "mean"),
                 "energy_std")


def force_std(forces: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Per-atom ensemble force spread in eV/A: sqrt(sum over x, y, z of the variance over
    members) of ``forces`` (M, n, 3) (population variance, ddof 0). M >= 2."""
    f = np.asarray(forces, dtype=np.float64)
    if f.ndim != 3 or f.shape[2] != 3:
        raise DataError(f"member forces must be (M, n_atoms, 3), got shape {f.shape}")
    if f.shape[0] < 2:
        raise DataError(f"an ensemble spread needs at least 2 members, got {f.shape[0]}")
    return np.sqrt(f.var(axis=0).sum(axis=1))


def element_error(estimator: LTAUEstimator, numbers: Sequence[int] | np.ndarray) -> np.ndarray:
    """Element-only baseline (n,) in eV/A: the training force MAE of each atom's element.

    The MAE of an element is the mean over its training atoms of their mean logged force
    error (``estimator.train_error_``, the quantity LTAU's predicted error averages over the
    k neighbours; the logged epoch window and all members), grouped by
    ``estimator.train_species_``. Elements absent from training raise SpeciesError; an
    estimator without an error log raises DataError."""
    check_is_fitted(estimator)
    z = np.asarray(numbers)
    if z.ndim != 1:
        raise DataError(f"numbers must be 1-D (one atomic number per atom), got {z.shape}")
    estimator.check_species(z)
    if not estimator.has_error_log:
        raise DataError(NO_ERROR_LOG)
    species = np.asarray(estimator.train_species_)
    err = np.asarray(estimator.train_error_, dtype=np.float64)
    mae = {int(e): float(err[species == e].mean()) for e in np.unique(species)}
    return np.array([mae[int(e)] for e in z], dtype=np.float64)


def latent_distance(prediction: Prediction) -> np.ndarray:
    """Mean distance (descriptor units) of each query atom to its k nearest training atoms,
    from a :class:`~ltau_md.core.estimator.Prediction` (n,)."""
    return np.asarray(prediction.distances, dtype=np.float64).mean(axis=1)


class EnsembleCalculator(Calculator):
    """M force models as one ASE calculator: the deployed model (``models[0]``) moves the
    atoms, the spread of all members is the uncertainty.

    Results: ``energy``/``free_energy`` (eV), ``forces`` (eV/A) and ``stress`` (eV/A^3,
    3D-periodic cells) of member 0; per-atom ``force_std`` (eV/A, :func:`force_std` over
    all M members); ``force_std:max``, ``force_std:mean`` (eV/A, over the free atoms) and
    ``energy_std`` (eV, spread of the members' energies); ``finite``. With ``estimator``
    (fitted for member 0's descriptors) also every LTAU result of
    :class:`~ltau_md.core.calculator.LTAUCalculator` (``uncertainty``, ``novelty``, ...), from
    member 0's same forward pass. Non-finite positions or output: forces NaN, ``force_std`` inf,
    ``finite`` False (the monitor stops).

    ``ltau_kwargs`` go to the internal LTAUCalculator (``s``, ``group``, ``warm_start``...).
    """

    #: the LTAU calculator's keys (energy/forces/stress, finite, the LTAU results) + ENSEMBLE_KEYS
    implemented_properties = [*LTAU_KEYS, *(k for k in ENSEMBLE_KEYS if k not in LTAU_KEYS)]

    def __init__(self, models: Sequence[FeatureModel], estimator: LTAUEstimator | None = None,
                 *, ltau_kwargs: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.models = list(models)
        if len(self.models) < 2:
            raise InvalidParameterError(
                f"an ensemble needs at least 2 models, got {len(self.models)}")
        self.estimator = estimator
        self._ltau = None
        if estimator is not None:
            self._ltau = LTAUCalculator(self.models[0], estimator, **(ltau_kwargs or {}))

    @property
    def n_members(self) -> int:
        return len(self.models)

    def reset(self) -> None:
        super().reset()
        if self._ltau is not None:
            self._ltau.reset()  # also clears its warm-started neighbour search

    def check_atoms(self, atoms: Atoms) -> None:
        """Raise SpeciesError if an element is unknown to a member (or the estimator)."""
        for i, m in enumerate(self.models):
            check_species(atoms.numbers, m.species, f"ensemble member {i}")
        if self.estimator is not None:
            self.estimator.check_species(atoms.numbers)

    def calculate(self, atoms: Atoms | None = None, properties=("energy",),
                  system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self.check_atoms(atoms)
        n = len(atoms)
        periodic = bool(atoms.pbc.all())
        res: dict = {}
        if self._ltau is not None:
            self._ltau.calculate(atoms, list(self._ltau.implemented_properties), all_changes)
            res = dict(self._ltau.results)
            finite = bool(res.get("finite", True))
            first = (float(res["energy"]), np.asarray(res["forces"], dtype=np.float64))
        else:
            finite = bool(np.isfinite(atoms.positions).all()
                          and np.isfinite(atoms.cell.array).all())
            first = None
            if finite:
                out = self.models[0].evaluate(atoms, stress=periodic)
                first = (float(out.energy), np.asarray(out.forces, dtype=np.float64))
                res = {"energy": first[0], "free_energy": first[0], "forces": first[1]}
                if periodic and out.stress is not None:
                    res["stress"] = np.asarray(out.stress, dtype=np.float64)
        energies, forces = [], []
        if finite and first is not None:
            energies, forces = [first[0]], [first[1]]
            for m in self.models[1:]:
                o = m.evaluate(atoms)
                energies.append(float(o.energy))
                forces.append(np.asarray(o.forces, dtype=np.float64))
            finite = bool(np.isfinite(energies).all() and np.isfinite(np.stack(forces)).all())
        if not finite:
            nan = float("nan")
            res.update({"energy": nan, "free_energy": nan, "forces": np.full((n, 3), nan),
                        "force_std": np.full(n, np.inf), ENSEMBLE_KEYS[1]: float("inf"),
                        ENSEMBLE_KEYS[2]: float("inf"), "energy_std": float("inf"),
                        "finite": False})
            if periodic:
                res["stress"] = np.full(6, nan)
            self.results = res
            return
        std = force_std(forces)
        free = free_atoms(atoms)
        mask = free if free.any() else None
        res.update({"force_std": std, ENSEMBLE_KEYS[1]: frame_statistic(std, "max", mask),
                    ENSEMBLE_KEYS[2]: frame_statistic(std, "mean", mask),
                    "energy_std": float(np.std(energies)), "finite": True})
        self.results = res
