"""The demo's report: its figures (PNGs) and ``report.html``.

The page skeleton and its style sheet are ``report_template.html`` next to this module, a
:class:`string.Template` whose ``${name}`` placeholders :func:`render_report` fills with the tables,
figures and numbers of the report dict that :func:`ltau_md.workflows.demo.run_demo` returns.
"""

from __future__ import annotations

import functools
import html
import json
import string
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ltau_md.core.calibration import DEFAULT_ALARM

#: the frame statistic the demo's alarms watch and its report plots: the default alarm
STATISTIC = DEFAULT_ALARM
#: the alarm statistic in a few words (the y label of the MD figure's bottom panel)
ALARM_LABEL = "alarm score\n(−log in-domain tail probability)"


def human_duration(seconds: float | None) -> str:
    """Human duration: "42 s", "2 min 05 s", "1 h 02 min"."""
    if seconds is None or not np.isfinite(seconds):
        return "-"
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


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


def write_figures(out: Path, est: Any, md: dict[str, dict]) -> dict[str, str]:
    """The report's PNGs: cartography (2-D histogram), MD traces, IS2RS uncertainty vs RMSD."""
    from ltau_md.core.confidence import cartography_from
    from ltau_md.core.plots import (
        plot_cartography_density,
        plot_md_traces,
        plot_rmsd_vs_uncertainty,
        save_figure,
    )

    figs = {}
    save_figure(plot_cartography_density(cartography_from(est)), out / "cartography.png")
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
            "uncertainty": [_nan(r.get("uncertainty:max")) for r in rows],
            "alarm": [_nan(r.get(STATISTIC)) for r in rows],
            "thresholds": [("alarm", m["threshold"],
                            f"{act} threshold {m['threshold']:.3g} "
                            f"({100 * m['alarm_rate']:.3g} % in-domain alarm rate)")],
            "events": [(r.get("time_fs", r["step"]), _nan(r.get(STATISTIC)), e)
                       for r in rows for e in r["events"]],
        }
    if runs:
        save_figure(plot_md_traces(runs, alarm="alarm", alarm_label=ALARM_LABEL),
                    out / "md_traces.png")
        figs["md_traces"] = "md_traces.png"
    from ltau_md.workflows.is2rs._results import UQ, series_key

    max_uq = series_key(UQ, "max")  # the highest per-step max uncertainty of a relaxation
    res = [json.loads(f.read_text()) for f in sorted((out / "is2rs" / "results").glob("*.json"))]
    by_split: dict[str, tuple[list, list]] = {}
    for r in res:
        if r.get("status") != "ok":
            continue
        xs, ys = by_split.setdefault(SPLIT_NAMES.get(r["split"], r["split"]), ([], []))
        xs.append(_nan(r.get(max_uq)))
        ys.append(_nan(r.get("rmsd")))
    if by_split:
        fig = plot_rmsd_vs_uncertainty(
            by_split, xlabel="max atom uncertainty over the relaxation (1 − p)")
        save_figure(fig, out / "is2rs_uq_vs_rmsd.png")
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
    s = (f"{100 * m['alarm_rate']:.3g} % alarm rate &rarr; alarm score "
         f"&gt; <b>{_num(m['threshold'], '.4g')}</b>, the conformal quantile of "
         f"{m['n_in_domain_frames']} held-out in-domain frames (source: "
         f"{html.escape(str(m['source']))}")
    s += ", the training run's validation set)" if m["source"] == "validation" else ")"
    if m.get("in_domain_median") is not None:
        s += f"; the median in-domain frame's score is {_num(m['in_domain_median'], '.3g')}"
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
    if m.get("action") == "stop" and str(m.get("statistic", "")).split(":")[0] in reason:
        return (f"stopped at {when}: alarm score {_num(m.get('alarm_final'), '.3g')} "
                f"above {_num(m['threshold'], '.3g')} for {m['patience']} consecutive steps")
    return f"stopped at {when}: {html.escape(reason)}"


def _rho_cell(v: Any, ci: list | None) -> str:
    return _with_ci(v, ci) if v is not None else "n/a<sup>a</sup>"


def _alarm_cell(v: Any, alarm: dict | None) -> str:
    """A relaxation's highest alarm score, marked when above the in-domain 1 % threshold."""
    if v is None:
        return "n/a"
    cell = _num(v, ".3g") if abs(v) < 1000 else f"{v:,.0f}"
    if alarm and alarm.get("threshold") is not None and v > alarm["threshold"]:
        cell += " (above the alarm threshold)"
    return cell


def _resample_words(m: dict) -> str:
    n = _num(m["n_resample"])
    if m.get("action") != "resample":
        return n
    return (f"{n} (alarm score above the threshold at {_num(m.get('n_above', 0))} of "
            f"{_num(m['n_steps_observed'])} steps; one label per excursion)")


def _relax_alarm_words(a: dict | None) -> str:
    if not a:
        return "no in-domain alarm statistics were fitted."
    return (f"the {100 * a['alarm_rate']:.3g} % in-domain alarm threshold of the score "
            f"is {_num(a['threshold'], '.4g')} (median in-domain frame's score "
            f"{_num(a.get('in_domain_median'), '.3g')}, from {a['n_in_domain_frames']} "
            "held-out frames); a relaxation that stays below it stays in the training "
            "domain.")


def render_report(r: dict) -> str:
    """The text of ``report.html`` for a demo report ``r`` (the content of ``report.json``)."""
    e, tm, z = r["estimator"], r["timings"], r["sizes"]
    ms, mr = r["md_stop"], r["md_resample"]
    thr_rmsd = r.get("is2rs_rmsd_threshold", 0.5)
    ra = r.get("relax_alarm")
    relax_rows = [[f'<span class="id">{html.escape(str(x.get("label")))}</span>',
                   html.escape(x.get("system", "")),
                   _num(x.get("n_observed")), _num(x.get("initial"), ".2f"),
                   _num(x.get("max"), ".2f"), _num(x.get("mean"), ".2f"),
                   _num(x.get("final"), ".2f"), _alarm_cell(x.get("alarm_max"), ra),
                   "yes" if x.get("converged") else "no"]
                  for x in r["relax"]]
    relax = _table(["structure", "system", "steps observed", "first step", "highest",
                    "mean", "last step", "highest alarm score",
                    f"converged (max |F| &lt; 0.05 eV/&Aring; within "
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
            f"{_num(m['alarm_initial'], '.3g')} &rarr; {_num(m['alarm_max'], '.3g')} "
            f"(step {_num(m['alarm_max_step'])})",
            f"{_num(m['initial'], '.2f')} &rarr; {_num(m['max'], '.2f')} "
            f"(step {_num(m['max_step'])})",
            _stop_words(m), _resample_words(m),
            _num(m["n_labelled"]) if "n_labelled" in m else "no oracle"])
    md_table = _table(["run", "conditions", "steps observed",
                       "alarm score: first &rarr; highest",
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
                        _rho_cell(v.get("spearman_ads_novelty"), v.get("spearman_ads_novelty_ci")),
                        _auroc_cell(v.get("auroc_ads_novelty"), v.get("auroc_ads_novelty_ci")),
                        _rho_cell(v.get("spearman_max_uq_rmsd"), v.get("spearman_ci")),
                        _auroc_cell(v.get("auroc_max_uq"), v.get("auroc_ci"))])
    is2rs = _table(["set of systems", "systems", "ADwT", "mean RMSD (&Aring;)",
                    "median RMSD (&Aring;)",
                    "&rho;(adsorbate novelty at end point, RMSD) [95 % CI]",
                    f"AUROC by adsorbate novelty, RMSD &gt; {thr_rmsd:g} &Aring; [95 % CI]",
                    "&rho;(max uncertainty, RMSD) [95 % CI]",
                    f"AUROC by max uncertainty, RMSD &gt; {thr_rmsd:g} &Aring; [95 % CI]"],
                   is_rows, "left")
    flag_p = ""
    if flagged:
        flag_p = ('<p class="flag">&#9888; AUROC below 0.5 (worse than chance) for: '
                  f"{html.escape('; '.join(flagged))}. There the maximum uncertainty does not "
                  "separate failed from successful relaxations (see the adsorbate novelty "
                  "columns for the recommended statistic).</p>")
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
            f"({html.escape(ms['start_system'])}): maximum atom uncertainty (top) and the "
            "default alarm's score (bottom) per step. Red: the halting run at "
            f"{ms['temperature_K']:.0f} K; blue: the resampling run at "
            f"{mr['temperature_K']:.0f} K (Langevin, {ms['timestep_fs']:g} fs time step). "
            "Dashed lines: each run's alarm threshold from its in-domain alarm rate; "
            "markers: the steps where a policy fired (X: stop, circle: resample with an EMT "
            "label). A resample fires when the score crosses its threshold and re-arms only "
            "once the score has fallen below the threshold minus the hysteresis, so a run "
            "that stays above the threshold is labelled once per excursion, not at every "
            "step (the MD table gives the steps spent above it)."),
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
                    [[w, human_duration(tm.get(k))] for k, w in tnames if k in tm], "left")
    quick = (" <b>Quick mode</b> (--quick): tiny sizes for a smoke test; the numbers are not "
             "meaningful." if r.get("quick") else "")
    return _template().substitute(
        members=f"{e['members']}", features=f"{z['features']}", epochs=f"{z['epochs']}",
        n_train=f"{z['n_train']}", n_train_atoms=_num(e["n_train_atoms"]), k=f"{e['k']}",
        descriptor_dim=f"{e['descriptor_dim']}", atol=_num(e["atol_eV_per_A"], ".3g"),
        total_time=human_duration(tm["total_s"]), quick=quick, rmsd_threshold=f"{thr_rmsd:g}",
        relax_steps=f"{z['relax_steps']}", relax_table=relax,
        relax_alarm=_relax_alarm_words(ra),
        md_start=html.escape(str(ms["start"])), md_start_system=html.escape(ms["start_system"]),
        friction=f"{ms['friction_per_fs']:g}", timestep=f"{ms['timestep_fs']:g}",
        md_steps=f"{ms['steps']}", stop_temperature=f"{ms['temperature_K']:.0f}",
        stop_patience=f"{ms['patience']}", alarm_statistic=html.escape(str(ms["statistic"])),
        resample_temperature=f"{mr['temperature_K']:.0f}",
        threshold_table=thresholds, md_table=md_table, is2rs_table=is2rs, flag=flag_p,
        figures=figs, timing_table=timing)


@functools.lru_cache(maxsize=1)
def _template() -> string.Template:
    """The page skeleton ``report_template.html`` (shipped as package data).

    Returns
    -------
    string.Template
        The template; :func:`render_report` fills every ``${name}`` placeholder.
    """
    text = (resources.files(__package__) / "report_template.html").read_text(encoding="utf-8")
    return string.Template(text)
