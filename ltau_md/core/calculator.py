"""ASE calculator: energy, forces, stress and per-atom LTAU uncertainty from one forward pass."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ltau_md.core.estimator import LTAUEstimator, TrajectoryNeighbors
from ltau_md.core.metrics import stat_key
from ltau_md.core.model import MODEL_SIGNALS, FeatureModel, check_species
from ltau_md.core.signals import SIGNAL_CLASSES
from ltau_md.core.structures import free_atoms
from ltau_md.core.validation import check_is_fitted, overlapping_atoms

__all__ = [
    "FRAME_STATISTICS",
    "FRAME_STAT_KEYS",
    "LTAUCalculator",
    "LTAU_ONLY_KEYS",
    "MODEL_SIGNAL_KEYS",
    "PER_ATOM_KEYS",
    "RESULT_KEYS",
    "SIGNAL_KEYS",
]

#: per-atom result keys (also written as extxyz per-atom arrays by the observers)
PER_ATOM_KEYS = ("uncertainty", "confidence", "predicted_error", "novelty", "novelty_pvalue")

#: per-atom results that need the logged training errors: absent for an estimator fitted
#: without an error log (``estimator.has_error_log`` False)
LTAU_ONLY_KEYS = ("uncertainty", "confidence", "predicted_error")

#: every key :class:`LTAUCalculator` writes to ``results`` (its ``implemented_properties``):
#: ``stress`` only for periodic cells, ``nonfinite_cause`` only when ``finite`` is False,
#: ``neighbor_distance`` (per-atom latent distance to the nearest training atom) only when True
#: structure statistics in ``results``, named ``SIGNAL:STAT``
#: (:func:`~ltau_md.core.metrics.stat_key`, the names steps.jsonl and the alarm statistics
#: use), taken over the free atoms (:func:`~ltau_md.core.structures.free_atoms`; all atoms
#: when every atom is fixed)
FRAME_STATISTICS = (("uncertainty", "max"), ("uncertainty", "mean"), ("predicted_error", "max"),
                    ("novelty", "max"))
FRAME_STAT_KEYS = tuple(stat_key(signal, on) for signal, on in FRAME_STATISTICS)
#: per-atom latent-signal keys (:mod:`ltau_md.core.signals`) and their maxima over the free
#: atoms, returned for the signals asked for with ``LTAUCalculator(signals=...)``
SIGNAL_KEYS = tuple(k for n in SIGNAL_CLASSES for k in (n, stat_key(n, "max")))
#: per-atom signals the model computes itself (:data:`~ltau_md.core.model.MODEL_SIGNALS`, eV/A;
#: e.g. a shallow ensemble's head spread) and their maxima over the free atoms, returned
#: whenever the model gives them
MODEL_SIGNAL_KEYS = tuple(k for n in MODEL_SIGNALS for k in (n, stat_key(n, "max")))
RESULT_KEYS = (
    "energy", "free_energy", "forces", "stress", *PER_ATOM_KEYS, *FRAME_STAT_KEYS,
    "finite", "nonfinite_cause", "neighbor_distance", *SIGNAL_KEYS, *MODEL_SIGNAL_KEYS,
)


class LTAUCalculator(Calculator):
    """Wrap a :class:`~ltau_md.core.model.FeatureModel` and a fitted :class:`LTAUEstimator`.

    Results: ``energy``/``free_energy`` (eV), ``forces`` (eV/A), ``stress`` (eV/A^3, periodic
    cells only), per-atom ``uncertainty`` (1 - p), ``confidence`` (p at tolerance atol*s),
    ``predicted_error`` (eV/A), ``novelty`` (latent distance to the training atoms relative to
    the in-domain scale of the element: about 1 or less in domain) and ``novelty_pvalue`` (its
    in-domain p-value; see :class:`~ltau_md.core.estimator.Prediction`), structure
    statistics over the free atoms ``uncertainty:max``, ``uncertainty:mean``,
    ``predicted_error:max`` (eV/A), ``novelty:max`` (:data:`FRAME_STAT_KEYS`), and ``finite``
    (False when the positions or the model's output hold NaN/inf: then forces are NaN, the
    uncertainty is 1 and the novelty infinite, so an observer can stop the run instead of it
    crashing). An estimator fitted without an error log (a model trained without the
    callback) gives no ``uncertainty``, ``confidence``, ``predicted_error`` nor their
    statistics (:data:`LTAU_ONLY_KEYS`; ``get_property`` raises for them); novelty and the
    latent signals are returned as usual.

    Scale of the tolerance (atol*s): ``s`` if given (an override, as ``predict(s=)``), else the
    estimator's :meth:`~ltau_md.core.estimator.LTAUEstimator.effective_s` for the structure's
    group: ``group`` if given, else ``atoms.info[key]`` where ``key`` is the ``group_key`` the
    calibration was fitted with (e.g. "config_type", as in extxyz files), so a structure of a
    calibrated group gets that group's s and any other structure the global calibrated s.
    A change of the group alone (same positions) triggers a new calculation.

    ``signals`` names latent signals fitted on the estimator (``estimator.signals_``, e.g.
    ``("gmm", "doptimality")``; None = all of them, ``()`` = none): each adds its per-atom
    score under its name and the maximum over the free atoms as ``NAME:max``
    (:data:`SIGNAL_KEYS`), from the same features; inf for a non-finite structure. A model
    that computes uncertainty signals itself (``ModelOutput.signals``, e.g. the NequIP heads
    of :mod:`ltau_md.integrations.nequip.heads`) adds them the same way
    (:data:`MODEL_SIGNAL_KEYS`).

    ``warm_start`` reuses the previous step's neighbours (see
    :class:`~ltau_md.core.estimator.TrajectoryNeighbors`), which suits relaxations and MD; it falls
    back to a cold search when any atom moved more than ``jump`` A since the last call or the
    atoms changed (a new structure), and after :meth:`reset` or :meth:`reset_trajectory`.
    """

    implemented_properties = list(RESULT_KEYS)

    def __init__(self, model: FeatureModel, estimator: LTAUEstimator, *, s: float | None = None,
                 group: str | None = None, warm_start: bool = True, jump: float = 0.5,
                 signals: tuple[str, ...] | None = None, **kwargs):
        super().__init__(**kwargs)
        check_is_fitted(estimator)
        self.signals = estimator.check_signals(signals)  # refused here, before any step
        self.model = model
        self.estimator = estimator
        self.s = s
        self.group = group
        self._neighbors = TrajectoryNeighbors(estimator) if warm_start else None
        self._checked_numbers: np.ndarray | None = None
        self._last_positions: np.ndarray | None = None
        self.jump = jump
        #: names of the signals the model returned at the last finite step
        self._model_signals: tuple[str, ...] = ()

    def reset(self) -> None:
        """Start a new structure: clear the results and stored atoms (ASE's
        :meth:`~ase.calculators.calculator.Calculator.reset`) and the warm-start state, so the
        next calculation does a cold neighbour search (as after :meth:`reset_trajectory`)."""
        super().reset()
        # ASE may call reset() from Calculator.__init__, before our attributes exist
        if hasattr(self, "_neighbors"):
            self._checked_numbers = None
            self.reset_trajectory()

    def reset_trajectory(self) -> None:
        """Start the next calculation with a cold neighbour search (a new trajectory)."""
        self._last_positions = None
        if self._neighbors is not None:
            self._neighbors.reset()

    def group_of(self, atoms: Atoms) -> str | None:
        """The calibration group of ``atoms``: ``group`` if set, else
        ``atoms.info[calibration_.group_key]`` if present, else None (global scale)."""
        if self.group is not None:
            return self.group
        cal = self.estimator.calibration_
        if cal is None or cal.group_key is None or cal.group_key not in atoms.info:
            return None
        return str(atoms.info[cal.group_key])

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's changes since the last calculation, plus "info" when the group changed."""
        changes = super().check_state(atoms, tol)
        if (not changes and self.atoms is not None
                and self.group_of(atoms) != self.group_of(self.atoms)):
            changes.append("info")
        return changes

    def check_atoms(self, atoms: Atoms) -> None:
        """Raise SpeciesError if an element is unknown to the model or the estimator."""
        check_species(atoms.numbers, self.model.species,
                      getattr(self.model, "description", "the model"))
        self.estimator.check_species(atoms.numbers)

    def calculate(self, atoms: Atoms | None = None, properties=("energy",),
                  system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if self._checked_numbers is None or not np.array_equal(self._checked_numbers,
                                                               atoms.numbers):
            self.check_atoms(atoms)
            self._checked_numbers = atoms.numbers.copy()
            if self._neighbors is not None:
                self._neighbors.reset()
        n = len(atoms)
        periodic = bool(atoms.pbc.all())
        finite = bool(np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all())
        if finite:
            out = self.model.evaluate(atoms, stress=periodic)
            finite = bool(np.isfinite(out.energy) and np.isfinite(out.forces).all()
                          and np.isfinite(out.features).all())
        if not finite:
            nan = float("nan")
            pair = overlapping_atoms(atoms)
            self.results = {
                "energy": nan, "free_energy": nan, "forces": np.full((n, 3), nan),
                "uncertainty": np.ones(n), "confidence": np.zeros(n),
                "predicted_error": np.full(n, np.inf), "novelty": np.full(n, np.inf),
                "novelty_pvalue": np.zeros(n), "uncertainty:max": 1.0, "uncertainty:mean": 1.0,
                "predicted_error:max": float("inf"), "novelty:max": float("inf"),
                "finite": False, "nonfinite_cause": (
                    f"atoms {pair[0]} and {pair[1]} are {pair[2]:.3g} A apart (overlapping)"
                    if pair is not None else "non-finite positions or cell"
                    if not np.isfinite(atoms.positions).all() else "non-finite model output"),
            }
            for name in (*self.signals, *self._model_signals):
                self.results[name] = np.full(n, np.inf)
                self.results[stat_key(name, "max")] = float("inf")
            if periodic:
                self.results["stress"] = np.full(6, nan)
            if self._neighbors is not None:
                self._neighbors.reset()
            return
        if self._neighbors is not None:
            if (self._last_positions is None or self._last_positions.shape != atoms.positions.shape
                    or np.abs(atoms.positions - self._last_positions).max() > self.jump):
                self._neighbors.reset()  # a new structure, not the next step of a trajectory
            self._last_positions = atoms.positions.copy()
            pred = self._neighbors.predict(out.features, s=self.s, group=self.group_of(atoms),
                                           species=atoms.numbers)
        else:
            pred = self.estimator.predict(out.features, s=self.s, group=self.group_of(atoms),
                                          species=atoms.numbers)
        unc = pred.uncertainty.astype(np.float64)
        self.results = {
            "energy": float(out.energy), "free_energy": float(out.energy),
            "forces": np.asarray(out.forces, dtype=np.float64),
            "uncertainty": unc, "confidence": pred.confidence.astype(np.float64),
            "predicted_error": pred.predicted_error.astype(np.float64),
            "novelty": pred.novelty.astype(np.float64),
            "novelty_pvalue": pred.novelty_pvalue.astype(np.float64),
            "finite": True,
            "neighbor_distance": pred.distances[:, 0].astype(np.float64),
        }
        if not self.estimator.has_error_log:  # no LTAU confidence: leave its keys out
            for key in LTAU_ONLY_KEYS:
                self.results.pop(key, None)
        for name, v in self.estimator.signal_values(out.features, atoms.numbers,
                                                    self.signals).items():
            self.results[name] = v
        self._model_signals = tuple(getattr(out, "signals", None) or ())
        for name in self._model_signals:
            self.results[name] = np.asarray(out.signals[name], dtype=np.float64)
        self._frame_statistics(atoms)
        if periodic and out.stress is not None:
            self.results["stress"] = np.asarray(out.stress, dtype=np.float64)

    def _frame_statistics(self, atoms: Atoms) -> None:
        """The :data:`FRAME_STAT_KEYS` of the per-atom results (finite here) over the free
        atoms; the same values :func:`~ltau_md.core.metrics.frame_statistic` gives, without
        its input checks, which cost more than the statistics on small structures."""
        free = free_atoms(atoms) if atoms.constraints else None
        sel = None if free is None or not free.any() or free.all() else free
        stats = [*zip(FRAME_STATISTICS, FRAME_STAT_KEYS, strict=True),
                 *(((n, "max"), stat_key(n, "max"))
                   for n in (*self.signals, *self._model_signals))]
        for (signal, on), key in stats:
            if signal not in self.results:
                continue
            v = self.results[signal] if sel is None else self.results[signal][sel]
            self.results[key] = float(v.max() if on == "max" else v.mean())
