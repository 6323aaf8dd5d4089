"""IS2RS campaign: relax every initial structure with a model calculator, track its
uncertainty along the relaxation, and compare the end point with the reference-relaxed one.

The calculator comes from a picklable ``calc_factory`` (a zero-argument callable, e.g.
``functools.partial(ltau_md.nequip.load_calculator, model=..., estimator=...)``) so the campaign can
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
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .._io import (
    MARKER,
    mark_output_dir,
    output_kind,
    prepare_output_dir,
    to_json_safe,
    write_json_atomic,
)
from ..exceptions import ArtifactError, DataError, LTAUError
from ..observers import UQMonitor
from ..simulate import OPTIMIZERS as _OPTIMIZERS
from .data import System
from .metrics import FREE_TAGS, free_atom_distances

CalcFactory = Callable[[], Calculator]
RESULT_VERSION = 1
STAT_NAMES: tuple[str, ...] = ("initial", "final", "max", "mean")
CAMPAIGN_KIND = "is2rs"
CAMPAIGN_FORMAT = "ltau-md/is2rs-campaign"


@dataclass(frozen=True)
class RelaxSettings:
    """Model relaxation settings: force threshold ``fmax`` (eV/A), step limit, ASE optimizer."""

    fmax: float = 0.05
    steps: int = 300
    optimizer: str = "BFGS"

    def __post_init__(self) -> None:
        if self.optimizer not in _OPTIMIZERS:
            raise DataError(f"optimizer {self.optimizer!r} unknown; use one of {_OPTIMIZERS}")
        if not self.fmax > 0 or self.steps < 1:
            raise DataError(
                f"need fmax > 0 and steps >= 1, got fmax={self.fmax} steps={self.steps}"
            )


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


def relax_system(system: System, calc: Calculator, settings: RelaxSettings) -> dict[str, Any]:
    """Relax ``system.initial`` with ``calc`` and compare with ``system.relaxed``.

    Returns a JSON-ready dict: sid, split, input_hash, status ("ok"), settings, n_atoms, n_free,
    converged, n_steps, rmsd (A), mean_distance (A, the OC20 ADwT input), max_distance (A)
    (NaN when the relaxation blew up; ``stopped`` then holds the monitor's reason),
    energy (eV, model, final), fmax_final (eV/A), uq_{initial,final,max,mean} (per-step max
    uncertainty over free atoms), uq_atom_mean_{...} (per-step mean over free atoms),
    perr_{...} (per-step max predicted error, eV/A), n_uq_steps, uq_series, fmax_series,
    positions (final model positions, A), wall_s.
    """
    atoms = system.initial.copy()  # copies tags and constraints
    mask = np.isin(atoms.get_tags(), FREE_TAGS)
    calc.reset()
    # a cold neighbour search for a new system, so a result does not depend on which system
    # the worker relaxed before (LTAUCalculator with an HNSW index)
    if hasattr(calc, "reset_trajectory"):
        calc.reset_trajectory()
    atoms.calc = calc
    opt = _make_optimizer(settings.optimizer, atoms)
    monitor = UQMonitor(opt, free_mask=mask, aggregate="max")
    opt.attach(monitor, interval=1)
    t0 = time.perf_counter()
    converged = bool(opt.run(fmax=settings.fmax, steps=settings.steps))
    wall = time.perf_counter() - t0
    d = free_atom_distances(atoms, system.relaxed)
    result: dict[str, Any] = {
        "version": RESULT_VERSION,
        "sid": system.sid,
        "split": system.split,
        "input_hash": system.input_hash(),
        "status": "ok",
        "settings": asdict(settings),
        "n_atoms": len(atoms),
        "n_free": int(mask.sum()),
        "converged": converged,
        "n_steps": int(opt.nsteps),
        "rmsd": float(np.sqrt(np.mean(d**2))),
        "mean_distance": float(d.mean()),
        "max_distance": float(d.max()),
        "energy": float(atoms.get_potential_energy()),
        "fmax_final": _col(monitor, "fmax")[-1] if monitor.records else math.nan,
        "n_uq_steps": len(monitor.values),
        "uq_series": [float(v) for v in monitor.values],
        "fmax_series": _col(monitor, "fmax"),
        "positions": atoms.positions.tolist(),
        "stopped": monitor.stopped.reason if monitor.stopped else None,
        "wall_s": wall,
    }
    result.update(series_stats(monitor.values, "uq"))
    result.update(series_stats(_col(monitor, "mean_uncertainty"), "uq_atom_mean"))
    result.update(series_stats(_col(monitor, "max_predicted_error"), "perr"))
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
            "ltau_md.nequip.load_calculator, model=..., estimator=...)); pickling failed: "
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


def _task(system: System, calc_factory: CalcFactory, key: str, settings: RelaxSettings) -> dict:
    """Worker-side unit of work: never raises, an exception becomes an error result."""
    try:
        calc = _cached_calc(calc_factory, key)
        if "torch" in sys.modules:  # one torch thread per dask worker (threads_per_worker=1)
            sys.modules["torch"].set_num_threads(1)
        return relax_system(system, calc, settings)
    except Exception as exc:
        return _error_result(system, exc, settings)


def _safe_name(sid: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", sid)
    if name != sid:
        name += "-" + hashlib.sha1(sid.encode()).hexdigest()[:8]
    return name


def result_path(out_dir: str | Path, sid: str) -> Path:
    """Where the result JSON of system ``sid`` lives in a campaign directory."""
    return Path(out_dir) / "results" / f"{_safe_name(sid)}.json"


_NUMERIC_KEYS = re.compile(r"^(rmsd|mean_distance|max_distance|energy|fmax_final|wall_s|"
                           r"(uq|uq_atom_mean|perr)_(initial|final|max|mean))$")


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
) -> list[dict]:
    """Relax ``systems`` and return one result dict per system, in the input order.

    ``n_workers=0`` and no scheduler: serial, in this process. Otherwise dask.distributed:
    ``scheduler`` (an address such as ``"tcp://host:8786"`` or a ``distributed.Client``) uses
    an existing cluster, e.g. one from dask-jobqueue; None starts a ``LocalCluster`` with
    ``n_workers`` processes of one thread each. With ``resume`` a system whose result file
    exists with the same input hash is not recomputed (error results are retried when
    ``retry_errors``); ``resume=False`` starts over: an earlier campaign in ``out_dir`` is
    replaced by a fresh directory, so no stale result remains. Results are written to
    ``out_dir/results/<sid>.json`` as they finish. ``out_dir`` must be new, empty or an
    earlier campaign; any other non-empty directory raises OutputExistsError untouched.
    """
    from tqdm.auto import tqdm

    settings = settings or RelaxSettings()
    if len({s.sid for s in systems}) != len(systems):
        raise DataError("system ids (sid) must be unique within a campaign")
    out_dir = prepare_campaign_dir(out_dir, resume)
    _check_campaign(out_dir, settings, resume)
    results: dict[str, dict] = {}
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
            _run_dask(todo, calc_factory, key, settings, n_workers, scheduler, finish)
    finally:
        bar.close()
    return [results[s.sid] for s in systems]


def _run_dask(
    todo: Sequence[System],
    calc_factory: CalcFactory,
    key: str,
    settings: RelaxSettings,
    n_workers: int,
    scheduler: str | Any | None,
    finish: Callable[[dict], None],
) -> None:
    from ._dask import map_unordered

    for s, res, exc in map_unordered(_task, todo, calc_factory, key, settings,
                                     n_workers=n_workers, scheduler=scheduler):
        finish(res if exc is None else _error_result(s, exc, settings))


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
    n_workers: int = 2,
    scheduler: str | None = None,
    resume: bool = True,
    rmsd_threshold: float = 0.5,
    progress: bool = True,
) -> dict[str, Any]:
    """Load systems, run the campaign, write ``out/report.json`` + ``out/uq_vs_rmsd.png``.

    ``limit`` keeps the first ``limit`` systems of each split. Returns the report.
    """
    from .analysis import write_report
    from .data import load_systems

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
        loaded, calc_factory, out, RelaxSettings(fmax=fmax, steps=steps, optimizer=optimizer),
        n_workers=n_workers, scheduler=scheduler, resume=resume, progress=progress,
    )
    if results and all(r.get("status") != "ok" for r in results):
        raise LTAUError(
            f"all {len(results)} relaxations failed; first error: {results[0].get('error')}"
        )
    return write_report(out, results, rmsd_threshold=rmsd_threshold)


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
        }
    return out
