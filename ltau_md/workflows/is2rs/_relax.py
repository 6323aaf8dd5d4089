"""One IS2RS system: the model relaxation, its per-step uncertainty and reference targets."""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.optimize.optimize import Optimizer

from ltau_md.core._param_validation import Interval, StrOptions, validate_params
from ltau_md.core.observers import UQMonitor
from ltau_md.workflows.is2rs._results import (
    FERR,
    FERR_ADS,
    NOVELTY,
    NOVELTY_ADS,
    PERR,
    RESULT_VERSION,
    STAT_NAMES,
    UQ,
    UQ_ADS,
    UQ_ATOM_MEAN,
    series_key,
)
from ltau_md.workflows.is2rs.data import System
from ltau_md.workflows.is2rs.metrics import (
    ADSORBATE_TAG,
    classify_basin,
    free_atom_distances,
    free_mask,
    symmetric_free_atom_distances,
)
from ltau_md.workflows.is2rs.reference import (
    DEFAULT_REFERENCE,
    cached_reference,
    check_reference,
    reference_energy_forces,
)
from ltau_md.workflows.simulate import DEFAULT_FMAX
from ltau_md.workflows.simulate import OPTIMIZERS as _OPTIMIZERS

__all__ = ["RelaxSettings", "STAT_NAMES", "relax_system", "series_key", "series_stats"]

_WATCHED: tuple[str, ...] = (UQ_ADS, NOVELTY, NOVELTY_ADS)
"""The per-step statistics the :class:`UQMonitor` watches beside its own: max uncertainty and
max novelty over the adsorbate atoms, and max novelty over all atoms (every OC20 tag: the
monitor's default selection is the free atoms)."""


@dataclass(frozen=True)
class RelaxSettings:
    """Model relaxation settings: force threshold ``fmax`` (eV/A), step limit, ASE optimizer;
    and the reference calculator that scores the model end point.

    ``reference``: import path of the reference calculator (default EMT; None skips every
    reference-based target). ``ref_fmax`` (eV/A) and ``ref_steps``: the reference BFGS
    re-relaxation of the model end point. ``trajectory_errors``: evaluate the reference
    forces along the model trajectory (the true force error), at every ``error_stride``-th
    step and at the last (one reference call per evaluated step). ``basin_tol`` (A) and
    ``energy_tol`` (eV): same-minimum tolerances.

    Attributes
    ----------
    fmax
        Force threshold of the model relaxation (eV/A).
    steps
        Step limit of the model relaxation.
    optimizer
        ASE optimizer name (one of :data:`ltau_md.workflows.simulate.OPTIMIZERS`).
    reference
        Import path of the reference calculator; None skips every reference-based target.
    ref_fmax
        Force threshold of the reference re-relaxation of the model end point (eV/A).
    ref_steps
        Step limit of that re-relaxation.
    trajectory_errors
        Evaluate the reference forces along the model trajectory.
    error_stride
        Evaluate them at steps 0, k, 2k, ... and at the last step (k = ``error_stride``; 1:
        every step). A costly reference (a universal potential) with k > 1 keeps the initial
        and final errors exact; the maximum and mean are then over the evaluated steps.
    basin_tol
        Same-minimum distance tolerance (A).
    energy_tol
        Same-minimum energy tolerance (eV).
    """

    fmax: float = DEFAULT_FMAX
    steps: int = 300
    optimizer: str = "BFGS"
    reference: str | None = DEFAULT_REFERENCE
    ref_fmax: float = DEFAULT_FMAX
    ref_steps: int = 500
    trajectory_errors: bool = True
    error_stride: int = 1
    basin_tol: float = 0.25
    energy_tol: float = 0.02

    # checked by validate_params (no annotation: a class attribute, not a dataclass field)
    _parameter_constraints = {
        "fmax": [Interval(Real, 0, None, closed="neither")],
        "steps": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [StrOptions(_OPTIMIZERS)],
        "reference": [str, None],
        "ref_fmax": [Interval(Real, 0, None, closed="neither")],
        "ref_steps": [Interval(Integral, 1, None, closed="left")],
        "trajectory_errors": ["boolean"],
        "error_stride": [Interval(Integral, 1, None, closed="left")],
        "basin_tol": [Interval(Real, 0, None, closed="neither")],
        "energy_tol": [Interval(Real, 0, None, closed="neither")],
    }

    def __post_init__(self) -> None:
        validate_params(self._parameter_constraints, asdict(self), owner="RelaxSettings")
        if self.reference is not None:
            check_reference(self.reference)


def _col(monitor: UQMonitor, key: str) -> list[float]:
    """One per-step column of the monitor's records (None -> NaN).

    Parameters
    ----------
    monitor
        The monitor that observed the relaxation.
    key
        A field of its per-step records, e.g. ``"fmax"`` (eV/A).

    Returns
    -------
    list[float]
        One value per observed step.
    """
    return [math.nan if r[key] is None else float(r[key]) for r in monitor.records]


def series_stats(series: Sequence[float], frame_key: str) -> dict[str, float]:
    """The initial / final / max / mean of a per-step series of a frame statistic, named
    :func:`series_key` ``(frame_key, reduction)`` (NaN when it has no finite value; max and
    mean skip NaN steps).

    Parameters
    ----------
    series
        One value per step (in the unit of the signal).
    frame_key
        The frame statistic of the series, e.g. ``"uncertainty:max"``
        (:func:`~ltau_md.core.metrics.stat_key`).

    Returns
    -------
    dict[str, float]
        ``series_key(frame_key, name)`` for each name of :data:`STAT_NAMES`, e.g.
        ``"uncertainty:max/final"``.
    """
    s = np.asarray(series, dtype=float)
    if s.size == 0 or not np.isfinite(s).any():
        values = dict.fromkeys(STAT_NAMES, math.nan)
    else:
        values = {"initial": float(s[0]), "final": float(s[-1]),
                  "max": float(np.nanmax(s)), "mean": float(np.nanmean(s))}
    return {series_key(frame_key, k): values[k] for k in STAT_NAMES}


def _make_optimizer(name: str, atoms: Atoms) -> Optimizer:
    """The ASE optimizer ``name`` (e.g. ``"BFGS"``) on ``atoms``, without a log file."""
    from ase import optimize

    return getattr(optimize, name)(atoms, logfile=None)


class _StepObserver:
    """Per-step extra beside the UQMonitor: the true force error |F_ref - F_model| (eV/A)
    over free / adsorbate atoms with the reference calculator, at every ``stride``-th step
    (NaN at the other steps and without a reference; :meth:`finish` adds the last step).

    Parameters
    ----------
    atoms
        The relaxing atoms (their calculator is the model).
    free, ads
        Boolean masks (n_atoms,) of the free and the adsorbate atoms.
    reference
        The reference calculator, or None.
    stride
        Evaluate the reference at steps 0, stride, 2 stride, ...
    """

    def __init__(self, atoms: Atoms, free: np.ndarray, ads: np.ndarray,
                 reference: Calculator | None, stride: int = 1) -> None:
        self.atoms, self.free, self.ads, self.reference = atoms, free, ads, reference
        self.stride = stride
        self.cols: dict[str, list[float]] = {k: [] for k in (FERR, FERR_ADS)}
        self.abs_err_sum = 0.0
        self.abs_err_n = 0
        self.wall_s = 0.0

    def __call__(self) -> None:
        """Record this step's force errors (ASE calls this after each step)."""
        if len(self.cols[FERR]) % self.stride:
            self._skip()
        else:
            self._record()

    def finish(self) -> None:
        """Evaluate the last step if its stride skipped it (call after the run; the atoms and
        the model's results are those of the last step)."""
        if self.cols[FERR] and self.reference is not None and math.isnan(self.cols[FERR][-1]):
            for col in self.cols.values():
                col.pop()
            self._record()

    def _record(self) -> None:
        """The force errors at the current positions (NaN without a reference or without
        finite model forces)."""
        res = self.atoms.calc.results if self.atoms.calc is not None else {}
        if self.reference is None or "forces" not in res:
            self._skip()
            return
        f_model = np.asarray(res["forces"], dtype=float)
        if not (np.isfinite(f_model).all() and np.isfinite(self.atoms.positions).all()):
            self._skip()
            return
        t0 = time.perf_counter()
        _, f_ref = reference_energy_forces(self.reference, self.atoms)
        self.wall_s += time.perf_counter() - t0
        diff = f_ref - f_model
        err = np.linalg.norm(diff, axis=1)
        self.cols[FERR].append(float(err[self.free].max()))
        self.cols[FERR_ADS].append(float(err[self.ads].max()))
        self.abs_err_sum += float(np.abs(diff[self.free]).sum())
        self.abs_err_n += int(diff[self.free].size)

    def _skip(self) -> None:
        """A step without force errors: NaN."""
        for col in self.cols.values():
            col.append(math.nan)


def _reference_targets(system: System, end: Atoms, reference: Calculator,
                       settings: RelaxSettings) -> dict[str, Any]:
    """Targets of the model end point computed with the reference calculator (see
    :func:`relax_system`).

    Parameters
    ----------
    system
        The system (its ``relaxed`` structure is the given minimum).
    end
        The model end point, without a calculator.
    reference
        The reference calculator.
    settings
        ``ref_fmax`` (eV/A), ``ref_steps``, ``basin_tol`` (A) and ``energy_tol`` (eV).

    Returns
    -------
    dict[str, Any]
        ``ref_*``, ``rerelax_*``, ``basin``, ``reference_source``, ``energy_above_min``
        (eV) and the distances to the lowest minimum (A); NaN when ``end`` is not finite.
    """
    from ase.optimize import BFGS

    free = free_mask(end)
    nan_out: dict[str, Any] = {
        "ref_energy_at_end": math.nan, "ref_fmax_at_end": math.nan,
        "ref_energy_given": math.nan, "rerelax_energy": math.nan, "rerelax_steps": 0,
        "rerelax_converged": False, "basin": "blown_up", "reference_source": "given",
        "ref_energy_min": math.nan, "energy_above_min": math.nan,
        "rmsd_min": math.nan, "rmsd_min_sym": math.nan, "mean_distance_min_sym": math.nan,
        "ads_displacement_min_sym": math.nan,
    }
    if not np.isfinite(end.positions).all():
        return nan_out
    e_end, f_end = reference_energy_forces(reference, end)
    e_given, _ = reference_energy_forces(reference, system.relaxed)
    work = end.copy()
    work.calc = reference
    reference.reset()
    opt = BFGS(work, logfile=None)
    rr_conv = bool(opt.run(fmax=settings.ref_fmax, steps=settings.ref_steps))
    e_rr = float(work.get_potential_energy())
    work.calc = None
    basin = classify_basin(work, e_rr, system.relaxed, e_given,
                           dist_tol=settings.basin_tol, energy_tol=settings.energy_tol)
    use_rr = basin == "lower" and rr_conv
    best = work if use_rr else system.relaxed
    e_min = e_rr if use_rr else e_given
    d = free_atom_distances(end, best)
    d_sym = symmetric_free_atom_distances(end, best)
    ads_sel = end.get_tags()[free] == ADSORBATE_TAG
    return {
        "ref_energy_at_end": e_end,
        "ref_fmax_at_end": float(np.linalg.norm(f_end[free], axis=1).max()),
        "ref_energy_given": e_given,
        "rerelax_energy": e_rr,
        "rerelax_steps": int(opt.nsteps),
        "rerelax_converged": rr_conv,
        "basin": basin,
        "reference_source": "ml_rerelaxed" if use_rr else "given",
        "ref_energy_min": e_min,
        "energy_above_min": e_end - e_min,
        "rmsd_min": float(np.sqrt(np.mean(d**2))),
        "rmsd_min_sym": float(np.sqrt(np.mean(d_sym**2))),
        "mean_distance_min_sym": float(d_sym.mean()),
        "ads_displacement_min_sym": float(d_sym[ads_sel].mean()),
        "rerelaxed_positions": work.positions.tolist(),
    }


def relax_system(system: System, calc: Calculator, settings: RelaxSettings) -> dict[str, Any]:
    """Relax ``system.initial`` with ``calc``, compare with ``system.relaxed`` and score the end
    point with the reference calculator ``settings.reference``.

    Returns a JSON-ready dict: sid, split, input_hash, status ("ok"), settings, n_atoms, n_free,
    n_ads (adsorbate atoms), converged, n_steps, rmsd (A, to the given reference relaxed
    structure), mean_distance (A, the OC20 ADwT input), max_distance (A),
    ads_displacement (A, mean over adsorbate atoms, minimum image), ref_travel (A, RMSD
    initial -> given reference: how far the reference relaxation travels)
    (NaN when the relaxation blew up; ``stopped`` then holds the monitor's reason),
    energy (eV, model, final), fmax_final (eV/A), the step statistics
    ``SIGNAL:STAT[@tags=T]/REDUCTION`` (:func:`series_key`; REDUCTION one of
    :data:`STAT_NAMES`: initial, final, max, mean over the steps) of the per-step series
    ``uncertainty:max`` (max uncertainty over free atoms; ``uq_series``),
    ``uncertainty:max@tags=2`` (over adsorbate atoms), ``uncertainty:mean`` (mean over free
    atoms), ``predicted_error:max`` (max predicted error, eV/A), ``novelty:max@tags=0,1,2`` and
    ``novelty:max@tags=2`` (max latent-distance novelty over all / adsorbate atoms, when the
    calculator returns ``novelty``), ml_fmax_initial (eV/A), n_uq_steps, uq_series,
    fmax_series, positions (final model positions, A), wall_s.

    With a reference calculator also: ``force_error:max/*`` and ``force_error:max@tags=2/*``
    (per-step max |F_ref - F_model| over free / adsorbate atoms along the model trajectory,
    eV/A: the true error; at the steps ``settings.error_stride`` selects),
    force_mae (eV/A, free-atom force components over those steps), trajectory_reference_s
    (the wall time of those reference calls, included in wall_s), ref_energy_at_end and
    ref_fmax_at_end (reference energy, eV, and max free-atom force, eV/A, at the model end
    point), ref_energy_given (reference energy of the given relaxed structure), is2re_error
    (eV: the model's final energy minus ref_energy_given, or without a reference minus the
    energy stored with the given relaxed structure; NaN if neither), rerelax_*
    (the model end point re-relaxed with the reference: energy, steps, converged,
    positions), basin ("same", "lower", "higher", "degenerate": where the re-relaxation
    lands relative to the given minimum), reference_source ("given" or "ml_rerelaxed": the
    lowest minimum found), ref_energy_min, energy_above_min (eV, model end point above the
    lowest minimum), rmsd_min / rmsd_min_sym (A, RMSD to the lowest minimum; the second
    modulo substrate symmetry), mean_distance_min_sym (A, the ADwT input against the lowest
    minimum modulo substrate symmetry), ads_displacement_min_sym (A, mean adsorbate-atom distance to
    the lowest minimum modulo substrate symmetry), ref_wall_s.

    Parameters
    ----------
    system
        The system: ``initial`` is relaxed, ``relaxed`` is the given reference minimum.
    calc
        The model calculator (reset first, so the result does not depend on earlier systems).
    settings
        The relaxation and reference settings.

    Returns
    -------
    dict[str, Any]
        The fields above (lengths in A, energies in eV, forces in eV/A).
    """
    atoms = system.initial.copy()  # copies tags and constraints
    tags = atoms.get_tags()
    mask = free_mask(atoms)
    ads = tags == ADSORBATE_TAG
    reference = cached_reference(settings.reference) if settings.reference else None
    calc.reset()
    # a cold neighbour search for a new system, so a result does not depend on which system
    # the worker relaxed before (LTAUCalculator with an HNSW index)
    if hasattr(calc, "reset_trajectory"):
        calc.reset_trajectory()
    atoms.calc = calc
    opt = _make_optimizer(settings.optimizer, atoms)
    monitor = UQMonitor(opt, free_mask=mask, aggregate="max", watch=_WATCHED)
    extra = _StepObserver(atoms, mask, ads,
                          reference if settings.trajectory_errors else None,
                          stride=settings.error_stride)
    opt.attach(monitor, interval=1)
    opt.attach(extra, interval=1)
    t0 = time.perf_counter()
    converged = bool(opt.run(fmax=settings.fmax, steps=settings.steps))
    extra.finish()
    wall = time.perf_counter() - t0
    d = free_atom_distances(atoms, system.relaxed)
    travel = free_atom_distances(system.initial, system.relaxed)
    fmax_series = _col(monitor, "fmax")
    result: dict[str, Any] = {
        "version": RESULT_VERSION,
        "sid": system.sid,
        "split": system.split,
        "input_hash": system.input_hash(),
        "status": "ok",
        "settings": asdict(settings),
        "n_atoms": len(atoms),
        "n_free": int(mask.sum()),
        "n_ads": int(ads.sum()),
        "converged": converged,
        "n_steps": int(opt.nsteps),
        "rmsd": float(np.sqrt(np.mean(d**2))),
        "mean_distance": float(d.mean()),
        "max_distance": float(d.max()),
        "ads_displacement": float(d[ads[mask]].mean()),
        "ref_travel": float(np.sqrt(np.mean(travel**2))),
        "energy": float(atoms.get_potential_energy()),
        "fmax_final": fmax_series[-1] if monitor.records else math.nan,
        "ml_fmax_initial": fmax_series[0] if monitor.records else math.nan,
        "n_uq_steps": len(monitor.values),
        "uq_series": [float(v) for v in monitor.values],
        "fmax_series": fmax_series,
        "positions": atoms.positions.tolist(),
        "stopped": monitor.stopped.reason if monitor.stopped else None,
        "wall_s": wall,
        "trajectory_reference_s": extra.wall_s,
    }
    result.update(series_stats(monitor.values, UQ))  # the monitor's aggregate: UQ
    result.update(series_stats(_col(monitor, UQ_ATOM_MEAN), UQ_ATOM_MEAN))
    result.update(series_stats(_col(monitor, PERR), PERR))
    for key in _WATCHED:
        result.update(series_stats(monitor.signal_values[key], key))
    for key, series in extra.cols.items():
        result.update(series_stats(series, key))
    result["force_mae"] = extra.abs_err_sum / extra.abs_err_n if extra.abs_err_n else math.nan
    if reference is not None:
        t0 = time.perf_counter()
        end = atoms.copy()
        end.calc = None
        result.update(_reference_targets(system, end, reference, settings))
        result["ref_wall_s"] = time.perf_counter() - t0
    # IS2RE: the model's energy at its end point against the reference energy of the given
    # minimum (computed with the reference when there is one, else as stored with it)
    e_ref = result.get("ref_energy_given", math.nan)
    if not math.isfinite(e_ref):
        e_ref = _stored_energy(system.relaxed)
    result["is2re_error"] = result["energy"] - e_ref
    for key in ("adsorbate", "catalyst", "facet", "site", "elements"):
        if key in system.info:
            result[key] = str(system.info[key])
    return result


def _stored_energy(atoms: Atoms) -> float:
    """The energy (eV) stored with a structure (its calculator's results, else
    ``info["ref_energy"]``), NaN if none."""
    results = getattr(atoms.calc, "results", None) or {}
    e = results.get("energy", atoms.info.get("ref_energy", math.nan))
    try:
        return float(e)
    except (TypeError, ValueError):
        return math.nan


def error_result(system: System, exc: BaseException, settings: RelaxSettings) -> dict[str, Any]:
    """The error record of a system whose relaxation raised ``exc`` (status "error", the
    message and the last 4000 characters of the traceback)."""
    return {
        "version": RESULT_VERSION,
        "sid": system.sid,
        "split": system.split,
        "input_hash": system.input_hash(),
        "status": "error",
        "settings": asdict(settings),
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc))[-4000:],
    }
