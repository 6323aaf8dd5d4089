"""The demo pipeline behind ``ltau-md demo`` (see :mod:`ltau_md.workflows.demo`).

:func:`run_demo` generates the EMT data, trains the NequIP ensemble, fits the LTAU estimator,
runs the relaxations, the MD runs and the IS2RS campaign, and writes ``report.json`` and
``report.html`` (rendered by :mod:`ltau_md.workflows.demo._report`).
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ltau_md.core.files import output_dir, write_json_atomic, write_text_atomic
from ltau_md.workflows.demo._report import (
    STATISTIC,
    _read_steps,
    human_duration,
    render_report,
    write_figures,
)

TYPE_NAMES = ("H", "C", "O", "Cu", "Pt")


class _Progress:
    """Stage lines with the elapsed time on stdout (nothing when ``on`` is false)."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, msg: str) -> None:
        if self.on:
            print(f"[ltau-md demo {human_duration(self.elapsed()):>10}] {msg}", flush=True)


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"[ltau-md demo] {msg}", flush=True)


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"n_train": 4, "n_val": 2, "epochs": 2, "features": 8, "members": 2,
                "md_steps": 40, "relax_n": 1, "relax_steps": 25, "workers": 0}
    return {"n_train": 60, "n_val": 10, "epochs": 30, "features": 16, "members": 2,
            "md_steps": 200, "relax_n": 3, "relax_steps": 150, "workers": 2}


#: frames sampled per validation system: the in-domain frames behind the alarm thresholds
#: (10 systems x 10 = 100 frames resolve a 1 % alarm rate; 1/(n + 1) is the smallest rate)
VAL_FRAMES_PER_SYSTEM = 10
#: MD conditions: (temperature K, time step fs) of the halting and the resampling run
MD_STOP = {"temperature_K": 2500.0, "timestep_fs": 2.0}
MD_RESAMPLE = {"temperature_K": 800.0, "timestep_fs": 2.0}
MD_FRICTION = 0.01  # 1/fs, Langevin
STOP_RATE, RESAMPLE_RATE = 0.01, 0.05


def _epochs_logged(run: Path) -> int:
    return sum(1 for _ in (run / "ltau_log").glob("member_*/epoch_*.npy"))


def _train_ensemble(configs: list[Path], runs: list[Path], epochs: int, logs: Path,
                    say: _Progress, *, timeout: float = 3600.0, poll: float = 1.0) -> None:
    """Run ``nequip-train`` for every member in parallel (one thread each), printing a line
    each time every member has finished one more epoch (read from the LTAU error log's epoch
    files in each run directory), with the elapsed time and an estimate of the time left.
    The children's output goes to ``logs/memberN.log``; a failed member raises RuntimeError
    with the tail of its log; the children are killed on any exception (Ctrl-C included)."""
    import subprocess

    from ltau_md.integrations.nequip import toy

    logs.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[subprocess.Popen, Any, Path]] = []
    t0 = time.perf_counter()
    try:
        for m, (cfg, run) in enumerate(zip(configs, runs, strict=True)):
            cmd, env = toy.nequip_train_command(cfg, run, threads=1)
            fh = open(logs / f"member{m}.log", "w")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL), fh, logs / f"member{m}.log"))
        shown, t_first = 0, 0.0
        while True:
            finished = all(p.poll() is not None for p, _, _ in procs)
            counts = [min(_epochs_logged(r), epochs) for r in runs]
            while min(counts) > shown:  # one line per epoch, also when several finished
                shown += 1
                el = time.perf_counter() - t0
                if shown == 1:  # the first epoch includes nequip-train's start-up
                    t_first = el
                # time left from the epochs after the first (all members run in parallel)
                left = (el - t_first) / (shown - 1) * (epochs - shown) if shown > 1 else None
                eta = "" if shown == epochs else (
                    f", about {human_duration(left)} left" if left is not None
                    else ", estimating the time left")
                say(f"    training: epoch {shown}/{epochs} done by all {len(runs)} members "
                    f"({human_duration(el)} in training{eta})")
            if finished:
                break
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"nequip-train did not finish within {human_duration(timeout)}")
            time.sleep(poll)
        for m, (p, fh, log) in enumerate(procs):
            fh.flush()
            if p.returncode != 0:
                tail = log.read_text(errors="replace")[-6000:]
                raise RuntimeError(f"nequip-train of member {m} failed (exit {p.returncode}; "
                                   f"full output in {log}):\n{tail}")
    finally:
        for p, fh, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            fh.close()


def _alarm_policy(est: Any, action: str, rate: float, **kw: Any) -> tuple[Any, dict]:
    """An alarm-rate Threshold of the demo's statistic (:data:`STATISTIC`, the default alarm)
    at ``rate``, or at the smallest rate the in-domain frames resolve, 1/(n + 1), when
    ``rate`` is below it; and a note on where it comes from."""
    from ltau_md.core.metrics import alarm_threshold, parse_stat_key
    from ltau_md.core.observers import Threshold

    entry = est.alarm_statistics_.get(STATISTIC)
    if entry is None:
        raise RuntimeError(f"the demo's estimator holds no in-domain {STATISTIC} statistic "
                           f"(has {sorted(est.alarm_statistics_)})")
    n = int(entry.get("n_frames", len(entry["values"])))
    smallest = 1.0 / (n + 1)
    used = rate if rate >= smallest else smallest
    signal, on, _ = parse_stat_key(STATISTIC)
    pol = Threshold(action, signal=signal, on=on, alarm_rate=used, **kw)
    info = {"action": action, "statistic": STATISTIC, "requested_alarm_rate": rate,
            "alarm_rate": used, "n_in_domain_frames": n, "source": entry.get("source"),
            "threshold": alarm_threshold(entry["values"], used),
            "patience": pol.patience, "hysteresis": pol.hysteresis,
            "rate_raised": used != rate,
            "in_domain_median": float(np.median(entry["values"]))}
    return pol, info


def run_demo(out: str | os.PathLike = "ltau_demo", *, quick: bool = False, seed: int = 0,
             progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Run the demo into ``out`` and return the report dict (also ``out/report.json``).

    ``out`` must be new or empty; ``overwrite=True`` replaces an earlier demo output there (a
    foreign non-empty directory is always refused: OutputExistsError; one another live run is
    writing: OutputBusyError). ``progress`` prints a
    line per stage and per training epoch with the elapsed time, and the progress bars of the
    relaxations, MD and IS2RS campaign."""
    t_start = time.perf_counter()
    with output_dir(Path(out).resolve(), "demo", overwrite) as out_dir:
        return _demo(out_dir, quick, seed, _Progress(progress), progress, t_start)


def _demo(out: Path, quick: bool, seed: int, say: _Progress, progress: bool,
          t_start: float) -> dict[str, Any]:
    from ase.io import read

    from ltau_md.integrations.nequip import fit_from_runs, load_calculator, toy
    from ltau_md.workflows.is2rs.generate import GeneratorConfig, generate_benchmark
    from ltau_md.workflows.is2rs.runner import run_is2rs
    from ltau_md.workflows.simulate import relax_many, run_md

    z = _sizes(quick)
    timings: dict[str, float] = {}

    # 1. data -------------------------------------------------------------------------------
    t = time.perf_counter()
    say("1/5 generating EMT adsorbate/slab data (reference relaxations)...")
    cfg = GeneratorConfig(metals=("Cu", "Pt"), facets=("fcc111", "fcc100"), ood_facets=(),
                          reject_dissociated=False,
                          id_adsorbates=("H", "O", "C", "OH", "CO"),
                          ood_adsorbates=("COH", "CHO"), ood_pairs=(("Cu", "Pt"),),
                          val_frames_per_system=VAL_FRAMES_PER_SYSTEM)
    data = out / "data"
    generate_benchmark(data, seed=seed, n_train=z["n_train"], n_val=z["n_val"], cfg=cfg,
                       splits=("train", "val_id", "val_ood_ads", "val_ood_cat"),
                       progress=progress)
    timings["data_s"] = time.perf_counter() - t
    say(f"    data ready ({human_duration(timings['data_s'])})")

    # 2. train ------------------------------------------------------------------------------
    t = time.perf_counter()
    say(f"2/5 training a {z['members']}-member NequIP ensemble with error logging "
        f"({z['epochs']} epochs each, in parallel; the slowest step)...")
    runs, configs = [], []
    for m in range(z["members"]):
        c = toy.tiny_config(data / "train" / "frames.extxyz", data / "val_id" / "frames.extxyz",
                            type_names=TYPE_NAMES, seed=seed + m + 1, max_epochs=z["epochs"],
                            num_features=z["features"], r_max=4.5,
                            loggers=({"mode": "eval", "member": m},))
        configs.append(toy.write_config(c, out / "configs" / f"member{m}.yaml"))
        runs.append(out / "runs" / f"member{m}")
    _train_ensemble(configs, runs, z["epochs"], out / "logs", say)
    shutil.rmtree(out / "outputs", ignore_errors=True)
    timings["train_s"] = time.perf_counter() - t
    say(f"    training done ({human_duration(timings['train_s'])})")

    # 3. fit --------------------------------------------------------------------------------
    t = time.perf_counter()
    say("3/5 fitting the LTAU estimator...")
    model = runs[0] / "last.ckpt"
    est_dir = out / "estimator"
    # the second half of the logged epochs: the early, far-from-converged epochs would make
    # every atom look uncertain in so short a training
    # the in-domain alarm statistics (Threshold(alarm_rate=...), md --stop-rate) come from the
    # training runs' validation set (held-out in-domain frames)
    est = fit_from_runs(runs, model, est_dir, k=10, window=(z["epochs"] // 2, None),
                        validation=data / "val_id" / "frames.extxyz", progress=progress)
    timings["fit_s"] = time.perf_counter() - t
    say(f"    estimator fitted ({human_duration(timings['fit_s'])})")
    factory = functools.partial(load_calculator, model=str(model),
                                estimator=str(est_dir))

    # 4a. relax -----------------------------------------------------------------------------
    t = time.perf_counter()
    say("4/5 (a) relaxing structures with uncertainty logging...")
    initial = read(data / "val_id" / "initial.extxyz", index=":")[: z["relax_n"]]
    for a in initial:
        a.info["label"] = str(a.info.get("sid", ""))
    relax_rows = relax_many(initial, factory, out / "relax",
                            steps=z["relax_steps"], progress=progress)
    for i, (a, row) in enumerate(zip(initial, relax_rows, strict=True)):
        row["system"] = _system_words(a.info)
        row["alarm_max"] = _signal_max(out / "relax" / f"{i:04d}" / "summary.json")
    relax_alarm = _alarm_policy(est, "warn", STOP_RATE)[1]
    timings["relax_s"] = time.perf_counter() - t

    # 4b. MD: halt on the default alarm, and resample with the EMT oracle ------------------
    t = time.perf_counter()
    say("4/5 (b) MD halted by the default alarm, and MD resampling with the EMT oracle...")
    start = read(data / "val_id" / "relaxed.extxyz", index=0)
    start.info["label"] = str(start.info.get("sid", "md"))
    stop_pol, stop_info = _alarm_policy(est, "stop", STOP_RATE, patience=2)
    md_stop = run_md(start, factory(), out / "md_stop", steps=z["md_steps"],
                     friction=MD_FRICTION, policies=[stop_pol], progress=progress, seed=seed,
                     **MD_STOP)
    from ase.calculators.emt import EMT

    # re-armed once the alarm statistic falls 10 % below the threshold
    rs_thr = _alarm_policy(est, "resample", RESAMPLE_RATE)[1]["threshold"]
    rs_pol, rs_info = _alarm_policy(est, "resample", RESAMPLE_RATE,
                                    hysteresis=0.1 * rs_thr)
    md_rs = run_md(start, factory(), out / "md_resample", steps=z["md_steps"],
                   friction=MD_FRICTION, policies=[rs_pol], oracle=EMT(), progress=progress,
                   seed=seed + 1, **MD_RESAMPLE)
    timings["md_s"] = time.perf_counter() - t

    # 4c. IS2RS -----------------------------------------------------------------------------
    t = time.perf_counter()
    say("4/5 (c) IS2RS campaign: does the uncertainty predict the relaxation RMSD?")
    is2rs = run_is2rs(data, factory, out / "is2rs",
                      splits=["val_id", "val_ood_ads", "val_ood_cat"],
                      steps=z["relax_steps"],
                      n_workers=z["workers"], progress=progress)
    timings["is2rs_s"] = time.perf_counter() - t

    # 5. report -----------------------------------------------------------------------------
    t = time.perf_counter()
    say("5/5 writing the report...")
    md = {"md_stop": {**stop_info, **_md_brief(md_stop), **MD_STOP,
                      "threshold": stop_pol.threshold,
                      "policy": md_stop["policies"][0]},
          "md_resample": {**rs_info, **_md_brief(md_rs), **MD_RESAMPLE,
                          "threshold": rs_pol.threshold, "policy": md_rs["policies"][0],
                          "n_labelled": _count_frames(out / "md_resample" / "labelled.extxyz")}}
    for name, v in md.items():
        v.update(steps=z["md_steps"], friction_per_fs=MD_FRICTION, start=start.info["label"],
                 start_system=_system_words(start.info),
                 n_above=_steps_above(out / name / "steps.jsonl", v["threshold"]))
    figures = write_figures(out, est, md)
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start
    report = {
        "out": str(out), "quick": quick, "sizes": z, "timings": timings,
        "estimator": {"n_train_atoms": est.n_train_, "members": est.summary_.n_members,
                      "atol_eV_per_A": est.atol_, "k": est.k, "descriptor_dim": est.dim_,
                      "epoch_window": [z["epochs"] // 2, z["epochs"]]},
        "relax": relax_rows,
        "relax_alarm": relax_alarm,
        **md,
        "is2rs": {name: _split_brief(e) for name, e in is2rs["splits"].items()},
        "is2rs_rmsd_threshold": is2rs.get("rmsd_threshold", 0.5),
        "figures": figures,
    }
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.html", render_report(report))
    say(f"done in {human_duration(timings['total_s'])}. Open {out / 'report.html'} "
        f"(all files are under {out}).")
    return report


def _system_words(info: dict) -> str:
    ads, cat, facet = info.get("adsorbate"), info.get("catalyst"), info.get("facet")
    if not (ads and cat):
        return ""
    f = str(facet or "").replace("fcc", "")
    return f"{ads} on {cat}({f})" if f else f"{ads} on {cat}"


def _signal_max(summary: Path) -> float | None:
    """The highest frame maximum of the demo's alarm signal along a monitored run."""
    import json

    try:
        signals = json.loads(summary.read_text()).get("signals") or {}
    except (OSError, ValueError):
        return None
    return (signals.get(STATISTIC) or {}).get("max")


def _steps_above(steps: Path, threshold: float) -> int:
    """Observed steps of a run whose alarm signal (frame maximum) exceeds ``threshold``."""
    return sum(1 for r in _read_steps(steps) if (r.get(STATISTIC) or 0.0) > threshold)


def _count_frames(path: Path) -> int:
    if not path.exists():
        return 0
    from ase.io import read

    return len(read(path, index=":"))


def _md_brief(s: dict) -> dict:
    stop = s.get("stopped") or {}
    al = (s.get("signals") or {}).get(STATISTIC) or {}
    return {"n_steps_observed": s["n_observed"], "initial": s.get("initial"),
            "max": s.get("max"), "max_step": s.get("max_step"), "final": s.get("final"),
            "alarm_initial": al.get("initial"), "alarm_max": al.get("max"),
            "alarm_max_step": al.get("max_step"), "alarm_final": al.get("final"),
            "status": s.get("status"),
            "stopped_step": stop.get("step"), "stopped_time_fs": stop.get("time_fs"),
            "stop_reason": stop.get("reason"),
            "n_resample": s["n_events"]["resample"]}


def _max_uq() -> str:
    """The IS2RS statistic the demo reports: ``uncertainty:max/max``, the highest per-step max
    uncertainty along a relaxation."""
    from ltau_md.workflows.is2rs._results import UQ, series_key

    return series_key(UQ, "max")


def _ci(e: dict, kind: str, target: str, stat: str | None = None) -> list | None:
    c = ((e.get(kind) or {}).get(target) or {}).get(stat or _max_uq()) or {}
    lo, hi = c.get("lo"), c.get("hi")
    return [lo, hi] if lo is not None and hi is not None else None


def _ads_novelty() -> str:
    """The IS2RS statistic the docs recommend: ``novelty:max@tags=2/final``, the novelty of the
    adsorbate atoms at the model's end point."""
    from ltau_md.workflows.is2rs._results import NOVELTY_ADS, series_key

    return series_key(NOVELTY_ADS, "final")


def _split_brief(e: dict) -> dict:
    ads = _ads_novelty()
    return {"n": e.get("n"), "adwt": e.get("adwt"), "rmsd_mean": e.get("rmsd_mean"),
            "rmsd_median": e.get("rmsd_median"),
            "failure_rate": e.get("failure_rate"),
            "spearman_ads_novelty": (e.get("spearman") or {}).get(ads),
            "spearman_ads_novelty_ci": _ci(e, "spearman_ci", "rmsd", ads),
            "auroc_ads_novelty": (e.get("auroc") or {}).get(ads),
            "auroc_ads_novelty_ci": _ci(e, "auroc_ci", "rmsd", ads),
            "spearman_max_uq_rmsd": (e.get("spearman") or {}).get(_max_uq()),
            "spearman_ci": _ci(e, "spearman_ci", "rmsd"),
            "auroc_max_uq": (e.get("auroc") or {}).get(_max_uq()),
            "auroc_ci": _ci(e, "auroc_ci", "rmsd")}
