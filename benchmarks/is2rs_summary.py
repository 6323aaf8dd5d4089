"""The IS2RS figures the benchmark is judged by, per seed and pooled over seeds, from finished
``bench_is2rs.py`` runs (their ``campaign_dask/results/*.json`` and ``bench_line.json``).

    python benchmarks/is2rs_summary.py OUT/s0 OUT/s1

Prints one JSON line: per seed and pooled (systems of all seeds, each relaxed by its seed's
model): in-domain failure rates; per-split force MAE on the reference frames; for the pooled
out-of-domain systems the Spearman of each uncertainty statistic with the energy of the end
point above the lowest minimum and its AUROC for the failure label ``higher_or_fmax`` (higher
basin, or reference fmax > 0.4 eV/A), beside the true-force-error ceiling and the trivial
baseline, and the share of the ceiling reached; out-of-domain detection at step 0. Every
Spearman / AUROC has a bootstrap 95 % interval.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _record import record

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the result statistics, SIGNAL:STAT[@tags=T]/REDUCTION (after the sys.path line above)
from ltau_md.workflows.is2rs._results import (  # noqa: E402
    FERR,
    NOVELTY,
    NOVELTY_ADS,
    PERR,
    UQ,
    UQ_ADS,
    series_key,
)

UQ_STATS = (series_key(UQ, "final"), series_key(UQ, "mean"), series_key(UQ, "max"),
            series_key(UQ, "initial"), series_key(UQ_ADS, "final"), series_key(PERR, "final"),
            series_key(NOVELTY, "final"), series_key(NOVELTY, "max"),
            series_key(NOVELTY, "mean"), series_key(NOVELTY_ADS, "final"),
            series_key(NOVELTY_ADS, "max"), series_key(NOVELTY_ADS, "mean"))
CEILING = (series_key(FERR, "final"), series_key(FERR, "max"))
BASELINE = ("n_ads", "ml_fmax_initial")
DETECT = (series_key(NOVELTY, "initial"), series_key(NOVELTY_ADS, "initial"),
          series_key(UQ, "initial"), series_key(UQ_ADS, "initial"))


def _load(run: Path) -> list[dict]:
    res = sorted((run / "campaign_dask" / "results").glob("*.json"))
    if not res:
        raise SystemExit(f"{run}: no campaign_dask/results/*.json")
    return [json.loads(f.read_text()) for f in res]


def _ci(e: dict | None) -> list | None:
    if not e or e.get("value") is None:
        return None
    return [round(e["value"], 3), round(e["lo"], 3), round(e["hi"], 3)]


def figures(rows: list[dict], n_boot: int) -> dict:
    from ltau_md.workflows.is2rs.analysis import analyze

    rep = analyze(rows, n_boot=n_boot)
    sp = rep["splits"]
    out: dict = {"n": {k: v.get("n_ok") for k, v in sp.items()},
                 "failure_rates": {k: {lab: round(x, 3) for lab, x in
                                       (v.get("failure_rates") or {}).items()}
                                   for k, v in sp.items()}}
    ood = sp.get("ood", {})
    spear = (ood.get("spearman_ci") or {}).get("energy_above_min", {})
    auc = (ood.get("auroc_ci") or {}).get("higher_or_fmax", {})
    out["ood_spearman_vs_energy_above_min"] = {st: _ci(spear.get(st))
                                               for st in (*UQ_STATS, *CEILING, *BASELINE)}
    out["ood_auroc_higher_or_fmax"] = {st: _ci(auc.get(st))
                                       for st in (*UQ_STATS, *CEILING, *BASELINE)}
    best_ceiling = max((spear[c]["value"] for c in CEILING if spear.get(c)
                        and spear[c].get("value") is not None), default=None)
    if best_ceiling:
        out["ood_spearman_share_of_ceiling"] = {
            st: round(spear[st]["value"] / best_ceiling, 3) for st in UQ_STATS
            if spear.get(st) and spear[st].get("value") is not None}
    for name in ("val_id", "all"):
        e = sp.get(name, {})
        out[f"{name}_spearman_vs_energy_above_min"] = {
            st: _ci(((e.get("spearman_ci") or {}).get("energy_above_min") or {}).get(st))
            for st in (series_key(UQ, "final"), series_key(UQ, "mean"),
                       series_key(PERR, "final"), series_key(NOVELTY, "final"),
                       series_key(NOVELTY_ADS, "final"), series_key(FERR, "final"), "n_ads")}
        out[f"{name}_spearman_vs_rmsd"] = {
            st: _ci(((e.get("spearman_ci") or {}).get("rmsd") or {}).get(st))
            for st in (series_key(UQ, "final"), series_key(UQ, "max"),
                       series_key(FERR, "max"), "n_ads")}
    out["ood_detection_auroc"] = {st: _ci(rep.get("ood_detection", {}).get(st))
                                  for st in DETECT}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="bench_is2rs.py output directories (one per seed)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--figures", default=None,
                   help="directory for the pooled Fig. 4-style figures (energy above the "
                   "minimum and RMSD against the statistics, ID vs OOD, binned means)")
    args = p.parse_args(argv)
    line: dict = {"bench": "is2rs_summary", "runs": args.runs, "seeds": {}}
    pooled: list[dict] = []
    for run in map(Path, args.runs):
        rows = _load(run)
        tag = run.name
        pooled += [dict(r, sid=f"{tag}/{r['sid']}") for r in rows]
        seed = figures(rows, args.n_boot)
        bl = run / "bench_line.json"
        if bl.exists():
            b = json.loads(bl.read_text())
            seed["frames_force_mae"] = b.get("frames_force_mae")
            seed["train_s"] = b.get("train_s")
            seed["campaign_s"] = {k: v for k, v in b.items() if k.startswith("campaign_")}
        line["seeds"][tag] = seed
    if len(args.runs) > 1:
        line["pooled"] = figures(pooled, args.n_boot)
    if args.figures:
        from ltau_md.core.plots import save_figure
        from ltau_md.workflows.is2rs.figures import plot_uq_vs_rmsd

        fig_dir = Path(args.figures)
        fig_dir.mkdir(parents=True, exist_ok=True)
        stats = (series_key(UQ, "final"), series_key(PERR, "final"),
                 series_key(FERR, "final"), "n_ads")
        line["figures"] = [
            str(save_figure(plot_uq_vs_rmsd(pooled, target="energy_above_min", stats=stats),
                            fig_dir / "pooled_energy.png")),
            str(save_figure(plot_uq_vs_rmsd(pooled, stats=stats), fig_dir / "pooled_rmsd.png"))]
    print(json.dumps(line))
    record(__file__, {k: v for k, v in line.items() if k != "figures"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
