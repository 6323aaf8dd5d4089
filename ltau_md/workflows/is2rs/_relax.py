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
from ltau_md.core.metrics import stat_key
from ltau_md.core.observers import UQMonitor
from ltau_md.workflows.is2rs._results import RESULT_VERSION
from ltau_md.workflows.is2rs.data import System
from ltau_md.workflows.is2rs.metrics import (
    ADSORBATE_TAG,
    FREE_TAGS,
    classify_basin,
    free_atom_distances,
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

__all__ = ["RelaxSettings", "STAT_NAMES", "relax_system", "series_stats"]

STAT_NAMES: tuple[str, ...] = ("initial", "final", "max", "mean")
"""The statistics of a per-step series in a result: ``{prefix}_{name}``."""


@dataclass(frozen=True)
class RelaxSettings:
    """Model relaxation settings: force threshold ``fmax`` (eV/A), step limit, ASE optimizer;
    and the reference calculator that scores the model end point.

    ``reference``: import path of the reference calculator (default EMT; None skips every
    reference-based target). ``ref_fmax`` (eV/A) and ``ref_steps``: the reference BFGS
    re-relaxation of the model end point. ``trajectory_errors``: evaluate the reference
    forces at every model step (the true force error along the trajectory; one reference
    call per step). ``basin_tol`` (A) and ``energy_tol`` (eV): same-minimum tolerances.

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
        Evaluate the reference forces at every model step (one reference call per step).
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


def series_stats(series: Sequence[float], prefix: str) -> dict[str, float]:
    """``{prefix}_initial/final/max/mean`` of a per-step series (NaN when it has no finite
    value; max and mean skip NaN steps).

    Parameters
    ----------
    series
        One value per step (in the unit of the signal).
    prefix
        Name of the series in the result, e.g. ``"uq"``.

    Returns
    -------
    dict[str, float]
        ``{prefix}_{name}`` for each name of :data:`STAT_NAMES`.
    """
    s = np.asarray(series, dtype=float)
    if s.size == 0 or not np.isfinite(s).any():
        return {f"{prefix}_{k}": math.nan for k in STAT_NAMES}
    return {
        f"{prefix}_initial": float(s[0]),
        f"{prefix}_final": float(s[-1]),
        f"{prefix}_max": float(np.nanmax(s)),
        f"{prefix}_mean": float(np.nanmean(s)),
    }


def _make_optimizer(name: str, atoms: Atoms) -> Optimizer:
    """The ASE optimizer ``name`` (e.g. ``"BFGS"``) on ``atoms``, without a log file."""
    from ase import optimize

    return getattr(optimize, name)(atoms, logfile=None)


def _watched_keys(tags: np.ndarray) -> dict[str, str]:
    """The per-step statistics the :class:`UQMonitor` watches beside its own, by result
    prefix: max uncertainty (eV/A) and max novelty over the adsorbate atoms, and max novelty
    over all atoms (the selection "every tag of the system": the monitor's default selection
    is the free atoms).

    Parameters
    ----------
    tags
        The system's OC20 tags (n_atoms,).

    Returns
    -------
    dict[str, str]
        ``{"uq_ads", "novelty", "novelty_ads"}`` -> statistic key ``"SIGNAL:max@tags=T"``.
    """
    every_tag = "tags=" + ",".join(str(int(t)) for t in np.unique(tags))
    ads = f"tags={ADSORBATE_TAG}"
    return {"uq_ads": stat_key("uncertainty", "max", ads),
            "novelty": stat_key("novelty", "max", every_tag),
            "novelty_ads": stat_key("novelty", "max", ads)}


class _StepObserver:
    """Per-step extra beside the UQMonitor: the true force error |F_ref - F_model| (eV/A)
    over free / adsorbate atoms with the reference calculator (NaN per step without one).

    Parameters
    ----------
    atoms
        The relaxing atoms (their calculator is the model).
    free, ads
        Boolean masks (n_atoms,) of the free and the adsorbate atoms.
    reference
        The reference calculator, or None.
    """

    def __init__(self, atoms: Atoms, free: np.ndarray, ads: np.ndarray,
                 reference: Calculator | None) -> None:
        self.atoms, self.free, self.ads, self.reference = atoms, free, ads, reference
        self.cols: dict[str, list[float]] = {k: [] for k in ("ferr", "ferr_ads")}
        self.abs_err_sum = 0.0
        self.abs_err_n = 0

    def __call__(self) -> None:
        """Record this step's force errors (ASE calls this after each step)."""
        res = self.atoms.calc.results if self.atoms.calc is not None else {}
        if self.reference is None or "forces" not in res:
            self.cols["ferr"].append(math.nan)
            self.cols["ferr_ads"].append(math.nan)
            return
        f_model = np.asarray(res["forces"], dtype=float)
        if not (np.isfinite(f_model).all() and np.isfinite(self.atoms.positions).all()):
            self.cols["ferr"].append(math.nan)
            self.cols["ferr_ads"].append(math.nan)
            return
        _, f_ref = reference_energy_forces(self.reference, self.atoms)
        diff = f_ref - f_model
        err = np.linalg.norm(diff, axis=1)
        self.cols["ferr"].append(float(err[self.free].max()))
        self.cols["ferr_ads"].append(float(err[self.ads].max()))
        self.abs_err_sum += float(np.abs(diff[self.free]).sum())
        self.abs_err_n += int(diff[self.free].size)


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

    free = np.isin(end.get_tags(), FREE_TAGS)
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
    energy (eV, model, final), fmax_final (eV/A), uq_{initial,final,max,mean} (per-step max
    uncertainty over free atoms), uq_ads_* (over adsorbate atoms), uq_atom_mean_* (per-step
    mean over free atoms), perr_* (per-step max predicted error, eV/A), novelty_* and
    novelty_ads_* (per-step max latent-distance novelty over all / adsorbate atoms, when the
    calculator returns ``novelty``), ml_fmax_initial (eV/A), n_uq_steps, uq_series,
    fmax_series, positions (final model positions, A), wall_s.

    With a reference calculator also: ferr_* and ferr_ads_* (per-step max |F_ref - F_model|
    over free / adsorbate atoms along the model trajectory, eV/A: the true error),
    force_mae (eV/A, free-atom force components over the trajectory), ref_energy_at_end and
    ref_fmax_at_end (reference energy, eV, and max free-atom force, eV/A, at the model end
    point), ref_energy_given (reference energy of the given relaxed structure), rerelax_*
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
    mask = np.isin(tags, FREE_TAGS)
    ads = tags == ADSORBATE_TAG
    reference = cached_reference(settings.reference) if settings.reference else None
    calc.reset()
    # a cold neighbour search for a new system, so a result does not depend on which system
    # the worker relaxed before (LTAUCalculator with an HNSW index)
    if hasattr(calc, "reset_trajectory"):
        calc.reset_trajectory()
    atoms.calc = calc
    opt = _make_optimizer(settings.optimizer, atoms)
    watched = _watched_keys(tags)
    monitor = UQMonitor(opt, free_mask=mask, aggregate="max", watch=tuple(watched.values()))
    extra = _StepObserver(atoms, mask, ads,
                          reference if settings.trajectory_errors else None)
    opt.attach(monitor, interval=1)
    opt.attach(extra, interval=1)
    t0 = time.perf_counter()
    converged = bool(opt.run(fmax=settings.fmax, steps=settings.steps))
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
    }
    result.update(series_stats(monitor.values, "uq"))
    result.update(series_stats(_col(monitor, stat_key("uncertainty", "mean")), "uq_atom_mean"))
    result.update(series_stats(_col(monitor, stat_key("predicted_error", "max")), "perr"))
    for name, key in watched.items():
        result.update(series_stats(monitor.signal_values[key], name))
    for name, series in extra.cols.items():
        result.update(series_stats(series, name))
    result["force_mae"] = extra.abs_err_sum / extra.abs_err_n if extra.abs_err_n else math.nan
    if reference is not None:
        t0 = time.perf_counter()
        end = atoms.copy()
        end.calc = None
        result.update(_reference_targets(system, end, reference, settings))
        result["ref_wall_s"] = time.perf_counter() - t0
    for key in ("adsorbate", "catalyst", "facet", "site", "elements"):
        if key in system.info:
            result[key] = str(system.info[key])
    return result


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
