"""Figures for calibration and uncertainty quality (matplotlib, no GUI: figures are built with
:class:`matplotlib.figure.Figure`, so pyplot's global backend is never touched).

Every function draws into the given ``ax`` (one-panel figures) or ``fig`` (a Figure or
SubFigure, for figures of several panels), else into a new Figure, and returns the figure, as
scikit-learn's ``CalibrationDisplay`` does: a notebook user composes panels, and saving is the
caller's job (:func:`save_figure` writes a PNG atomically: temporary file + rename).

* :func:`plot_calibration` - calibration curves (e.g. uncalibrated / calibrated per test set)
  with the confidence histograms (sharpness) underneath.
* :func:`plot_error_vs_uncertainty` - |force error| vs uncertainty, one panel per method.
* :func:`plot_cartography` - mu_M(p_i) vs sigma_M(p_i) of training atoms, coloured by label.
* :func:`plot_scale_fit` - miscalibration area vs s from :func:`ltau_md.core.calibration.fit_scale`.
* :func:`plot_roc` - ROC curves of structure scores for out-of-domain detection.
* :func:`plot_cartography_density` - the cartography as a 2-D histogram (atoms per cell, log
  colour) with the atom count of each label: many atoms share the same (sigma, mu) point.
* :func:`plot_md_traces` - per-step maximum atom uncertainty and an alarm statistic (novelty by
  default) of MD runs, with the policies' thresholds and events.
* :func:`plot_rmsd_vs_uncertainty` - relaxation RMSD vs a structure's uncertainty per split, binned
  means with bootstrap 95 % intervals and Spearman's rho with its bootstrap interval.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, FigureBase

from ltau_md.core.exceptions import DataError
from ltau_md.core.files import atomic_path
from ltau_md.core.metrics import auroc, spearman

if TYPE_CHECKING:
    from ltau_md.core.calibration import ScaleFit
    from ltau_md.core.confidence import Cartography
    from ltau_md.core.metrics import CalibrationCurve

__all__ = [
    "plot_calibration",
    "plot_cartography",
    "plot_cartography_density",
    "plot_md_traces",
    "plot_rmsd_vs_uncertainty",
    "plot_error_vs_uncertainty",
    "plot_roc",
    "plot_scale_fit",
    "save_figure",
]

_DPI = 130


def save_figure(fig: FigureBase, path: str | os.PathLike, dpi: int = _DPI) -> Path:
    """Write ``fig`` (the whole figure, for a SubFigure) to ``path`` as PNG atomically.

    Parameters
    ----------
    fig
        A figure returned by one of the ``plot_*`` functions.
    path
        Output file; replaced only by a complete PNG.
    dpi
        Resolution in dots per inch.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    root = fig if isinstance(fig, Figure) else fig.figure
    with atomic_path(path, suffix=".png") as tmp:
        root.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _need(mapping: Mapping, what: str) -> None:
    if not mapping:
        raise DataError(f"nothing to plot: no {what} given")


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax``, or the one axes of a new Figure of ``figsize`` (inches)."""
    return ax if ax is not None else Figure(figsize=figsize).add_subplot(1, 1, 1)


def _layout(fig: FigureBase) -> None:
    """tight_layout on a whole Figure (a SubFigure is laid out by its parent)."""
    if isinstance(fig, Figure):
        fig.tight_layout()


def plot_calibration(curves: Mapping[str, CalibrationCurve], *, fig: FigureBase | None = None,
                     title: str | None = None, target_label: str = "T") -> FigureBase:
    """Calibration curves (observed fraction within tolerance vs mean predicted confidence per
    bin) against the diagonal; the legend gives the miscalibration area (population-weighted)
    and s. Lower panel: fraction of atoms per confidence bin. ``target_label`` names the
    target tolerance in the y label (e.g. "0.05 eV/Å"). Two panels, drawn into ``fig`` (a
    Figure or SubFigure) or a new Figure, which is returned."""
    _need(curves, "calibration curves")
    fig = fig if fig is not None else Figure(figsize=(5.6, 6.4))
    gs = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    ax = fig.add_subplot(gs[0])
    axh = fig.add_subplot(gs[1], sharex=ax)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="ideal")
    for i, (name, c) in enumerate(curves.items()):
        color = f"C{i}"
        ok = c.counts > 0
        s_txt = "" if c.s is None else f", s={c.s:.3g}"
        ax.plot(c.mean_confidence[ok], c.observed[ok], "o-", ms=3.5, lw=1.4, color=color,
                label=f"{name} (area {c.miscalibration_area:.3f}{s_txt})")
        centers = 0.5 * (c.bin_edges[:-1] + c.bin_edges[1:])
        widths = np.diff(c.bin_edges)
        axh.bar(centers, c.counts / max(c.n, 1), width=widths, color=color, alpha=0.35,
                edgecolor=color, lw=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"observed fraction with |ΔF| ≤ {target_label}")
    ax.legend(fontsize=7.5, loc="upper left", frameon=False)
    ax.grid(alpha=0.25)
    ax.tick_params(labelbottom=False)
    if title:
        ax.set_title(title, fontsize=10)
    axh.set_xlabel("predicted confidence p (LTAU)")
    axh.set_ylabel("fraction\nof atoms")
    axh.grid(alpha=0.25)
    return fig


def _binned_trend(x: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    chunks = [c for c in np.array_split(order, min(n_bins, x.size)) if c.size]
    return (np.array([x[c].mean() for c in chunks]), np.array([y[c].mean() for c in chunks]))


def plot_error_vs_uncertainty(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    fig: FigureBase | None = None,
    xlabels: Mapping[str, str] | None = None,
    n_bins: int = 20,
    max_points: int = 20000,
    title: str | None = None,
    seed: int = 0,
) -> FigureBase:
    """One panel per method: |force error| (eV/A, log scale) vs its uncertainty (each method in
    its own units), a scatter of up to ``max_points`` atoms plus the mean error in
    equal-count bins of uncertainty; panel titles give Spearman's rho. Drawn into ``fig`` (a
    Figure or SubFigure) or a new Figure, which is returned."""
    _need(series, "uncertainty series")
    n = len(series)
    fig = fig if fig is not None else Figure(figsize=(4.0 * n, 3.8))
    rng = np.random.default_rng(seed)
    for i, (name, (unc, err)) in enumerate(series.items()):
        unc = np.asarray(unc, dtype=np.float64)
        err = np.asarray(err, dtype=np.float64)
        if err.ndim == 2:
            err = np.linalg.norm(err, axis=1)
        if unc.shape != err.shape or unc.ndim != 1:
            raise DataError(f"{name}: uncertainty {unc.shape} and error {err.shape} differ")
        ax = fig.add_subplot(1, n, i + 1)
        sel = rng.choice(unc.size, max_points, replace=False) if unc.size > max_points else \
            np.arange(unc.size)
        ax.scatter(unc[sel], np.maximum(err[sel], 1e-4), s=2, alpha=0.25, color=f"C{i}",
                   rasterized=True, lw=0)
        bx, by = _binned_trend(unc, err, n_bins)
        ax.plot(bx, by, "k-o", ms=3, lw=1.2, label="binned mean")
        ax.set_yscale("log")
        rho = spearman(unc, err) if unc.size > 1 else float("nan")
        ax.set_title(f"{name}: Spearman ρ = {rho:.3f}", fontsize=9)
        ax.set_xlabel((xlabels or {}).get(name, "uncertainty"))
        if i == 0:
            ax.set_ylabel("|ΔF| (eV/Å)")
            ax.legend(fontsize=7.5, frameon=False, loc="lower right")
        ax.grid(alpha=0.25)
    if title:
        fig.suptitle(title, fontsize=10)
    _layout(fig)
    return fig


def plot_cartography(cart: Cartography, *, ax: Axes | None = None, title: str | None = None,
                     max_points: int = 30000, seed: int = 0) -> FigureBase:
    """Scatter of mu_M(p_i) (y) vs sigma_M(p_i) (x) of training atoms coloured by cartography
    label, with the thresholds used; drawn on ``ax`` or a new Figure, whose figure is
    returned."""
    ax = _axes(ax, (5.2, 4.4))
    rng = np.random.default_rng(seed)
    n = cart.mu.size
    sel = rng.choice(n, max_points, replace=False) if n > max_points else np.arange(n)
    colors = {"easy": "C2", "ambiguous": "C1", "hard": "C3"}
    frac = cart.fractions()
    for code, name in enumerate(frac):  # label names in code order
        m = sel[cart.labels[sel] == code]
        ax.scatter(cart.sigma[m], cart.mu[m], s=7, alpha=0.3, lw=0, color=colors[name],
                   label=f"{name} ({100 * frac[name]:.1f}%)", rasterized=True)
    ax.axhline(cart.mu_threshold, color="0.5", lw=0.8, ls="--")
    ax.axvline(cart.sigma_threshold, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("σ_M(p_i)  (spread over ensemble members)")
    ax.set_ylabel("μ_M(p_i)  (mean confidence)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, frameon=False, markerscale=3)
    ax.grid(alpha=0.25)
    ax.set_title(title or "Dataset cartography of training atoms", fontsize=10)
    return ax.figure


def plot_scale_fit(fits: Mapping[str, ScaleFit], *, ax: Axes | None = None,
                   title: str | None = None) -> FigureBase:
    """Miscalibration area vs s (log axis) of each fit, with the fitted s marked; drawn on
    ``ax`` or a new Figure, whose figure is returned."""
    _need(fits, "scale fits")
    ax = _axes(ax, (5.2, 3.8))
    for i, (name, f) in enumerate(fits.items()):
        ax.plot(f.s_grid, f.area_grid, "-", lw=1.3, color=f"C{i}",
                label=f"{name}: s={f.s:.3g}, area {f.area:.3f}")
        ax.axvline(f.s, color=f"C{i}", lw=0.8, ls="--")
    ax.axvline(1.0, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("tolerance scale s (tolerance = atol·s)")
    ax.set_ylabel("miscalibration area")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.25, which="both")
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


def _roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(bool)
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # thresholds between distinct scores
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def plot_roc(series: Mapping[str, tuple[np.ndarray, np.ndarray]], *, ax: Axes | None = None,
             title: str | None = None) -> FigureBase:
    """ROC curves of (scores, boolean labels) per method; the legend gives AUROC. Drawn on
    ``ax`` or a new Figure, whose figure is returned."""
    _need(series, "score series")
    ax = _axes(ax, (4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
    for i, (name, (sc, lab)) in enumerate(series.items()):
        sc = np.asarray(sc, dtype=np.float64)
        lab = np.asarray(lab).astype(bool)
        fpr, tpr = _roc(sc, lab)
        ax.plot(fpr, tpr, lw=1.5, color=f"C{i}", label=f"{name} (AUROC {auroc(sc, lab):.3f})")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=7.5, frameon=False, loc="lower right")
    ax.grid(alpha=0.25)
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


def _padded(lo: float, hi: float, frac: float = 0.06, floor: float = 0.02) -> tuple[float, float]:
    pad = max((hi - lo) * frac, floor)
    return lo - pad, hi + pad


def plot_cartography_density(cart: Cartography, *, ax: Axes | None = None,
                             title: str | None = None, gridsize: int = 30) -> FigureBase:
    """Cartography as a 2-D histogram: atoms per hexagonal cell of (sigma_M(p_i), mu_M(p_i)) on
    a log colour scale, the two label thresholds, and the count and share of atoms per label
    in the legend (a scatter hides that thousands of atoms share one lattice point of the
    discrete p). Axes span the data. Drawn on ``ax`` or a new Figure, whose figure is
    returned."""
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = int(cart.mu.size)
    if n == 0:
        raise DataError("nothing to plot: the cartography holds no atoms")
    ax = _axes(ax, (6.0, 4.6))
    fig = ax.figure
    x0, x1 = _padded(float(np.min(cart.sigma)), float(np.max(cart.sigma)), floor=0.01)
    y0, y1 = _padded(float(np.min(cart.mu)), float(np.max(cart.mu)))
    x0, y0 = max(x0, -0.01), max(y0, -0.02)
    y1 = min(y1, 1.02)
    hb = ax.hexbin(cart.sigma, cart.mu, gridsize=gridsize, extent=(x0, x1, y0, y1),
                   mincnt=1, cmap="viridis", norm=LogNorm(), lw=0.2)
    cb = fig.colorbar(hb, ax=ax, pad=0.02)
    cb.set_label("training atoms per cell (log scale)")
    ax.axhline(cart.mu_threshold, color="C3", lw=1.0, ls="--")
    ax.axvline(cart.sigma_threshold, color="C1", lw=1.0, ls="--")
    counts = {name: int(np.sum(cart.labels == code))
              for code, name in enumerate(cart.fractions())}
    words = {"easy": "easy (members agree, mean confidence high)",
             "ambiguous": "ambiguous (members disagree)",
             "hard": "hard (members agree, mean confidence low)"}
    handles = [Line2D([], [], color="C3", ls="--",
                      label=f"μ threshold {cart.mu_threshold:.2f} (easy above, hard below)"),
               Line2D([], [], color="C1", ls="--",
                      label=f"σ threshold {cart.sigma_threshold:.3f} (ambiguous right of it)")]
    handles += [Patch(color="none", label=f"{words.get(k, k)}: {c:,} atoms "
                      f"({100 * c / n:.1f} %)") for k, c in counts.items()]
    ax.legend(handles=handles, fontsize=7.5, frameon=False, loc="upper left",
              bbox_to_anchor=(0.0, -0.16), title=f"{n:,} training atoms",
              title_fontsize=8)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("σ_M(p_i): spread of the confidence p over ensemble members")
    ax.set_ylabel("μ_M(p_i): mean confidence p over members")
    ax.grid(alpha=0.25)
    ax.set_title(title or "Dataset cartography of the training atoms", fontsize=10)
    return fig


#: the y label of :func:`plot_md_traces`' bottom panel for the maximum atom novelty
NOVELTY_LABEL = "max atom novelty\n(latent distance / in-domain median)"


def plot_md_traces(runs: Mapping[str, Mapping[str, Any]], *, fig: FigureBase | None = None,
                   title: str | None = None, alarm: str = "novelty",
                   alarm_label: str = NOVELTY_LABEL) -> FigureBase:
    """Per-step maximum atom uncertainty (top) and an alarm statistic (bottom) of MD runs.

    ``runs[label]`` holds ``time_fs``, ``uncertainty`` and optionally ``runs[label][alarm]``
    (arrays per observed step, NaN where unknown; ``alarm`` default "novelty", the maximum
    atom novelty), ``thresholds``: a list of ``(signal, value, label)`` drawn as dashed lines
    in that run's colour (on the bottom panel when ``signal`` is ``alarm``), and ``events``: a
    list of ``(time_fs, alarm_value_or_None, action)`` marked on the bottom panel (or on the
    uncertainty panel when there is no alarm statistic). ``alarm_label``: the bottom panel's y
    label (its first line names the curves in the legend). Every line and marker is in a
    legend; the y axes span the data and the thresholds (the bottom one on a log axis when it
    spans a factor > 20). Drawn into ``fig`` (a Figure or SubFigure) or a new Figure, which is
    returned."""
    _need(runs, "MD runs")
    has_nov = any(np.isfinite(np.asarray(r.get(alarm, []), dtype=float)).any()
                  for r in runs.values())
    fig = fig if fig is not None else Figure(figsize=(6.6, 6.2 if has_nov else 3.8))
    axu = fig.add_subplot(2 if has_nov else 1, 1, 1)
    axn = fig.add_subplot(2, 1, 2, sharex=axu) if has_nov else None
    markers = {"stop": ("X", 70), "resample": ("o", 28), "warn": ("^", 28)}
    u_all, n_all = [], []
    for i, (name, r) in enumerate(runs.items()):
        color = r.get("color", f"C{i}")
        t = np.asarray(r["time_fs"], dtype=float)
        u = np.asarray(r["uncertainty"], dtype=float)
        axu.plot(t, u, color=color, lw=1.2, label=f"{name}: max atom uncertainty")
        u_all.append(u)
        nov = np.asarray(r.get(alarm, np.full(t.size, np.nan)), dtype=float)
        if axn is not None and np.isfinite(nov).any():
            axn.plot(t, nov, color=color, lw=1.2,
                     label=f"{name}: {alarm_label.splitlines()[0]}")
            n_all.append(nov)
        for signal, value, label in r.get("thresholds", ()):
            target = axn if (signal == alarm and axn is not None) else axu
            if value is not None and np.isfinite(value):
                target.axhline(value, color=color, ls="--", lw=0.9, label=label)
                (n_all if target is axn else u_all).append(np.array([value]))
        seen = set()
        for tf, val, action in r.get("events", ()):
            target = axn if axn is not None else axu
            if val is None or not np.isfinite(val):
                continue
            m, size = markers.get(action, ("s", 28))
            target.scatter([tf], [val], marker=m, s=size, color=color, edgecolor="k", lw=0.5,
                           zorder=4, label=None if action in seen else f"{name}: {action}")
            seen.add(action)
    u = np.concatenate(u_all) if u_all else np.array([0.0, 1.0])
    u = u[np.isfinite(u)]
    if u.size:
        lo, hi = _padded(float(u.min()), float(u.max()), floor=0.02)
        axu.set_ylim(max(lo, -0.02), min(hi, 1.02))
    axu.set_ylabel("max atom uncertainty\n(1 − p, 0 = trusted, 1 = not)")
    axu.grid(alpha=0.25)
    axu.legend(fontsize=7, frameon=True, framealpha=0.85, loc="best")
    if axn is not None:
        nv = np.concatenate(n_all)
        nv = nv[np.isfinite(nv) & (nv > 0)]
        if nv.size and nv.max() / max(nv.min(), 1e-12) > 20:
            axn.set_yscale("log")
        axn.set_ylabel(alarm_label)
        axn.grid(alpha=0.25, which="both")
        axn.legend(fontsize=7, frameon=True, framealpha=0.85, loc="best")
        axn.set_xlabel("simulated time (fs)")
        axu.tick_params(labelbottom=False)
    else:
        axu.set_xlabel("simulated time (fs)")
    if title:
        axu.set_title(title, fontsize=10)
    _layout(fig)
    return fig


def _bootstrap_mean_ci(y: np.ndarray, rng: np.random.Generator, n_boot: int,
                       level: float = 0.95) -> tuple[float, float]:
    if y.size < 2:
        return float("nan"), float("nan")
    means = y[rng.integers(0, y.size, size=(n_boot, y.size))].mean(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return float(lo), float(hi)


def plot_rmsd_vs_uncertainty(splits: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                             *, fig: FigureBase | None = None,
                             rmsd_threshold: float | None = 0.5,
                             xlabel: str = "max atom uncertainty over the relaxation",
                             n_bins: int = 5, n_boot: int = 1000, seed: int = 0,
                             title: str | None = None) -> FigureBase:
    """Relaxation RMSD (Å) vs a structure's uncertainty, one colour per split (label ->
    (uncertainty, rmsd) per structure). Left: the structures with, per split, Spearman's rho
    and its bootstrap 95 % interval in the legend, and the ``rmsd_threshold`` line (failed
    relaxations lie above it). Right: the mean RMSD in equal-count bins of the uncertainty over
    all sets, with bootstrap 95 % intervals of each bin's mean. Axes span the data. Drawn into
    ``fig`` (a Figure or SubFigure) or a new Figure, which is returned."""
    from ltau_md.core.metrics import bootstrap_ci

    _need(splits, "splits")
    fig = fig if fig is not None else Figure(figsize=(9.6, 4.0))
    ax = fig.add_subplot(1, 2, 1)
    axb = fig.add_subplot(1, 2, 2, sharey=ax)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i, (name, (unc, rmsd)) in enumerate(splits.items()):
        x = np.asarray(unc, dtype=float)
        y = np.asarray(rmsd, dtype=float)
        if x.shape != y.shape:
            raise DataError(f"{name}: {x.size} uncertainties but {y.size} RMSDs")
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        xs.append(x)
        ys.append(y)
        if x.size >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            rho = spearman(x, y)
            lo, hi = bootstrap_ci("spearman", x, y, n_boot=n_boot, seed=seed)
            ci = f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else ""
            stat = f"ρ = {rho:.2f}{ci}"
        else:
            stat = "ρ n/a (< 3 structures or constant)"
        ax.scatter(x, y, s=22, alpha=0.75, color=f"C{i}", edgecolor="k", lw=0.3,
                   label=f"{name} (n = {x.size}): {stat}")
    x = np.concatenate(xs) if xs else np.array([])
    y = np.concatenate(ys) if ys else np.array([])
    if x.size:
        order = np.argsort(x, kind="stable")
        chunks = [c for c in np.array_split(order, max(1, min(n_bins, x.size // 2))) if c.size]
        bx = np.array([x[c].mean() for c in chunks])
        by = np.array([y[c].mean() for c in chunks])
        cis = np.array([_bootstrap_mean_ci(y[c], rng, n_boot) for c in chunks])
        lo = np.where(np.isfinite(cis[:, 0]), by - cis[:, 0], 0.0)
        hi = np.where(np.isfinite(cis[:, 1]), cis[:, 1] - by, 0.0)
        axb.errorbar(bx, by, yerr=np.vstack([np.maximum(lo, 0), np.maximum(hi, 0)]),
                     fmt="k-o", ms=4, lw=1.2, capsize=3,
                     label="mean RMSD per equal-count bin\n(bars: bootstrap 95 % interval)")
        x0, x1 = _padded(float(x.min()), float(x.max()), floor=0.02)
        ax.set_xlim(x0, x1)
        axb.set_xlim(x0, x1)
        ymax = float(max(y.max(), rmsd_threshold or 0.0))
        ax.set_ylim(0.0, ymax * 1.08 + 0.02)
    for a in (ax, axb):
        if rmsd_threshold is not None:
            a.axhline(rmsd_threshold, color="C3", ls="--", lw=1.0,
                      label=f"{rmsd_threshold:g} Å: a failed relaxation lies above")
        a.set_xlabel(xlabel)
        a.grid(alpha=0.25)
        a.legend(fontsize=7, frameon=True, framealpha=0.85, loc="upper left")
    ax.set_ylabel("RMSD to the reference relaxed structure (Å)")
    ax.set_title("each point: one relaxed structure", fontsize=9)
    axb.set_title("all sets pooled", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    _layout(fig)
    return fig
