"""IS2RS campaign: relax every initial structure with a model calculator, track its
uncertainty along the relaxation, and compare the end point with the reference-relaxed one.

The calculator comes from a picklable ``calc_factory`` (a zero-argument callable, e.g.
``functools.partial(ltau_md.integrations.nequip.load_calculator, model=..., estimator=...)``) so
the campaign can
fan out over dask.distributed: a LocalCluster by default, or an existing scheduler (e.g. one
started by dask-jobqueue on SLURM) by address. Each worker builds the calculator once and reuses
it. Results are identical to a serial run (each system is relaxed from scratch, with a fresh
optimizer and a reset calculator) and are saved, one small JSON per system written atomically,
as they finish, so an interrupted campaign resumes without recomputing finished systems.

Layout of a campaign directory::

    OUT/.ltau-md-output.json   marks OUT as an ltau-md "is2rs" campaign (resumable)
    OUT/campaign.json          settings the results were computed with
    OUT/results/<sid>.json     one per system (see :func:`relax_system` for the fields)

A campaign directory must be new or empty, or an earlier campaign (resumed, or started over
with ``resume=False``); any other non-empty directory is refused and left untouched.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ltau_md.core._io import (
    MARKER,
    mark_output_dir,
    output_kind,
    prepare_output_dir,
    to_json_safe,
    write_json_atomic,
)
from ltau_md.core._param_validation import Interval, StrOptions, validate_params
from ltau_md.core.exceptions import ArtifactError, DataError, LTAUError
from ltau_md.core.observers import UQMonitor
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
from ltau_md.workflows.simulate import OPTIMIZERS as _OPTIMIZERS

__all__ = [
    "CAMPAIGN_FORMAT",
    "CAMPAIGN_KIND",
    "CampaignIncompleteError",
    "CampaignResults",
    "RESULT_VERSION",
    "RelaxSettings",
    "STAT_NAMES",
    "incomplete_message",
    "load_result",
    "prepare_campaign_dir",
    "relax_system",
    "result_path",
    "run_campaign",
    "run_is2rs",
    "save_result",
    "series_stats",
    "summary_line",
]

CalcFactory = Callable[[], Calculator]
RESULT_VERSION = 2
STAT_NAMES: tuple[str, ...] = ("initial", "final", "max", "mean")
CAMPAIGN_KIND = "is2rs"
CAMPAIGN_FORMAT = "ltau-md/is2rs-campaign"


class CampaignIncompleteError(LTAUError):
    """Some systems of a campaign are not done (lost to the cluster, or their relaxation
    failed); what is done is saved and a rerun resumes. ``not_done`` maps sid -> reason."""

    def __init__(self, message: str, not_done: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.not_done = dict(not_done or {})


class CampaignResults(list):
    """The results of the systems that are done (ok or error records), in input order, with
    ``not_done`` (sid -> reason: the cluster lost the task; nothing was saved for it) and
    ``n_systems`` (all systems asked for)."""

    def __init__(self, results: Sequence[dict], n_systems: int,
                 not_done: dict[str, str] | None = None) -> None:
        super().__init__(results)
        self.n_systems = n_systems
        self.not_done = dict(not_done or {})

    @property
    def counts(self) -> dict[str, int]:
        """done (ok), failed (error records), not_done, total."""
        ok = sum(1 for r in self if r.get("status") == "ok")
        return {"done": ok, "failed": len(self) - ok, "not_done": len(self.not_done),
                "total": self.n_systems}


@dataclass(frozen=True)
class RelaxSettings:
    """Model relaxation settings: force threshold ``fmax`` (eV/A), step limit, ASE optimizer;
    and the reference calculator that scores the model end point.

    ``reference``: import path of the reference calculator (default EMT; None skips every
    reference-based target). ``ref_fmax`` (eV/A) and ``ref_steps``: the reference BFGS
    re-relaxation of the model end point. ``trajectory_errors``: evaluate the reference
    forces at every model step (the true force error along the trajectory; one reference
    call per step). ``basin_tol`` (A) and ``energy_tol`` (eV): same-minimum tolerances.
    """

    fmax: float = 0.05
    steps: int = 300
    optimizer: str = "BFGS"
    reference: str | None = DEFAULT_REFERENCE
    ref_fmax: float = 0.05
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
    """One per-step column of the monitor's records (None -> NaN)."""
    return [math.nan if r[key] is None else float(r[key]) for r in monitor.records]


def series_stats(series: Sequence[float], prefix: str) -> dict[str, float]:
    """``{prefix}_initial/final/max/mean`` of a per-step series (NaN when it has no finite
    value; max and mean skip NaN steps)."""
    s = np.asarray(series, dtype=float)
    if s.size == 0 or not np.isfinite(s).any():
        return {f"{prefix}_{k}": math.nan for k in STAT_NAMES}
    return {
        f"{prefix}_initial": float(s[0]),
        f"{prefix}_final": float(s[-1]),
        f"{prefix}_max": float(np.nanmax(s)),
        f"{prefix}_mean": float(np.nanmean(s)),
    }


def _make_optimizer(name: str, atoms: Atoms):
    from ase import optimize

    return getattr(optimize, name)(atoms, logfile=None)


class _StepObserver:
    """Per-step extras beside the UQMonitor: uncertainty and novelty over adsorbate atoms,
    novelty over all atoms (when the calculator returns it), and the true force error
    |F_ref - F_model| (eV/A) over free / adsorbate atoms with the reference calculator."""

    def __init__(self, atoms: Atoms, free: np.ndarray, ads: np.ndarray,
                 reference: Calculator | None) -> None:
        self.atoms, self.free, self.ads, self.reference = atoms, free, ads, reference
        self.cols: dict[str, list[float]] = {
            k: [] for k in ("uq_ads", "novelty", "novelty_ads", "ferr", "ferr_ads")
        }
        self.abs_err_sum = 0.0
        self.abs_err_n = 0

    @staticmethod
    def _max(values: Any, sel: np.ndarray) -> float:
        if values is None:
            return math.nan
        v = np.asarray(values, dtype=float)[sel]
        return float(v.max()) if v.size else math.nan

    def __call__(self) -> None:
        res = self.atoms.calc.results if self.atoms.calc is not None else {}
        self.cols["uq_ads"].append(self._max(res.get("uncertainty"), self.ads))
        self.cols["novelty"].append(self._max(res.get("novelty"), np.ones_like(self.free)))
        self.cols["novelty_ads"].append(self._max(res.get("novelty"), self.ads))
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
    :func:`relax_system`)."""
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
    monitor = UQMonitor(opt, free_mask=mask, aggregate="max")
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
    result.update(series_stats(_col(monitor, "mean_uncertainty"), "uq_atom_mean"))
    result.update(series_stats(_col(monitor, "max_predicted_error"), "perr"))
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


def _error_result(system: System, exc: BaseException, settings: RelaxSettings) -> dict[str, Any]:
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


# One calculator per (worker) process and factory: building a model is the expensive part.
_CALC_CACHE: dict[str, Calculator] = {}


def _factory_key(calc_factory: CalcFactory) -> str:
    try:
        return hashlib.sha256(pickle.dumps(calc_factory)).hexdigest()
    except Exception as exc:
        raise DataError(
            "calc_factory must be picklable (e.g. functools.partial("
            "ltau_md.integrations.nequip.load_calculator, model=..., estimator=...)); "
            "pickling failed: "
            f"{exc}"
        ) from exc


def _cached_calc(calc_factory: CalcFactory, key: str) -> Calculator:
    calc = _CALC_CACHE.get(key)
    if calc is None:
        _CALC_CACHE.clear()
        calc = calc_factory()
        if not isinstance(calc, Calculator):
            raise DataError(f"calc_factory returned {type(calc).__name__}, not an ASE Calculator")
        _CALC_CACHE[key] = calc
    return calc


def _task(systems: Sequence[System], calc_factory: CalcFactory, key: str,
          settings: RelaxSettings, threads: int = 1) -> list[dict]:
    """Worker-side unit of work (a batch of systems): never raises for a system, an exception
    while building the calculator or relaxing becomes that system's error result."""
    out = []
    for system in systems:
        try:
            calc = _cached_calc(calc_factory, key)
            if "torch" in sys.modules:  # torch threads per dask worker
                sys.modules["torch"].set_num_threads(threads)
            out.append(relax_system(system, calc, settings))
        except Exception as exc:
            out.append(_error_result(system, exc, settings))
    return out


def _warmup(calc_factory: CalcFactory, key: str, settings: RelaxSettings) -> None:
    """Build the calculator and the reference once on a worker before tasks arrive."""
    _cached_calc(calc_factory, key)
    if settings.reference:
        cached_reference(settings.reference)


def _safe_name(sid: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", sid)
    if name != sid:
        name += "-" + hashlib.sha1(sid.encode()).hexdigest()[:8]
    return name


def result_path(out_dir: str | Path, sid: str) -> Path:
    """Where the result JSON of system ``sid`` lives in a campaign directory."""
    return Path(out_dir) / "results" / f"{_safe_name(sid)}.json"


_NUMERIC_KEYS = re.compile(
    r"^(rmsd|mean_distance|max_distance|ads_displacement|ref_travel|energy|fmax_final|"
    r"ml_fmax_initial|wall_s|force_mae|ref_energy_at_end|ref_fmax_at_end|ref_energy_given|"
    r"rerelax_energy|ref_energy_min|energy_above_min|rmsd_min|rmsd_min_sym|"
    r"mean_distance_min_sym|ads_displacement_min_sym|ref_wall_s|"
    r"(uq|uq_atom_mean|perr|uq_ads|novelty|novelty_ads|ferr|ferr_ads)_(initial|final|max|mean))$"
)


def _from_json(obj: dict) -> dict:
    """None -> NaN for the numeric fields written by :func:`_to_json`."""
    out = dict(obj)
    for k, v in out.items():
        if v is None and _NUMERIC_KEYS.match(k):
            out[k] = math.nan
        elif k in ("uq_series", "fmax_series") and isinstance(v, list):
            out[k] = [math.nan if x is None else x for x in v]
    return out


def save_result(out_dir: str | Path, result: dict) -> Path:
    """Write one system's result atomically; returns its path."""
    path = result_path(out_dir, result["sid"])
    write_json_atomic(path, to_json_safe(result))
    return path


def load_result(out_dir: str | Path, sid: str) -> dict | None:
    """A saved result, or None when absent or unreadable (e.g. written by another tool)."""
    path = result_path(out_dir, sid)
    try:
        return _from_json(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _is_unmarked_campaign(out_dir: Path) -> bool:
    """A campaign directory written before output markers existed (campaign.json only)."""
    if (out_dir / MARKER).exists():
        return False
    try:
        meta = json.loads((out_dir / "campaign.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == CAMPAIGN_FORMAT


def prepare_campaign_dir(out_dir: str | Path, resume: bool = True) -> Path:
    """The campaign directory, ready for results.

    Missing or empty: created and marked. An earlier campaign: kept as it is with ``resume``,
    replaced by a fresh one (old results removed) without. Anything else non-empty (a foreign
    directory, another ltau-md output): OutputExistsError, left untouched."""
    out_dir = Path(out_dir)
    if out_dir.is_dir() and _is_unmarked_campaign(out_dir):
        mark_output_dir(out_dir, CAMPAIGN_KIND)
    if resume and out_dir.is_dir() and output_kind(out_dir) == CAMPAIGN_KIND:
        return out_dir
    return prepare_output_dir(out_dir, CAMPAIGN_KIND, overwrite=not resume)


def _check_campaign(out_dir: Path, settings: RelaxSettings, resume: bool) -> None:
    meta_path = out_dir / "campaign.json"
    meta = {"format": CAMPAIGN_FORMAT, "version": RESULT_VERSION,
            "settings": asdict(settings)}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if resume and old.get("settings") != meta["settings"]:
            raise ArtifactError(
                f"{out_dir} holds results computed with {old.get('settings')}, not "
                f"{meta['settings']}; use another output directory or resume=False (--no-resume)"
            )
    write_json_atomic(meta_path, meta)


def run_campaign(
    systems: Sequence[System],
    calc_factory: CalcFactory,
    out_dir: str | Path,
    settings: RelaxSettings | None = None,
    *,
    n_workers: int = 2,
    scheduler: str | Any | None = None,
    resume: bool = True,
    retry_errors: bool = True,
    progress: bool = True,
    batch_size: int | None = None,
    worker_threads: int = 1,
) -> CampaignResults:
    """Relax ``systems``; return a :class:`CampaignResults` list of the systems that are done
    (ok or error records), in input order, with ``.not_done`` and ``.counts``.

    ``n_workers=0`` and no scheduler: serial, in this process. Otherwise dask.distributed:
    ``scheduler`` (an address such as ``"tcp://host:8786"`` or a ``distributed.Client``) uses
    an existing cluster, e.g. one from dask-jobqueue; None starts a ``LocalCluster`` with
    ``n_workers`` processes of one task at a time and ``worker_threads`` torch threads. Each
    task relaxes ``batch_size`` systems (default: about 16 tasks per worker, at most 8
    systems per task, so the last tasks leave little idle time); workers build the calculator
    before the first task. From a script, start a LocalCluster campaign under
    ``if __name__ == "__main__":`` (dask's 'spawn' re-imports the script;
    :class:`~ltau_md.workflows.is2rs._dask.ClusterStartError` says so).

    Faults never pass silently: a system whose relaxation raised is an error record (saved,
    retried on resume when ``retry_errors``); a system whose task the cluster lost (killed
    worker, cancelled future, closed scheduler) is *not done*: nothing is saved for it, it is
    listed in ``.not_done`` and a rerun computes it. With ``resume`` a system whose result
    file exists with the same input hash is not recomputed; ``resume=False`` starts over: an
    earlier campaign in ``out_dir`` is replaced by a fresh directory. Results are written to
    ``out_dir/results/<sid>.json`` as they finish. ``out_dir`` must be new, empty or an
    earlier campaign; any other non-empty directory raises OutputExistsError untouched.
    """
    from tqdm.auto import tqdm

    settings = settings or RelaxSettings()
    if len({s.sid for s in systems}) != len(systems):
        raise DataError("system ids (sid) must be unique within a campaign")
    if batch_size is not None and batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    out_dir = prepare_campaign_dir(out_dir, resume)
    _check_campaign(out_dir, settings, resume)
    results: dict[str, dict] = {}
    not_done: dict[str, str] = {}
    todo: list[System] = []
    for s in systems:
        old = load_result(out_dir, s.sid) if resume else None
        if (
            old is not None
            and old.get("input_hash") == s.input_hash()
            and old.get("version") == RESULT_VERSION
            and old.get("settings") == asdict(settings)
            and not (retry_errors and old.get("status") != "ok")
        ):
            results[s.sid] = old
        else:
            todo.append(s)
    key = _factory_key(calc_factory) if (todo and (scheduler or n_workers)) else ""
    bar = tqdm(total=len(systems), initial=len(results), desc="IS2RS relaxations",
               disable=not progress)

    def finish(res: dict) -> None:
        save_result(out_dir, res)
        results[res["sid"]] = _from_json(to_json_safe(res))
        bar.update(1)

    def lost(system: System, exc: BaseException) -> None:
        not_done[system.sid] = f"{type(exc).__name__}: {exc}"

    try:
        if not todo:
            pass
        elif scheduler is None and n_workers == 0:
            calc = None
            for s in todo:
                try:
                    if calc is None:
                        calc = calc_factory()
                    res = relax_system(s, calc, settings)
                except Exception as exc:
                    res = _error_result(s, exc, settings)
                finish(res)
        else:
            n_slots = max(n_workers, 1)
            size = batch_size or max(1, min(8, math.ceil(len(todo) / (16 * n_slots))))
            batches = [todo[i:i + size] for i in range(0, len(todo), size)]
            _run_dask(batches, calc_factory, key, settings, n_workers, scheduler,
                      worker_threads, finish, lost)
    finally:
        bar.close()
    return CampaignResults([results[s.sid] for s in systems if s.sid in results],
                           len(systems), not_done)


def _run_dask(
    batches: Sequence[Sequence[System]],
    calc_factory: CalcFactory,
    key: str,
    settings: RelaxSettings,
    n_workers: int,
    scheduler: str | Any | None,
    worker_threads: int,
    finish: Callable[[dict], None],
    lost: Callable[[System, BaseException], None],
) -> None:
    import functools

    from ltau_md.workflows.is2rs._dask import is_lost, map_unordered

    warm = functools.partial(_warmup, calc_factory, key, settings)
    done: set[str] = set()
    try:
        for batch, res, exc in map_unordered(_task, batches, calc_factory, key, settings,
                                             worker_threads, n_workers=n_workers,
                                             scheduler=scheduler, warmup=warm):
            if exc is None:
                for r in res:
                    finish(r)
                    done.add(r["sid"])
            else:
                # _task turns every relaxation error into an error record, so an exception
                # here is the cluster's (lost worker, cancelled, scheduler gone) or a task
                # that could not even start: the systems are not done, nothing is saved
                for s in batch:
                    lost(s, exc)
                    done.add(s.sid)
    except Exception as exc:  # the cluster could not be reached or failed as a whole
        if not is_lost(exc):
            raise
        for batch in batches:
            for s in batch:
                if s.sid not in done:
                    lost(s, exc)


def incomplete_message(results: CampaignResults) -> str | None:
    """"N of M systems not done - rerun to resume (...)" when any system failed or was lost;
    None when every system is done."""
    c = results.counts
    n_bad = c["failed"] + c["not_done"]
    if not n_bad:
        return None
    parts = []
    if c["failed"]:
        first = next(r for r in results if r.get("status") != "ok")
        parts.append(f"{c['failed']} failed, first {first['sid']}: {first.get('error')}")
    if c["not_done"]:
        sid, why = next(iter(results.not_done.items()))
        parts.append(f"{c['not_done']} lost to the cluster, first {sid}: {why}")
    return (f"{n_bad} of {c['total']} systems not done - rerun to resume ("
            + "; ".join(parts) + ")")


def run_is2rs(
    systems: str | Path,
    calc_factory: Any,
    out: str | Path,
    *,
    splits: Sequence[str] | None = None,
    limit: int | None = None,
    fmax: float = 0.05,
    steps: int = 300,
    optimizer: str = "BFGS",
    reference: str | None = DEFAULT_REFERENCE,
    n_workers: int = 2,
    scheduler: str | None = None,
    resume: bool = True,
    rmsd_threshold: float = 0.5,
    progress: bool = True,
    batch_size: int | None = None,
    worker_threads: int = 1,
) -> dict[str, Any]:
    """Load systems, run the campaign, write ``out/report.json`` + ``out/uq_vs_rmsd.png``.

    ``limit`` keeps the first ``limit`` systems of each split. ``reference``: import path of
    the reference calculator (default ``"ase.calculators.emt:EMT"``). Returns the report.
    Raises :class:`CampaignIncompleteError` ("N of M systems not done - rerun to resume")
    after writing the report of what is done when any system failed or was lost, so the
    command exits non-zero.
    """
    from ltau_md.workflows.is2rs.analysis import write_report
    from ltau_md.workflows.is2rs.data import load_systems

    settings = RelaxSettings(fmax=fmax, steps=steps, optimizer=optimizer, reference=reference)
    loaded = load_systems(systems, list(splits) if splits else None)
    if limit is not None:
        seen: dict[str, int] = {}
        kept = []
        for s in loaded:
            seen[s.split] = seen.get(s.split, 0) + 1
            if seen[s.split] <= limit:
                kept.append(s)
        loaded = kept
    results = run_campaign(
        loaded, calc_factory, out, settings,
        n_workers=n_workers, scheduler=scheduler, resume=resume, progress=progress,
        batch_size=batch_size, worker_threads=worker_threads,
    )
    report = (write_report(out, results, rmsd_threshold=rmsd_threshold,
                           not_done=results.not_done) if len(results) else None)
    message = incomplete_message(results)
    if message:
        raise CampaignIncompleteError(message, {**results.not_done, **{
            r["sid"]: str(r.get("error")) for r in results if r.get("status") != "ok"}})
    assert report is not None
    return report


def summary_line(report: dict[str, Any], stat: str = "uq_max") -> dict[str, Any]:
    """Compact per-split summary (n, ADwT, mean RMSD, Spearman and AUROC of ``stat``)."""
    out: dict[str, Any] = {}
    for name, e in report["splits"].items():
        out[name] = {
            "n": e.get("n"),
            "adwt": e.get("adwt"),
            "rmsd_mean": e.get("rmsd_mean"),
            f"spearman_{stat}": (e.get("spearman") or {}).get(stat),
            f"auroc_{stat}": (e.get("auroc") or {}).get(stat),
            "energy_above_min_median": e.get("energy_above_min_median"),
            "fbt": e.get("fbt"),
        }
    out["counts"] = report.get("counts")
    return out
