"""Relaxations and MD with per-step LTAU uncertainty: the work behind ``ltau-md relax`` and
``ltau-md md``. Each run gets a :class:`~ltau_md.core.observers.UQMonitor` writing into its own
folder; summaries go to ``summary.csv`` and ``summary.json``. The output directory must be new
or empty, or (with ``overwrite=True``) an earlier output of the same command, which is then
replaced as a whole (see :func:`ltau_md.core.files.output_dir`)."""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from ltau_md.core.exceptions import Terminated
from ltau_md.core.files import output_dir, write_json_atomic, write_text_atomic
from ltau_md.core.observers import ACTIONS, Threshold, UQMonitor
from ltau_md.core.structures import thermalize

__all__ = [
    "DEFAULT_FMAX",
    "MD_KIND",
    "OPTIMIZERS",
    "RELAX_KIND",
    "NOT_RUN",
    "SUMMARY_FIELDS",
    "oracle_from_name",
    "policies_from_args",
    "relax_many",
    "run_md",
    "watched_statistics",
    "write_summary",
]

#: force convergence criterion of relaxations, eV/A (max |F| over the free atoms, as ASE's
#: optimizers take ``fmax``): relax, IS2RS model and reference relaxations, the generator
DEFAULT_FMAX = 0.05
#: output-directory kinds (markers, :func:`~ltau_md.core.files.output_dir`) of
#: :func:`relax_many` and :func:`run_md` outputs
RELAX_KIND, MD_KIND = "relax", "md"
OPTIMIZERS = ("BFGS", "FIRE", "LBFGS", "BFGSLineSearch", "MDMin")
SUMMARY_FIELDS = ("label", "n_observed", "initial", "max", "max_step", "mean", "final",
                  "converged", "status", "stopped_step", "stop_reason", "n_resample", "n_warn")


def policies_from_args(stop_above: float | None = None, resample_above: float | None = None,
                       warn_above: float | None = None, patience: int | None = 1,
                       hysteresis: float = 0.0, *, signal: str | None = None, on: str = "max",
                       select: str | None = None, stop_rate: float | None = None,
                       resample_rate: float | None = None, warn_rate: float | None = None,
                       rate_signal: str = "novelty") -> list[Threshold]:
    """Threshold policies from CLI-style options: a fixed threshold (``*_above``) or an
    in-domain alarm rate (``*_rate``) per action, on the ``on`` statistic ("max", "mean",
    "qNN") of ``signal`` over ``select`` (None: the free atoms; "tags=2": adsorbate atoms).
    ``signal`` None means "uncertainty" for the ``*_above`` thresholds (as before) and
    ``rate_signal`` for the ``*_rate`` ones (the CLI passes the estimator's default alarm's
    signal, :func:`~ltau_md.core.calibration.default_alarm`). ``patience`` None means 1."""
    out = []
    common = {"on": on, "select": select, "patience": 1 if patience is None else patience,
              "hysteresis": hysteresis}
    given = {"stop": (stop_above, stop_rate), "resample": (resample_above, resample_rate),
             "warn": (warn_above, warn_rate)}
    for action in ACTIONS:
        thr, rate = given[action]
        if thr is not None:
            out.append(Threshold(action, above=float(thr), signal=signal or "uncertainty",
                                 **common))
        if rate is not None:
            out.append(Threshold(action, alarm_rate=float(rate), signal=signal or rate_signal,
                                 **common))
    return out




def _row(summary: dict, converged: bool | None) -> dict:
    stopped = summary.get("stopped") or {}
    return {
        "label": summary["label"], "n_observed": summary["n_observed"],
        "initial": summary.get("initial"), "max": summary.get("max"),
        "max_step": summary.get("max_step"), "mean": summary.get("mean"),
        "final": summary.get("final"), "converged": converged, "status": summary["status"],
        "stopped_step": stopped.get("step"), "stop_reason": stopped.get("reason"),
        "n_resample": summary["n_events"]["resample"], "n_warn": summary["n_events"]["warn"],
    }


#: summary status of a structure a relax run never reached (it was stopped before)
NOT_RUN = "not_run"


def _not_run(atoms: Atoms, i: int) -> dict:
    """The summary row of a structure the run never reached (status "not_run")."""
    row = dict.fromkeys(SUMMARY_FIELDS)
    row.update(label=str(atoms.info.get("label", f"{i:04d}")), n_observed=0,
               status=NOT_RUN, converged=False)
    return row


def write_summary(rows: Sequence[dict], out_dir: Path) -> None:
    """summary.csv and summary.json (atomic writes)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(out_dir / "summary.csv", buf.getvalue())
    write_json_atomic(out_dir / "summary.json", list(rows))


def watched_statistics(calc: Calculator) -> tuple[str, ...]:
    """Statistics every run records in steps.jsonl besides its policies': the LTAU novelty's
    maximum and the calculator's estimator's default alarm
    (:func:`~ltau_md.core.calibration.default_alarm`)."""
    from ltau_md.core.calibration import FALLBACK_ALARM, default_alarm

    est = getattr(calc, "estimator", None)
    return tuple(dict.fromkeys((FALLBACK_ALARM, default_alarm(est))))


def relax_many(
    structures: Sequence[Atoms],
    calc_factory: Callable[[], Calculator],
    out_dir: str | os.PathLike,
    *,
    fmax: float = DEFAULT_FMAX,
    steps: int = 200,
    optimizer: str = "BFGS",
    policies: Callable[[], list[Threshold]] = list,
    progress: bool = True,
    overwrite: bool = False,
) -> list[dict]:
    """Relax each structure (forces below ``fmax`` eV/A or ``steps``) with per-step UQ.

    Each structure's files go to ``out_dir/NNNN/``; returns the summary rows (also written to
    summary.csv / summary.json). ``policies`` makes fresh policies per structure. A run ended
    by Ctrl-C, SIGTERM (:class:`~ltau_md.core.exceptions.Terminated`) or a failed write
    records the stopped structure's row and a ``"not_run"`` row for each structure after it,
    then re-raises.
    ``out_dir`` must be new or empty; ``overwrite=True`` replaces an earlier ``relax`` output
    there (a foreign non-empty directory is always refused: OutputExistsError; a directory
    another live run is writing: OutputBusyError, naming its pid).
    """
    import ase.optimize
    from tqdm.auto import tqdm

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    opt_class = getattr(ase.optimize, optimizer)
    with output_dir(out_dir, RELAX_KIND, overwrite) as out:
        calc = calc_factory()
        rows = []
        for i, atoms in enumerate(tqdm(structures, desc="relax", disable=not progress)):
            atoms = atoms.copy()
            atoms.calc = calc
            label = str(atoms.info.get("label", f"{i:04d}"))
            opt = opt_class(atoms, logfile=None)
            mon = UQMonitor(opt, policies(), out_dir=out / f"{i:04d}", label=label,
                            watch=watched_statistics(calc))
            opt.attach(mon, interval=1)
            try:
                converged = mon.run(steps=steps, fmax=fmax) and mon.stopped is None
            except (KeyboardInterrupt, Terminated, OSError):
                # the stopped structure's row and one per structure never run, then stop
                rows.append(_row(mon.summary(), False))
                rows += [_not_run(a, j) for j, a in enumerate(structures) if j > i]
                with contextlib.suppress(OSError):  # the disk may be full
                    write_summary(rows, out)
                raise
            rows.append(_row(mon.summary(), converged))
            write_summary(rows, out)
        return rows


def run_md(
    atoms: Atoms,
    calc: Calculator,
    out_dir: str | os.PathLike,
    *,
    temperature_K: float = 300.0,
    timestep_fs: float = 1.0,
    steps: int = 1000,
    friction: float = 0.01,
    policies: Sequence[Threshold] = (),
    oracle: Calculator | None = None,
    rewind: bool = False,
    max_retries: int = 3,
    max_force: float | None = 50.0,
    interval: int = 1,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Langevin MD (NVT, ``friction`` in 1/fs) at ``temperature_K`` with per-step UQ and
    policies; velocities drawn from Maxwell-Boltzmann with ``seed``. Returns the summary.

    ``out_dir`` must be new or empty; ``overwrite=True`` replaces an earlier ``md`` output there
    (a foreign non-empty directory is always refused: OutputExistsError), and so is a
    directory another live run is writing (OutputBusyError, naming its pid)."""
    from ase.md.langevin import Langevin
    from tqdm.auto import tqdm

    with output_dir(out_dir, MD_KIND, overwrite) as out:
        atoms = atoms.copy()
        atoms.calc = calc
        rng = np.random.default_rng(seed)
        thermalize(atoms, temperature_K, rng)
        dyn = Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature_K,
                       friction=friction / units.fs, fixcm=False, rng=rng, logfile=None)
        mon = UQMonitor(dyn, policies, out_dir=out, oracle=oracle, rewind=rewind,
                        watch=watched_statistics(calc),
                        temperature_K=temperature_K, max_retries=max_retries,
                        max_force=max_force, seed=seed, label=str(atoms.info.get("label", "md")))
        dyn.attach(mon, interval=interval)
        bar = tqdm(total=steps, desc="md", disable=not progress)
        dyn.attach(lambda: bar.update(1), interval=1)
        try:
            mon.run(steps=steps)
        finally:
            bar.close()
        return mon.summary()  # also in out/summary.json


def oracle_from_name(name: str | None) -> Calculator | None:
    """'emt' -> ASE EMT; None -> None."""
    if name is None:
        return None
    if name.lower() == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    raise ValueError(f"unknown oracle {name!r} (available: emt)")


