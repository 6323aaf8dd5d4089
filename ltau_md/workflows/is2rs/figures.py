"""Figures of an IS2RS campaign: uncertainty statistics against the relaxation error."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ltau_md.core.metrics import parse_stat_key
from ltau_md.workflows.is2rs._columns import binned_means, column, finite_pairs
from ltau_md.workflows.is2rs._results import is_series_key
from ltau_md.workflows.is2rs.analysis import (
    ENERGY_FAIL,
    OOD_SPLITS,
    STAT_LABELS,
    STATS,
    TARGET_LABELS,
    spearman,
)

if TYPE_CHECKING:
    from matplotlib.figure import FigureBase

__all__ = ["plot_uq_vs_rmsd"]

_LOG_SIGNALS = ("force_error", "predicted_error", "novelty")
"""Signals whose statistics span decades: a log x axis in :func:`plot_uq_vs_rmsd`."""


def _signal(stat: str) -> str | None:
    """The signal of a result statistic ``SIGNAL:STAT[@tags=T]/REDUCTION`` (e.g.
    ``"novelty"``); None for any other column (``n_ads``, ``ml_fmax_initial``)."""
    return parse_stat_key(stat.rpartition("/")[0])[0] if is_series_key(stat) else None


def plot_uq_vs_rmsd(
    results: Sequence[dict],
    *,
    fig: FigureBase | None = None,
    rmsd_threshold: float = 0.5,
    n_bins: int = 5,
    stats: Sequence[str] = STATS,
    target: str = "rmsd",
) -> FigureBase:
    """Four-panel figure (as the LTAU paper's Fig. 4): RMSD to the reference-relaxed structure
    against the initial / final / max / mean uncertainty along the model relaxation, ID
    (``val_id``), OOD (``val_ood_*``) and any other split's systems (e.g. ``val_dft``),
    with the binned mean RMSD and its standard-error bars.

    Parameters
    ----------
    results
        Result rows of :func:`~ltau_md.workflows.is2rs.runner.run_campaign`.
    fig
        Figure or SubFigure to draw on (a new Figure when None).
    rmsd_threshold
        Failure line for ``target="rmsd"`` (Å).
    n_bins
        Quantile bins of the binned mean.
    stats
        Result columns on the x axes, one panel each.
    target
        Result column on the y axes (``"rmsd"``, Å, or ``"energy_above_min"``, eV).

    Returns
    -------
    FigureBase
        ``fig``; save it with :func:`ltau_md.core.plots.save_figure`.
    """
    from matplotlib.figure import Figure

    ok = [r for r in results if r.get("status") == "ok"]
    groups = {
        "ID (val_id)": [r for r in ok if r["split"] == "val_id"],
        "OOD (val_ood_*)": [r for r in ok if r["split"] in OOD_SPLITS],
    }
    for split in sorted({str(r["split"]) for r in ok} - {"val_id", "train", *OOD_SPLITS}):
        groups[split] = [r for r in ok if r["split"] == split]  # e.g. the real-DFT val_dft
    if not any(groups.values()):
        groups = {"all": ok}
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    n = len(stats)
    ncols = 2 if n > 1 else 1
    nrows = math.ceil(n / ncols)
    fig = fig if fig is not None else Figure(figsize=(5.2 * ncols, 4.2 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, st in zip(axes.ravel(), stats, strict=False):
        pooled = np.concatenate([column(g, st) for g in groups.values() if g] or [np.array([])])
        pooled = pooled[np.isfinite(pooled)]
        edges = np.unique(np.quantile(pooled, np.linspace(0, 1, n_bins + 1))) if pooled.size else []
        titles = []
        for (label, rows), color in zip(groups.items(), colors, strict=False):
            if not rows:
                continue
            x, y = finite_pairs(column(rows, st), column(rows, target))
            if not x.size:
                continue
            ax.scatter(x, np.maximum(y, 1e-4), s=12, alpha=0.5, color=color,
                       label=f"{label} (n={x.size})")
            if len(edges) > 1:
                b = binned_means(x, y, np.asarray(edges))
                centers = 0.5 * (np.asarray(edges[1:]) + np.asarray(edges[:-1]))
                m = np.array([np.nan if v is None else v for v in b["mean_rmsd"]], dtype=float)
                se = np.array([np.nan if v is None else v for v in b["se_rmsd"]], dtype=float)
                # the binned mean with its standard error, as the paper draws it (clipped at
                # the log axis' floor)
                lo = np.maximum(m - np.nan_to_num(se), 1e-4)
                ax.errorbar(centers, np.maximum(m, 1e-4),
                            yerr=[np.maximum(m, 1e-4) - lo, np.nan_to_num(se)], fmt="o-",
                            color=color, lw=2, capsize=3)
            titles.append(f"rho_{label.split()[0]}={spearman(x, y):.2f}")
        ax.axhline(rmsd_threshold if target == "rmsd" else ENERGY_FAIL, color="gray", ls="--",
                   lw=1)
        ax.set_yscale("log")
        signal = _signal(st)
        if signal in _LOG_SIGNALS:
            ax.set_xscale("log")
        ax.set_xlabel(STAT_LABELS.get(st, st) + (" (1 - p)" if signal == "uncertainty" else ""))
        ax.set_ylabel(TARGET_LABELS.get(target, target))
        ax.set_title(f"{st}: " + ", ".join(titles) if titles else f"{st}: no uncertainty")
        if titles:
            ax.legend(fontsize=8, loc="upper left")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    if isinstance(fig, Figure):
        fig.tight_layout()
    return fig
