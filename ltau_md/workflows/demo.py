"""``ltau-md demo``: the whole journey on built-in EMT data, no files needed.

1. generate an OC20-style adsorbate/slab data set with EMT as the reference
(ltau_md.workflows.is2rs),
2. train a small NequIP ensemble with the LTAU error-logging callback (real ``nequip-train``),
3. fit the LTAU estimator (``fit_from_runs``),
4. (a) relax structures with per-step uncertainty logging,
   (b) run MD that is halted when the uncertainty crosses a threshold, and one that resamples
       with the EMT oracle,
   (c) run a small IS2RS campaign relating the uncertainty to the relaxation RMSD,
5. write ``report.html`` with the plots and a summary table (and ``report.json``).
"""

from __future__ import annotations

import functools
import html
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ltau_md.core._io import prepare_output_dir, write_json_atomic, write_text_atomic

__all__ = [
    "MD_FRICTION",
    "MD_RESAMPLE",
    "MD_STOP",
    "RUN_NAMES",
    "SPLIT_NAMES",
    "SPLIT_WORDS",
    "STATISTIC",
    "TYPE_NAMES",
    "VAL_FRAMES_PER_SYSTEM",
    "run_demo",
]

TYPE_NAMES = ("H", "C", "O", "Cu", "Pt")


def _hms(seconds: float | None) -> str:
    """Human duration: "42 s", "2 min 05 s", "1 h 02 min"."""
    if seconds is None or not np.isfinite(seconds):
        return "-"
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class _Progress:
    """Stage lines with the elapsed time on stdout (nothing when ``on`` is false)."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, msg: str) -> None:
        if self.on:
            print(f"[ltau-md demo {_hms(self.elapsed()):>10}] {msg}", flush=True)


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
STATISTIC = "novelty:max"


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
                eta = "" if shown == epochs else (
                    f", about {_hms((el - t_first) / (shown - 1) * (epochs - shown))} left"
                    if shown > 1 else ", estimating the time left")
                say(f"    training: epoch {shown}/{epochs} done by all {len(runs)} members "
                    f"({_hms(el)} in training{eta})")
            if finished:
                break
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"nequip-train did not finish within {_hms(timeout)}")
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
    """A novelty:max alarm-rate Threshold at ``rate``, or at the smallest rate the in-domain
    frames resolve, 1/(n + 1), when ``rate`` is below it; and a note on where it comes from."""
    from ltau_md.core.metrics import alarm_threshold
    from ltau_md.core.observers import Threshold

    entry = est.calibration_.thresholds[STATISTIC]
    n = int(entry.get("n_frames", len(entry["values"])))
    smallest = 1.0 / (n + 1)
    used = rate if rate >= smallest else smallest
    pol = Threshold(action, signal="novelty", on="max", alarm_rate=used, **kw)
    info = {"action": action, "statistic": STATISTIC, "requested_alarm_rate": rate,
            "alarm_rate": used, "n_in_domain_frames": n, "source": entry.get("source"),
            "threshold": alarm_threshold(entry["values"], used),
            "patience": pol.patience, "hysteresis": pol.hysteresis,
            "rate_raised": used != rate}
    return pol, info


def run_demo(out: str | os.PathLike = "ltau_demo", *, quick: bool = False, seed: int = 0,
             progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Run the demo into ``out`` and return the report dict (also ``out/report.json``).

    ``out`` must be new or empty; ``overwrite=True`` replaces an earlier demo output there (a
    foreign non-empty directory is always refused: OutputExistsError). ``progress`` prints a
    line per stage and per training epoch with the elapsed time, and the progress bars of the
    relaxations, MD and IS2RS campaign."""
    from ase.io import read

    from ltau_md.integrations.nequip import fit_from_runs, load_calculator, toy
    from ltau_md.workflows.is2rs.generate import GeneratorConfig, generate_benchmark
    from ltau_md.workflows.is2rs.runner import run_is2rs
    from ltau_md.workflows.simulate import relax_many, run_md

    say = _Progress(progress)
    t_start = time.perf_counter()
    out = prepare_output_dir(Path(out).resolve(), "demo", overwrite)
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
    say(f"    data ready ({_hms(timings['data_s'])})")

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
    say(f"    training done ({_hms(timings['train_s'])})")

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
    say(f"    estimator fitted ({_hms(timings['fit_s'])})")
    factory = functools.partial(load_calculator, model=str(model),
                                estimator=str(est_dir))

    # 4a. relax -----------------------------------------------------------------------------
    t = time.perf_counter()
    say("4/5 (a) relaxing structures with uncertainty logging...")
    initial = read(data / "val_id" / "initial.extxyz", index=":")[: z["relax_n"]]
    for a in initial:
        a.info["label"] = str(a.info.get("sid", ""))
    relax_rows = relax_many(initial, factory, out / "relax", fmax=0.05,
                            steps=z["relax_steps"], progress=progress)
    for a, row in zip(initial, relax_rows, strict=True):
        row["system"] = _system_words(a.info)
    timings["relax_s"] = time.perf_counter() - t

    # 4b. MD: halt on the novelty alarm, and resample with the EMT oracle -------------------
    t = time.perf_counter()
    say("4/5 (b) MD halted by the novelty alarm, and MD resampling with the EMT oracle...")
    start = read(data / "val_id" / "relaxed.extxyz", index=0)
    start.info["label"] = str(start.info.get("sid", "md"))
    stop_pol, stop_info = _alarm_policy(est, "stop", STOP_RATE, patience=2)
    md_stop = run_md(start, factory(), out / "md_stop", steps=z["md_steps"],
                     friction=MD_FRICTION, policies=[stop_pol], progress=progress, seed=seed,
                     **MD_STOP)
    from ase.calculators.emt import EMT

    # re-armed once the novelty falls 10 % below the threshold
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
                      splits=["val_id", "val_ood_ads", "val_ood_cat"], fmax=0.05,
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
    for v in md.values():
        v.update(steps=z["md_steps"], friction_per_fs=MD_FRICTION, start=start.info["label"],
                 start_system=_system_words(start.info))
    figures = _figures(out, est, md)
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start
    report = {
        "out": str(out), "quick": quick, "sizes": z, "timings": timings,
        "estimator": {"n_train_atoms": est.n_train_, "members": est.summary_.n_members,
                      "atol_eV_per_A": est.atol_, "k": est.k, "descriptor_dim": est.dim_,
                      "epoch_window": [z["epochs"] // 2, z["epochs"]]},
        "relax": relax_rows,
        **md,
        "is2rs": {name: _split_brief(e) for name, e in is2rs["splits"].items()},
        "is2rs_rmsd_threshold": is2rs.get("rmsd_threshold", 0.5),
        "figures": figures,
    }
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.html", _html(report))
    say(f"done in {_hms(timings['total_s'])}. Open {out / 'report.html'} "
        f"(all files are under {out}).")
    return report


def _system_words(info: dict) -> str:
    ads, cat, facet = info.get("adsorbate"), info.get("catalyst"), info.get("facet")
    if not (ads and cat):
        return ""
    f = str(facet or "").replace("fcc", "")
    return f"{ads} on {cat}({f})" if f else f"{ads} on {cat}"


def _count_frames(path: Path) -> int:
    if not path.exists():
        return 0
    from ase.io import read

    return len(read(path, index=":"))


def _md_brief(s: dict) -> dict:
    stop = s.get("stopped") or {}
    nov = (s.get("signals") or {}).get(STATISTIC) or {}
    return {"n_steps_observed": s["n_observed"], "initial": s.get("initial"),
            "max": s.get("max"), "max_step": s.get("max_step"), "final": s.get("final"),
            "novelty_initial": nov.get("initial"), "novelty_max": nov.get("max"),
            "novelty_max_step": nov.get("max_step"), "novelty_final": nov.get("final"),
            "status": s.get("status"),
            "stopped_step": stop.get("step"), "stopped_time_fs": stop.get("time_fs"),
            "stop_reason": stop.get("reason"),
            "n_resample": s["n_events"]["resample"]}


def _ci(e: dict, kind: str, target: str, stat: str = "uq_max") -> list | None:
    c = ((e.get(kind) or {}).get(target) or {}).get(stat) or {}
    lo, hi = c.get("lo"), c.get("hi")
    return [lo, hi] if lo is not None and hi is not None else None


def _split_brief(e: dict) -> dict:
    return {"n": e.get("n"), "adwt": e.get("adwt"), "rmsd_mean": e.get("rmsd_mean"),
            "rmsd_median": e.get("rmsd_median"),
            "failure_rate": e.get("failure_rate"),
            "spearman_max_uq_rmsd": (e.get("spearman") or {}).get("uq_max"),
            "spearman_ci": _ci(e, "spearman_ci", "rmsd"),
            "auroc_max_uq": (e.get("auroc") or {}).get("uq_max"),
            "auroc_ci": _ci(e, "auroc_ci", "rmsd")}


#: what each IS2RS row of the report is, in words
SPLIT_WORDS = {
    "val_id": "in-domain: new systems like the training ones (H, O, C, OH, CO on Cu, Pt)",
    "val_ood_ads": "new adsorbates (COH, CHO, never in training) on the known metals",
    "val_ood_cat": "known adsorbates on Cu-Pt alloys (held out of training)",
    "ood": "both out-of-domain sets pooled (new adsorbates + new alloys)",
    "all": "all three sets pooled (in-domain + both out-of-domain)",
}
SPLIT_NAMES = {"val_id": "in-domain", "val_ood_ads": "new adsorbates",
               "val_ood_cat": "new alloys", "ood": "out-of-domain (pooled)",
               "all": "all (pooled)"}
RUN_NAMES = {"md_stop": "halting run", "md_resample": "resampling run"}


def _read_steps(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _nan(x: Any) -> float:
    return np.nan if x is None else float(x)


def _figures(out: Path, est: Any, md: dict[str, dict]) -> dict[str, str]:
    """The report's PNGs: cartography (2-D histogram), MD traces, IS2RS uncertainty vs RMSD."""
    from ltau_md.core.confidence import cartography_from
    from ltau_md.core.plots import (
        plot_cartography_density,
        plot_md_traces,
        plot_rmsd_vs_uncertainty,
    )

    figs = {}
    plot_cartography_density(cartography_from(est), out / "cartography.png")
    figs["cartography"] = "cartography.png"
    runs = {}
    for name, color in (("md_stop", "C3"), ("md_resample", "C0")):
        rows = _read_steps(out / name / "steps.jsonl")
        if not rows:
            continue
        m = md[name]
        label = f"{RUN_NAMES[name]} ({m['temperature_K']:.0f} K)"
        act = m["action"]
        runs[label] = {
            "color": color,
            "time_fs": [r.get("time_fs", r["step"]) for r in rows],
            "uncertainty": [_nan(r.get("max_uncertainty")) for r in rows],
            "novelty": [_nan(r.get(STATISTIC)) for r in rows],
            "thresholds": [("novelty", m["threshold"],
                            f"{act} threshold {m['threshold']:.3g} "
                            f"({100 * m['alarm_rate']:.3g} % in-domain alarm rate)")],
            "events": [(r.get("time_fs", r["step"]), _nan(r.get(STATISTIC)), e)
                       for r in rows for e in r["events"]],
        }
    if runs:
        plot_md_traces(runs, out / "md_traces.png")
        figs["md_traces"] = "md_traces.png"
    res = [json.loads(f.read_text()) for f in sorted((out / "is2rs" / "results").glob("*.json"))]
    by_split: dict[str, tuple[list, list]] = {}
    for r in res:
        if r.get("status") != "ok":
            continue
        xs, ys = by_split.setdefault(SPLIT_NAMES.get(r["split"], r["split"]), ([], []))
        xs.append(_nan(r.get("uq_max")))
        ys.append(_nan(r.get("rmsd")))
    if by_split:
        plot_rmsd_vs_uncertainty(by_split, out / "is2rs_uq_vs_rmsd.png",
                        xlabel="max atom uncertainty over the relaxation (1 − p)")
        figs["is2rs_uq_vs_rmsd"] = "is2rs_uq_vs_rmsd.png"
    return figs


# ---------------------------------------------------------------------------------- HTML
def _num(x: Any, fmt: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        return format(float(x), fmt)
    return html.escape(str(x))


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Cells are HTML already (escaped by the caller)."""
    h = "".join(f"<th>{c}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>'


def _with_ci(v: Any, ci: list | None) -> str:
    if v is None:
        return "n/a"
    if ci and all(c is not None and np.isfinite(c) for c in ci):
        return f"{_num(v, '.2f')} [{_num(ci[0], '.2f')}, {_num(ci[1], '.2f')}]"
    return _num(v, ".2f")


def _auroc_cell(v: Any, ci: list | None) -> str:
    if v is None or not np.isfinite(v):
        return 'n/a<sup>b</sup>'
    cell = _with_ci(v, ci)
    if v < 0.5:
        return (f'<span class="flag">{cell} &#9888; worse than chance (below 0.5): the '
                "uncertainty ranks the failed relaxations lower than the good ones</span>")
    return cell


def _rate_words(m: dict) -> str:
    s = (f"{100 * m['alarm_rate']:.3g} % alarm rate &rarr; maximum atom novelty "
         f"&gt; <b>{_num(m['threshold'], '.4g')}</b>, the conformal quantile of "
         f"{m['n_in_domain_frames']} held-out in-domain frames (source: "
         f"{html.escape(str(m['source']))}")
    s += ", the training run's validation set)" if m["source"] == "validation" else ")"
    if m.get("rate_raised"):
        s += (f" <i>(asked for {100 * m['requested_alarm_rate']:.3g} %, but "
              f"{m['n_in_domain_frames']} frames resolve rates down to 1/(n+1) = "
              f"{100 * m['alarm_rate']:.3g} % only: the smallest resolvable rate was used)</i>")
    return s


def _stop_words(m: dict) -> str:
    if m["stopped_step"] is None:
        return f"ran all {m['steps']} steps"
    t = m.get("stopped_time_fs")
    when = f"step {m['stopped_step']}" + (f" ({t:.0f} fs)" if t is not None else "")
    reason = str(m.get("stop_reason") or "")
    if "novelty" in reason and m.get("action") == "stop":
        return (f"stopped at {when}: max atom novelty {_num(m.get('novelty_final'), '.3g')} "
                f"above {_num(m['threshold'], '.3g')} for {m['patience']} consecutive steps")
    return f"stopped at {when}: {html.escape(reason)}"


def _html(r: dict) -> str:
    e, tm, z = r["estimator"], r["timings"], r["sizes"]
    ms, mr = r["md_stop"], r["md_resample"]
    thr_rmsd = r.get("is2rs_rmsd_threshold", 0.5)
    relax_rows = [[f'<span class="id">{html.escape(str(x.get("label")))}</span>',
                   html.escape(x.get("system", "")),
                   _num(x.get("n_observed")), _num(x.get("initial"), ".2f"),
                   _num(x.get("max"), ".2f"), _num(x.get("mean"), ".2f"),
                   _num(x.get("final"), ".2f"), "yes" if x.get("converged") else "no"]
                  for x in r["relax"]]
    relax = _table(["structure", "system", "steps observed", "first step", "highest",
                    "mean", "last step", f"converged (max |F| &lt; 0.05 eV/&Aring; within "
                    f"{z['relax_steps']} steps)"], relax_rows)
    thr_rows = []
    for name, m in (("md_stop", ms), ("md_resample", mr)):
        hyst = (f"; re-armed once it falls below {_num(m['threshold'] - m['hysteresis'], '.4g')}"
                if m["hysteresis"] else "")
        thr_rows.append([RUN_NAMES[name], m["action"], _rate_words(m),
                         f"{m['patience']} consecutive step(s){hyst}"])
    thresholds = _table(["run", "action", "threshold and where it comes from",
                         "fires after"], thr_rows, "left")
    md_rows = []
    for name, m in (("md_stop", ms), ("md_resample", mr)):
        md_rows.append([
            RUN_NAMES[name], f"{m['temperature_K']:.0f} K, {m['timestep_fs']:g} fs",
            f"{_num(m['n_steps_observed'])} of {m['steps'] + 1}",
            f"{_num(m['novelty_initial'], '.3g')} &rarr; {_num(m['novelty_max'], '.3g')} "
            f"(step {_num(m['novelty_max_step'])})",
            f"{_num(m['initial'], '.2f')} &rarr; {_num(m['max'], '.2f')} "
            f"(step {_num(m['max_step'])})",
            _stop_words(m), _num(m["n_resample"]),
            _num(m["n_labelled"]) if "n_labelled" in m else "no oracle"])
    md_table = _table(["run", "conditions", "steps observed",
                       "max atom novelty: first &rarr; highest",
                       "max atom uncertainty: first &rarr; highest", "outcome",
                       "frames resampled", "labelled by EMT"], md_rows, "left")
    is_rows, flagged = [], []
    order = list(SPLIT_NAMES)
    for k, v in sorted(r["is2rs"].items(),
                       key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        if v.get("auroc_max_uq") is not None and v["auroc_max_uq"] < 0.5:
            ci = v.get("auroc_ci")
            below = bool(ci) and ci[1] is not None and ci[1] < 0.5
            flagged.append(f"{SPLIT_NAMES.get(k, k)} (" + (
                "its 95 % interval lies wholly below 0.5" if below else
                "its 95 % interval includes 0.5: with so few systems it is not "
                "distinguishable from chance") + ")")
        is_rows.append([f"<b>{html.escape(SPLIT_NAMES.get(k, k))}</b><br><small>"
                        f"{html.escape(SPLIT_WORDS.get(k, k))}</small>",
                        _num(v.get("n")), _num(v.get("adwt"), ".2f"),
                        _num(v.get("rmsd_mean"), ".2f"), _num(v.get("rmsd_median"), ".2f"),
                        _with_ci(v.get("spearman_max_uq_rmsd"), v.get("spearman_ci"))
                        if v.get("spearman_max_uq_rmsd") is not None else "n/a<sup>a</sup>",
                        _auroc_cell(v.get("auroc_max_uq"), v.get("auroc_ci"))])
    is2rs = _table(["set of systems", "systems", "ADwT", "mean RMSD (&Aring;)",
                    "median RMSD (&Aring;)",
                    "&rho;(max uncertainty, RMSD) [95 % CI]",
                    f"AUROC, RMSD &gt; {thr_rmsd:g} &Aring; [95 % CI]"], is_rows, "left")
    flag_p = ""
    if flagged:
        flag_p = ('<p class="flag">&#9888; AUROC below 0.5 (worse than chance) for: '
                  f"{html.escape('; '.join(flagged))}. There the maximum uncertainty does not "
                  "separate failed from successful relaxations.</p>")
    captions = {
        "cartography": (
            "Dataset cartography of the training atoms: each atom's mean confidence p over the "
            "ensemble members (y) against its spread over the members (x), averaged over the "
            "logged training epochs used for the fit. Colour: number of atoms per hexagonal "
            "cell (log scale); many atoms share the same point because p takes few distinct "
            "values. Dashed lines: the label thresholds; the legend gives the number and "
            "share of atoms per label."),
        "md_traces": (
            f"MD from the relaxed structure {html.escape(str(ms['start']))} "
            f"({html.escape(ms['start_system'])}): maximum atom uncertainty (top) and maximum "
            "atom novelty (bottom) per step. Red: the halting run at "
            f"{ms['temperature_K']:.0f} K; blue: the resampling run at "
            f"{mr['temperature_K']:.0f} K (Langevin, {ms['timestep_fs']:g} fs time step). "
            "Dashed lines: each run's novelty threshold from its in-domain alarm rate; "
            "markers: the steps where a policy fired (X: stop, circle: resample with an EMT "
            "label)."),
        "is2rs_uq_vs_rmsd": (
            "IS2RS campaign: the RMSD between each model-relaxed structure and its EMT "
            "reference relaxation against the highest maximum atom uncertainty met during the "
            f"model's relaxation. Left: one point per structure; the legend gives Spearman's "
            "rank correlation &rho; per set with its bootstrap 95 % interval (1,000 resamples "
            f"of the structures). Right: mean RMSD in equal-count bins of the uncertainty, "
            f"all sets pooled, with bootstrap 95 % intervals. Dashed line: {thr_rmsd:g} "
            "&Aring;, above which a relaxation counts as failed (the AUROC's label)."),
    }
    figs = "".join(
        f'<figure><img src="{html.escape(p)}" alt="{html.escape(captions.get(k, k)[:80])}">'
        f"<figcaption>Figure {i}. {captions.get(k, html.escape(k))}</figcaption></figure>"
        for i, (k, p) in enumerate(r["figures"].items(), 1))
    tnames = [("data_s", "generating EMT data"), ("train_s", "training the ensemble"),
              ("fit_s", "fitting the estimator"), ("relax_s", "relaxations"),
              ("md_s", "MD runs"), ("is2rs_s", "IS2RS campaign"), ("report_s", "report"),
              ("total_s", "total")]
    timing = _table(["step", "wall time"],
                    [[w, _hms(tm.get(k))] for k, w in tnames if k in tm], "left")
    quick = (" <b>Quick mode</b> (--quick): tiny sizes for a smoke test; the numbers are not "
             "meaningful." if r.get("quick") else "")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>ltau-md demo report</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:2em auto;line-height:1.4;
padding:0 1em}} table{{border-collapse:collapse;margin:0.5em 0}} img{{max-width:100%}}
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top}}
table.left td,table.left th{{text-align:left}} th{{background:#f2f2f2}}
figure{{margin:1.5em 0}} figcaption{{font-size:0.92em;color:#333}}
.flag{{color:#a00000;font-weight:bold}} .id{{white-space:nowrap}}
dt{{font-weight:bold}} small{{color:#555}}</style>
</head><body><h1>ltau-md demo report</h1>
<p>EMT adsorbate/slab data (generated here, EMT is the reference), a {e['members']}-member
NequIP ensemble ({z['features']} features, {z['epochs']} epochs) trained on {z['n_train']}
systems with per-atom force-error logging, and an LTAU estimator over {_num(e['n_train_atoms'])}
training atoms (k = {e['k']} nearest neighbours in a {e['descriptor_dim']}-dimensional latent
space; error tolerance {_num(e['atol_eV_per_A'], '.3g')} eV/&Aring;). Wall time
{_hms(tm['total_s'])}.{quick}</p>
<h2>Terms</h2><dl>
<dt>uncertainty</dt><dd>1 &minus; p, where p is LTAU's probability that the atom's force error
is within the tolerance: 0 = trusted, 1 = not trusted. Frame value: the maximum over the free
atoms.</dd>
<dt>novelty</dt><dd>an atom's mean latent distance to its k nearest training atoms divided by
the median of the training atoms of its element: about 1 or less in domain, larger far from the
training data.</dd>
<dt>alarm rate</dt><dd>the fraction of in-domain frames that would exceed a threshold; the
threshold is the conformal quantile of held-out in-domain frames (n frames resolve rates down
to 1/(n+1)).</dd>
<dt>&rho;</dt><dd>Spearman rank correlation (&minus;1 to 1; 0 = no monotonic relation).</dd>
<dt>AUROC</dt><dd>area under the ROC curve for telling failed relaxations (RMSD &gt;
{thr_rmsd:g} &Aring;) from good ones by the maximum uncertainty: 0.5 = chance, 1 = perfect,
below 0.5 = worse than chance.</dd>
<dt>RMSD</dt><dd>root-mean-square distance (&Aring;) of the free atoms between the model-relaxed
and the EMT-relaxed structure.</dd>
<dt>ADwT</dt><dd>OC20's average distance within threshold: the fraction of structures whose mean
atom distance to the reference is below t, averaged over t = 0.01&ndash;0.5 &Aring; (1 =
perfect).</dd>
<dt>CI</dt><dd>bootstrap 95 % confidence interval (1,000 resamples of the systems).</dd></dl>
<h2>(a) Relaxations with uncertainty logging</h2>
<p>In-domain held-out structures relaxed with BFGS using the model (max |F| &lt; 0.05
eV/&Aring;, at most {z['relax_steps']} steps). Columns: the frame's maximum atom uncertainty
at the first step, its highest value, its mean over the steps and at the last step.</p>
{relax}
<h2>(b) Molecular dynamics with the novelty alarm</h2>
<p>Both runs start from the EMT-relaxed structure {html.escape(str(ms['start']))}
({html.escape(ms['start_system'])}) with Maxwell&ndash;Boltzmann velocities, Langevin dynamics
(friction {ms['friction_per_fs']:g} fs<sup>&minus;1</sup>), {ms['timestep_fs']:g} fs time step,
at most {ms['steps']} steps. The halting run ({ms['temperature_K']:.0f} K) is driven far out of
the training domain and stops when the novelty alarm holds for {ms['patience']} consecutive
steps; the resampling run ({mr['temperature_K']:.0f} K) sends every frame that raises its alarm
to EMT for a label (new training data) and carries on. The training data hold relaxation frames
only, no thermal motion, so a rising novelty in MD is expected; the thresholds come from
held-out in-domain frames of the same kind (below).</p>
{thresholds}
{md_table}
<h2>(c) IS2RS: does the uncertainty predict the relaxation error?</h2>
<p>Initial structures relaxed with the model ({z['relax_steps']} steps at most) and compared
with their EMT relaxation. Rows: each set of held-out systems, and two pooled rows.
<sup>a</sup> n/a: fewer than 3 systems or a constant column.
<sup>b</sup> n/a: all systems of the set on one side of {thr_rmsd:g} &Aring; (only one class),
so no AUROC is defined.</p>
{is2rs}
{flag_p}
<h2>Figures</h2>{figs}
<h2>Wall times</h2>
{timing}
</body></html>
"""
