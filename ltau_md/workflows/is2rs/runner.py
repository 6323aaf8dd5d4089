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

import contextlib
import hashlib
import json
import math
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ase.calculators.calculator import Calculator

from ltau_md.core.exceptions import ArtifactError, DataError, LTAUError
from ltau_md.core.files import (
    MARKER,
    mark_output_dir,
    output_dir,
    to_json_safe,
    write_json_atomic,
)
from ltau_md.core.validation import with_defaults
from ltau_md.workflows.is2rs._relax import (
    STAT_NAMES,
    RelaxSettings,
    error_result,
    relax_system,
    series_key,
    series_stats,
)
from ltau_md.workflows.is2rs._results import (
    RESULT_VERSION,
    UQ,
    CampaignResults,
    from_json,
    load_result,
    result_path,
    save_result,
)
from ltau_md.workflows.is2rs.data import System
from ltau_md.workflows.is2rs.reference import DEFAULT_REFERENCE, cached_reference
from ltau_md.workflows.simulate import DEFAULT_FMAX

# the public module of the campaign: the relaxation (._relax) and the results on disk
# (._results) are defined in private modules and imported from here
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
    "campaign_dir",
    "relax_system",
    "result_path",
    "run_campaign",
    "run_is2rs",
    "save_result",
    "series_key",
    "series_stats",
    "summary_line",
]

CalcFactory = Callable[[], Calculator]
CAMPAIGN_KIND = "is2rs"
CAMPAIGN_FORMAT = "ltau-md/is2rs-campaign"


class CampaignIncompleteError(LTAUError):
    """Some systems of a campaign are not done (lost to the cluster, or their relaxation
    failed); what is done is saved and a rerun resumes. ``not_done`` maps sid -> reason."""

    def __init__(self, message: str, not_done: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.not_done = dict(not_done or {})


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
            out.append(error_result(system, exc, settings))
    return out


def _warmup(calc_factory: CalcFactory, key: str, settings: RelaxSettings) -> None:
    """Build the calculator and the reference once on a worker before tasks arrive."""
    _cached_calc(calc_factory, key)
    if settings.reference:
        cached_reference(settings.reference)


def _is_unmarked_campaign(out_dir: Path) -> bool:
    """A campaign directory written before output markers existed (campaign.json only)."""
    if (out_dir / MARKER).exists():
        return False
    try:
        meta = json.loads((out_dir / "campaign.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == CAMPAIGN_FORMAT


@contextlib.contextmanager
def campaign_dir(out_dir: str | Path, resume: bool = True) -> Iterator[Path]:
    """The campaign directory, ready for results, locked for this process while the body runs
    (:func:`~ltau_md.core.files.output_dir`: a campaign another live client is running is
    refused with its pid).

    Missing or empty: created and marked. An earlier campaign: kept as it is with ``resume``,
    replaced by a fresh one (old results removed) without. Anything else non-empty (a foreign
    directory, another ltau-md output): OutputExistsError, left untouched."""
    out_dir = Path(out_dir)
    if out_dir.is_dir() and _is_unmarked_campaign(out_dir):
        mark_output_dir(out_dir, CAMPAIGN_KIND)
    with output_dir(out_dir, CAMPAIGN_KIND, overwrite=not resume, resume=resume) as out:
        yield out


def _same_settings(old: dict | None, settings: RelaxSettings) -> bool:
    """Whether stored settings ``old`` are ``settings``; a setting added after they were
    written counts as its default, so an older campaign resumes."""
    return isinstance(old, dict) and with_defaults(old, RelaxSettings) == asdict(settings)


def _check_campaign(out_dir: Path, settings: RelaxSettings, resume: bool) -> None:
    meta_path = out_dir / "campaign.json"
    meta = {"format": CAMPAIGN_FORMAT, "version": RESULT_VERSION,
            "settings": asdict(settings)}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if resume and not _same_settings(old.get("settings"), settings):
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
    give_up_after: float | None = None,
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
    :class:`~ltau_md.workflows._dask.ClusterStartError` says so).

    Faults never pass silently: a system whose relaxation raised is an error record (saved,
    retried on resume when ``retry_errors``); a system whose task the cluster lost (killed
    worker, cancelled future, closed scheduler) is *not done*: nothing is saved for it, it is
    listed in ``.not_done`` and a rerun computes it. A cluster left with no workers is said
    so on stderr after a minute (and every minute after); with ``give_up_after`` (s) of no
    workers, the remaining systems are not done and the campaign returns. With ``resume`` a
    system whose result file exists with the same input hash is not recomputed;
    ``resume=False`` starts over: an earlier campaign in ``out_dir`` is replaced by a fresh
    directory. Results are written to ``out_dir/results/<sid>.json`` as they finish.
    ``out_dir`` must be new, empty or an earlier campaign; any other non-empty directory
    raises OutputExistsError untouched.
    """
    settings = settings or RelaxSettings()
    if len({s.sid for s in systems}) != len(systems):
        raise DataError("system ids (sid) must be unique within a campaign")
    if batch_size is not None and batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    with campaign_dir(out_dir, resume) as out:
        return _campaign(systems, calc_factory, out, settings, n_workers=n_workers,
                         scheduler=scheduler, resume=resume, retry_errors=retry_errors,
                         progress=progress, batch_size=batch_size,
                         worker_threads=worker_threads, give_up_after=give_up_after)


def _campaign(systems: Sequence[System], calc_factory: CalcFactory, out_dir: Path,
              settings: RelaxSettings, *, n_workers: int, scheduler: str | Any | None,
              resume: bool, retry_errors: bool, progress: bool, batch_size: int | None,
              worker_threads: int, give_up_after: float | None) -> CampaignResults:
    from tqdm.auto import tqdm

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
            and _same_settings(old.get("settings"), settings)
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
        results[res["sid"]] = from_json(to_json_safe(res))
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
                    res = error_result(s, exc, settings)
                finish(res)
        else:
            n_slots = max(n_workers, 1)
            size = batch_size or max(1, min(8, math.ceil(len(todo) / (16 * n_slots))))
            batches = [todo[i:i + size] for i in range(0, len(todo), size)]
            _run_dask(batches, calc_factory, key, settings, n_workers, scheduler,
                      worker_threads, finish, lost, give_up_after)
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
    give_up_after: float | None = None,
) -> None:
    import functools

    from ltau_md.workflows._dask import is_lost, map_unordered

    warm = functools.partial(_warmup, calc_factory, key, settings)
    done: set[str] = set()
    try:
        for batch, res, exc in map_unordered(_task, batches, calc_factory, key, settings,
                                             worker_threads, n_workers=n_workers,
                                             scheduler=scheduler, warmup=warm,
                                             give_up_after=give_up_after):
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
    fmax: float = DEFAULT_FMAX,
    steps: int = 300,
    optimizer: str = "BFGS",
    reference: str | None = DEFAULT_REFERENCE,
    error_stride: int = 1,
    n_workers: int = 2,
    scheduler: str | None = None,
    resume: bool = True,
    rmsd_threshold: float = 0.5,
    progress: bool = True,
    batch_size: int | None = None,
    worker_threads: int = 1,
    give_up_after: float | None = None,
) -> dict[str, Any]:
    """Load systems, run the campaign, write ``out/report.json`` + ``out/uq_vs_rmsd.png``.

    ``limit`` keeps the first ``limit`` systems of each split. ``reference``: import path of
    the reference calculator (default ``"ase.calculators.emt:EMT"``). ``error_stride``: the
    reference forces along the model trajectory every that many steps (and at the last; see
    :class:`RelaxSettings`). ``give_up_after``: see
    :func:`run_campaign`. Returns the report.
    Raises :class:`CampaignIncompleteError` ("N of M systems not done - rerun to resume")
    after writing the report of what is done when any system failed or was lost, so the
    command exits non-zero.
    """
    from ltau_md.workflows.is2rs.data import load_systems
    from ltau_md.workflows.is2rs.report import write_report

    settings = RelaxSettings(fmax=fmax, steps=steps, optimizer=optimizer, reference=reference,
                             error_stride=error_stride)
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
        batch_size=batch_size, worker_threads=worker_threads, give_up_after=give_up_after,
    )
    report = (write_report(out, results, rmsd_threshold=rmsd_threshold,
                           not_done=results.not_done) if len(results) else None)
    message = incomplete_message(results)
    if message:
        raise CampaignIncompleteError(message, {**results.not_done, **{
            r["sid"]: str(r.get("error")) for r in results if r.get("status") != "ok"}})
    assert report is not None
    return report


def summary_line(report: dict[str, Any], stat: str | None = None) -> dict[str, Any]:
    """Compact per-split summary (n, ADwT, mean RMSD, Spearman and AUROC of ``stat``, a
    result statistic; default ``uncertainty:max/max``, the highest per-step max uncertainty
    along the relaxation)."""
    stat = series_key(UQ, "max") if stat is None else stat
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
