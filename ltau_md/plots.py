"""Figures for calibration and uncertainty quality (matplotlib, no GUI: figures are built with
:class:`matplotlib.figure.Figure`, so pyplot's global backend is never touched). Every figure
is written atomically as PNG (temporary file + rename) and the path is returned.

* :func:`plot_calibration` - calibration curves (e.g. uncalibrated / calibrated per test set)
  with the confidence histograms (sharpness) underneath.
* :func:`plot_error_vs_uncertainty` - |force error| vs uncertainty, one panel per method.
* :func:`plot_cartography` - mu_M(p_i) vs sigma_M(p_i) of training atoms, coloured by label.
* :func:`plot_scale_fit` - miscalibration area vs s from :func:`ltau_md.calibration.fit_scale`.
* :func:`plot_roc` - ROC curves of structure scores for out-of-domain detection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from ._io import atomic_path
from .exceptions import DataError
from .metrics import auroc, spearman

if TYPE_CHECKING:
    from .calibration import ScaleFit
    from .confidence import Cartography
    from .metrics import CalibrationCurve

__all__ = [
    "plot_calibration",
    "plot_cartography",
    "plot_error_vs_uncertainty",
    "plot_roc",
    "plot_scale_fit",
    "save_figure",
]

_DPI = 130


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = _DPI) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically; returns the path."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _need(mapping: Mapping, what: str) -> None:
    if not mapping:
        raise DataError(f"nothing to plot: no {what} given")


def plot_calibration(curves: Mapping[str, CalibrationCurve], path: str | os.PathLike,
                     title: str | None = None, target_label: str = "T") -> Path:
    """Calibration curves (observed fraction within tolerance vs mean predicted confidence per
    bin) against the diagonal; the legend gives the miscalibration area (population-weighted)
    and s. Lower panel: fraction of atoms per confidence bin. ``target_label`` names the
    target tolerance in the y label (e.g. "0.05 eV/Å")."""
    _need(curves, "calibration curves")
    fig = Figure(figsize=(5.6, 6.4))
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
    return save_figure(fig, path)


def _binned_trend(x: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    chunks = [c for c in np.array_split(order, min(n_bins, x.size)) if c.size]
    return (np.array([x[c].mean() for c in chunks]), np.array([y[c].mean() for c in chunks]))


def plot_error_vs_uncertainty(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    *,
    xlabels: Mapping[str, str] | None = None,
    n_bins: int = 20,
    max_points: int = 20000,
    title: str | None = None,
    seed: int = 0,
) -> Path:
    """One panel per method: |force error| (eV/A, log scale) vs its uncertainty (each method in
    its own units), a scatter of up to ``max_points`` atoms plus the mean error in
    equal-count bins of uncertainty; panel titles give Spearman's rho."""
    _need(series, "uncertainty series")
    n = len(series)
    fig = Figure(figsize=(4.0 * n, 3.8))
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
    fig.tight_layout()
    return save_figure(fig, path)


def plot_cartography(cart: Cartography, path: str | os.PathLike, *, title: str | None = None,
                     max_points: int = 30000, seed: int = 0) -> Path:
    """Scatter of mu_M(p_i) (y) vs sigma_M(p_i) (x) of training atoms coloured by cartography
    label, with the thresholds used."""
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot(1, 1, 1)
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
    return save_figure(fig, path)


def plot_scale_fit(fits: Mapping[str, ScaleFit], path: str | os.PathLike,
                   title: str | None = None) -> Path:
    """Miscalibration area vs s (log axis) of each fit, with the fitted s marked."""
    _need(fits, "scale fits")
    fig = Figure(figsize=(5.2, 3.8))
    ax = fig.add_subplot(1, 1, 1)
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
    return save_figure(fig, path)


def _roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(bool)
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # thresholds between distinct scores
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def plot_roc(series: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike,
             title: str | None = None) -> Path:
    """ROC curves of (scores, boolean labels) per method; the legend gives AUROC."""
    _need(series, "score series")
    fig = Figure(figsize=(4.6, 4.4))
    ax = fig.add_subplot(1, 1, 1)
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
    return save_figure(fig, path)
