"""``ltau-md demo``: the whole journey on built-in EMT data, no files needed.

1. generate an OC20-style adsorbate/slab data set with EMT as the reference (ltau_md.is2rs),
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ._io import prepare_output_dir, write_json_atomic, write_text_atomic

TYPE_NAMES = ("H", "C", "O", "Cu", "Pt")


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"[ltau-md demo] {msg}", flush=True)


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"n_train": 4, "n_val": 2, "epochs": 2, "features": 8, "members": 2,
                "md_steps": 40, "relax_n": 1, "relax_steps": 25, "workers": 0}
    return {"n_train": 60, "n_val": 10, "epochs": 30, "features": 16, "members": 2,
            "md_steps": 200, "relax_n": 3, "relax_steps": 150, "workers": 2}


def run_demo(out: str | os.PathLike = "ltau_demo", *, quick: bool = False, seed: int = 0,
             progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Run the demo into ``out`` and return the report dict (also ``out/report.json``).

    ``out`` must be new or empty; ``overwrite=True`` replaces an earlier demo output there (a
    foreign non-empty directory is always refused: OutputExistsError)."""
    from ase.io import read

    from .is2rs.generate import GeneratorConfig, generate_benchmark
    from .is2rs.runner import run_is2rs
    from .nequip import fit_from_runs, load_calculator, toy
    from .simulate import policies_from_args, relax_many, run_md

    t_start = time.perf_counter()
    out = prepare_output_dir(Path(out).resolve(), "demo", overwrite)
    z = _sizes(quick)
    timings: dict[str, float] = {}

    # 1. data -------------------------------------------------------------------------------
    t = time.perf_counter()
    _say("1/5 generating EMT adsorbate/slab data (reference relaxations)...", progress)
    cfg = GeneratorConfig(metals=("Cu", "Pt"), facets=("fcc111", "fcc100"),
                          id_adsorbates=("H", "O", "C", "OH", "CO"),
                          ood_adsorbates=("COH", "CHO"), ood_pairs=(("Cu", "Pt"),))
    data = out / "data"
    generate_benchmark(data, seed=seed, n_train=z["n_train"], n_val=z["n_val"], cfg=cfg,
                       splits=("train", "val_id", "val_ood_ads", "val_ood_cat"),
                       progress=progress)
    timings["data_s"] = time.perf_counter() - t

    # 2. train ------------------------------------------------------------------------------
    t = time.perf_counter()
    _say(f"2/5 training a {z['members']}-member NequIP ensemble with error logging...", progress)
    runs, configs = [], []
    for m in range(z["members"]):
        c = toy.tiny_config(data / "train" / "frames.extxyz", data / "val_id" / "frames.extxyz",
                            type_names=TYPE_NAMES, seed=seed + m + 1, max_epochs=z["epochs"],
                            num_features=z["features"], r_max=4.5,
                            loggers=({"mode": "eval", "member": m},))
        configs.append(toy.write_config(c, out / "configs" / f"member{m}.yaml"))
        runs.append(out / "runs" / f"member{m}")
    with ThreadPoolExecutor(z["members"]) as pool:
        list(pool.map(lambda cr: toy.nequip_train(cr[0], cr[1], threads=1,
                                                  timeout=3600), zip(configs, runs, strict=True)))
    shutil.rmtree(out / "outputs", ignore_errors=True)
    timings["train_s"] = time.perf_counter() - t

    # 3. fit --------------------------------------------------------------------------------
    t = time.perf_counter()
    _say("3/5 fitting the LTAU estimator...", progress)
    model = runs[0] / "last.ckpt"
    est_dir = out / "estimator"
    # the second half of the logged epochs: the early, far-from-converged epochs would make
    # every atom look uncertain in so short a training
    # the in-domain alarm statistics (Threshold(alarm_rate=...), md --stop-rate) come from the
    # training runs' validation set
    est = fit_from_runs(runs, model, est_dir, k=10, window=(z["epochs"] // 2, None),
                        validation=data / "val_id" / "frames.extxyz", progress=progress)
    timings["fit_s"] = time.perf_counter() - t
    factory = functools.partial(load_calculator, model=str(model),
                                estimator=str(est_dir))

    # 4a. relax -----------------------------------------------------------------------------
    t = time.perf_counter()
    _say("4/5 (a) relaxing structures with uncertainty logging...", progress)
    initial = read(data / "val_id" / "initial.extxyz", index=":")[: z["relax_n"]]
    relax_rows = relax_many(initial, factory, out / "relax", fmax=0.05,
                            steps=z["relax_steps"], progress=progress)
    timings["relax_s"] = time.perf_counter() - t

    # 4b. MD: halt on high uncertainty, and resample with the EMT oracle ---------------------
    t = time.perf_counter()
    _say("4/5 (b) MD halted on high uncertainty, and MD resampling with the EMT oracle...",
         progress)
    start = read(data / "val_id" / "relaxed.extxyz", index=0)
    # in-domain level: the highest uncertainty of the relaxed (end-point) in-domain structures;
    # the start of a relaxation is far from the data and often sits at 1. The stop threshold
    # lies between two values of the grid of possible values (multiples of 1/k, k=10 here).
    finals = [r["final"] for r in relax_rows if r["final"] is not None]
    in_domain = float(max(finals)) if finals else 0.5
    stop_thr = min(in_domain + 0.05, 0.95)
    resample_thr = max(0.9 * in_domain, 0.05)
    md_stop = run_md(start, factory(), out / "md_stop", temperature_K=2500.0,
                     timestep_fs=2.0, steps=z["md_steps"],
                     policies=policies_from_args(stop_above=stop_thr, patience=2),
                     progress=progress, seed=seed)
    from ase.calculators.emt import EMT

    md_rs = run_md(start, factory(), out / "md_resample", temperature_K=800.0,
                   timestep_fs=2.0, steps=z["md_steps"],
                   policies=policies_from_args(resample_above=resample_thr,
                                               hysteresis=0.05),
                   oracle=EMT(), progress=progress, seed=seed + 1)
    timings["md_s"] = time.perf_counter() - t

    # 4c. IS2RS -----------------------------------------------------------------------------
    t = time.perf_counter()
    _say("4/5 (c) IS2RS campaign: does the uncertainty predict the relaxation RMSD?",
         progress)
    is2rs = run_is2rs(data, factory, out / "is2rs",
                      splits=["val_id", "val_ood_ads", "val_ood_cat"], fmax=0.05,
                      steps=z["relax_steps"],
                      n_workers=z["workers"], progress=progress)
    timings["is2rs_s"] = time.perf_counter() - t

    # 5. report -----------------------------------------------------------------------------
    _say("5/5 writing the report...", progress)
    figures = _figures(out, est, {"md_stop": stop_thr, "md_resample": resample_thr})
    timings["total_s"] = time.perf_counter() - t_start
    report = {
        "out": str(out), "quick": quick, "sizes": z, "timings": timings,
        "estimator": {"n_train_atoms": est.n_train_, "members": est.summary_.n_members,
                      "atol_eV_per_A": est.atol_, "k": est.k, "descriptor_dim": est.dim_},
        "relax": relax_rows,
        "md_stop": {"threshold": stop_thr, **_md_brief(md_stop)},
        "md_resample": {"threshold": resample_thr, **_md_brief(md_rs),
                        "n_labelled": _count_frames(out / "md_resample" / "labelled.extxyz")},
        "is2rs": {name: _split_brief(e) for name, e in is2rs["splits"].items()},
        "figures": figures,
    }
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.html", _html(report))
    _say(f"done in {timings['total_s']:.0f} s. Open {out / 'report.html'} "
         f"(all files are under {out}).", progress)
    return report


def _count_frames(path: Path) -> int:
    if not path.exists():
        return 0
    from ase.io import read

    return len(read(path, index=":"))


def _md_brief(s: dict) -> dict:
    stop = s.get("stopped") or {}
    return {"n_steps_observed": s["n_observed"], "initial": s.get("initial"),
            "max": s.get("max"), "max_step": s.get("max_step"), "final": s.get("final"),
            "stopped_step": stop.get("step"), "stop_reason": stop.get("reason"),
            "n_resample": s["n_events"]["resample"]}


def _split_brief(e: dict) -> dict:
    return {"n": e.get("n"), "adwt": e.get("adwt"), "rmsd_mean": e.get("rmsd_mean"),
            "spearman_max_uq_rmsd": (e.get("spearman") or {}).get("uq_max"),
            "auroc_max_uq": (e.get("auroc") or {}).get("uq_max")}


def _figures(out: Path, est: Any, thresholds: dict[str, float]) -> dict[str, str]:
    """Cartography of the training atoms and the MD uncertainty traces (PNG)."""
    from matplotlib.figure import Figure

    from .calibration import cartography_from
    from .plots import plot_cartography, save_figure

    figs = {}
    plot_cartography(cartography_from(est), out / "cartography.png")
    figs["cartography"] = "cartography.png"
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for name, style in (("md_stop", "C3"), ("md_resample", "C0")):
        f = out / name / "steps.jsonl"
        if not f.exists():
            continue
        rows = [json.loads(x) for x in f.read_text().splitlines()]
        ax.plot([r.get("time_fs", r["step"]) for r in rows],
                [np.nan if r["max_uncertainty"] is None else r["max_uncertainty"] for r in rows],
                color=style, label=name.replace("_", " "))
        ev = [r for r in rows if r["events"]]
        ax.scatter([r.get("time_fs", r["step"]) for r in ev],
                   [r["max_uncertainty"] for r in ev], color=style, marker="x", zorder=3)
        ax.axhline(thresholds[name], color=style, ls="--", lw=0.8)
    ax.set_xlabel("time (fs)")
    ax.set_ylabel("max atom uncertainty (1 - p)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    ax.set_title("MD: max uncertainty per step (x = event, dashed = threshold)", fontsize=10)
    save_figure(fig, out / "md_uncertainty.png")
    figs["md_uncertainty"] = "md_uncertainty.png"
    if (out / "is2rs" / "uq_vs_rmsd.png").exists():
        figs["is2rs_uq_vs_rmsd"] = "is2rs/uq_vs_rmsd.png"
    return figs


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}"
    return html.escape("-" if x is None else str(x))


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(r: dict) -> str:
    is2rs_rows = [{"split": k, **v} for k, v in r["is2rs"].items()]
    md_rows = [{"run": "halt on uncertainty", **r["md_stop"]},
               {"run": "resample with EMT", **r["md_resample"]}]
    figs = "".join(f'<figure><img src="{html.escape(p)}" alt="{html.escape(k)}">'
                   f"<figcaption>{html.escape(k)}</figcaption></figure>"
                   for k, p in r["figures"].items())
    e = r["estimator"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>ltau-md demo</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
table{{border-collapse:collapse}} img{{max-width:100%}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style>
</head><body><h1>ltau-md demo report</h1>
<p>EMT adsorbate/slab data, a {e['members']}-member NequIP ensemble trained with per-atom error
logging, an LTAU estimator over {e['n_train_atoms']} training atoms (k={e['k']},
descriptor dim {e['descriptor_dim']}, atol = {e['atol_eV_per_A']:.4g} eV/&Aring;).
Total time {r['timings']['total_s']:.0f} s.</p>
<h2>(a) Relaxations with uncertainty logging</h2>
{_table(r['relax'], ['label', 'n_observed', 'initial', 'max', 'max_step', 'mean', 'final',
                     'converged'])}
<h2>(b) MD</h2>
{_table(md_rows, ['run', 'threshold', 'n_steps_observed', 'initial', 'max', 'max_step',
                  'stopped_step', 'stop_reason', 'n_resample', 'n_labelled'])}
<h2>(c) IS2RS: uncertainty vs relaxation RMSD</h2>
{_table(is2rs_rows, ['split', 'n', 'adwt', 'rmsd_mean', 'spearman_max_uq_rmsd',
                     'auroc_max_uq'])}
<h2>Figures</h2>{figs}
<h2>Timings (s)</h2>
{_table([{k: v for k, v in r['timings'].items()}], list(r['timings']))}
</body></html>
"""
