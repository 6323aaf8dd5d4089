"""Figures: the plotted data read back from the matplotlib figure equal the inputs (curves,
bars, scatter points, legends, scales); files are complete PNGs written atomically."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from ltau_md.core import plots as P
from ltau_md.core.calibration import ScaleFit
from ltau_md.core.confidence import cartography
from ltau_md.core.exceptions import DataError
from ltau_md.core.metrics import auroc, calibration_curve, spearman

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not a blank canvas
    assert not list(path.parent.glob(".*.tmp"))  # no temp file left behind


@pytest.fixture
def figures(monkeypatch):
    """Record every figure saved with save_figure (it still writes the PNG)."""
    saved: list[Figure] = []
    real = P.save_figure

    def record(fig, path, **kw):
        saved.append(fig)
        return real(fig, path, **kw)

    monkeypatch.setattr(P, "save_figure", record)
    return saved


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    p = rng.random(3000)
    ok = rng.random(p.size) < p
    err = rng.lognormal(np.log(0.05), 0.5, p.size) * (1.5 - p)
    return p, ok, err


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_calibration_figure_shows_the_curves(tmp_path, data, figures):
    p, ok, _ = data
    curves = {"s=1": calibration_curve(p, ok, s=1.0),
              "fitted": calibration_curve(p ** 0.5, ok, n_bins=10, s=0.7)}
    fig = P.plot_calibration(curves, target_label="0.05 eV/Å")
    assert_png(P.save_figure(fig, tmp_path / "cal.png"))
    ax, axh = figures[-1].axes
    lines = ax.get_lines()
    np.testing.assert_array_equal(lines[0].get_xydata(), [[0, 0], [1, 1]])  # the diagonal
    for line, c in zip(lines[1:], curves.values(), strict=True):
        filled = c.counts > 0
        np.testing.assert_allclose(line.get_xdata(), c.mean_confidence[filled])
        np.testing.assert_allclose(line.get_ydata(), c.observed[filled])
    assert legend_texts(ax) == [
        "ideal", f"s=1 (area {curves['s=1'].miscalibration_area:.3f}, s=1)",
        f"fitted (area {curves['fitted'].miscalibration_area:.3f}, s=0.7)"]
    assert "0.05 eV/Å" in ax.get_ylabel() and ax.get_xlim() == (0, 1)
    heights = [b.get_height() for b in axh.patches]
    np.testing.assert_allclose(heights[:20], curves["s=1"].counts / p.size)
    np.testing.assert_allclose(heights[20:], curves["fitted"].counts / p.size)
    assert sum(heights[:20]) == pytest.approx(1.0)


def test_scale_fit_figure(tmp_path, figures):
    grid = np.geomspace(0.1, 10, 30)
    fit = ScaleFit(s=1.3, area=0.02, area_unscaled=0.1, target_atol=0.05, s_grid=grid,
                   area_grid=np.abs(np.log(grid / 1.3)) / 10 + 0.02, n_atoms=100)
    assert_png(P.save_figure(P.plot_scale_fit({"300K": fit}), tmp_path / "fit.png"))
    ax = figures[-1].axes[0]
    curve, fitted_s, unit_s = ax.get_lines()
    np.testing.assert_allclose(curve.get_xdata(), grid)
    np.testing.assert_allclose(curve.get_ydata(), fit.area_grid)
    assert list(fitted_s.get_xdata()) == [1.3, 1.3] and list(unit_s.get_xdata()) == [1.0, 1.0]
    assert ax.get_xscale() == "log" and legend_texts(ax) == ["300K: s=1.3, area 0.020"]


def test_cartography_figure_points_per_label(tmp_path, data, figures):
    p, _, _ = data
    sigma = np.random.default_rng(1).random(p.size) * 0.3
    cart = cartography(p, sigma)
    assert_png(P.save_figure(P.plot_cartography(cart), tmp_path / "cart.png"))
    ax = figures[-1].axes[0]
    names = cart.label_names()
    for coll, name in zip(ax.collections, ("easy", "ambiguous", "hard"), strict=True):
        pts = coll.get_offsets()
        m = names == name
        np.testing.assert_allclose(np.sort(pts[:, 0]), np.sort(sigma[m]))  # x: sigma
        np.testing.assert_allclose(np.sort(pts[:, 1]), np.sort(p[m]))  # y: mu
    assert legend_texts(ax) == [f"{k} ({100 * v:.1f}%)" for k, v in cart.fractions().items()]


def test_error_vs_uncertainty_and_roc_figures(tmp_path, data, figures):
    p, _, err = data
    unc = 1 - p
    assert_png(P.save_figure(P.plot_error_vs_uncertainty({"LTAU": (unc, err)}, n_bins=5,
                                                         max_points=1000), tmp_path / "err.png"))
    ax = figures[-1].axes[0]
    assert ax.get_title() == f"LTAU: Spearman ρ = {spearman(unc, err):.3f}"
    assert len(ax.collections[0].get_offsets()) == 1000  # subsampled scatter
    order = np.argsort(unc, kind="stable")
    bx = [unc[c].mean() for c in np.array_split(order, 5)]
    by = [err[c].mean() for c in np.array_split(order, 5)]
    trend = ax.get_lines()[0]
    np.testing.assert_allclose(trend.get_xdata(), bx)
    np.testing.assert_allclose(trend.get_ydata(), by)
    labels = err > np.median(err)
    assert_png(P.save_figure(P.plot_roc({"LTAU max": (err, labels)}), tmp_path / "roc.png"))
    ax = figures[-1].axes[0]
    roc = ax.get_lines()[1]
    fpr, tpr = roc.get_xdata(), roc.get_ydata()
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2) == pytest.approx(1.0)  # perfect
    assert legend_texts(ax) == [f"LTAU max (AUROC {auroc(err, labels):.3f})"]


def test_roc_points_match_bruteforce_thresholds():
    s = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    y = np.array([1, 0, 1, 0, 0], dtype=bool)
    fpr, tpr = P._roc(s, y)
    # thresholds at each distinct score, descending: >=0.9, >=0.8, >=0.3, >=0.1
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1, 1])
    # trapezoid area under these points equals AUROC (ties handled the same way)
    area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
    assert area == pytest.approx(auroc(s, y))


def test_failed_write_leaves_old_file(tmp_path, data, monkeypatch):
    p, ok, _ = data
    out = tmp_path / "cal.png"
    out.write_bytes(b"old")

    def boom(self, fname, **kw):
        with open(fname, "wb") as fh:
            fh.write(PNG_MAGIC[:4])  # half-written
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(OSError, match="disk full"):
        P.save_figure(P.plot_calibration({"x": calibration_curve(p, ok)}), out)
    assert out.read_bytes() == b"old"
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_input(tmp_path):
    with pytest.raises(DataError, match="nothing to plot"):
        P.plot_calibration({})
    with pytest.raises(DataError, match="differ"):
        P.plot_error_vs_uncertainty({"a": (np.ones(3), np.ones(4))})
    assert not (tmp_path / "x.png").exists()


def test_cartography_density_counts_every_atom(tmp_path, figures):
    # 4,000 atoms on a coarse lattice of (sigma, mu), as the discrete p gives
    rng = np.random.default_rng(2)
    mu = rng.choice(np.linspace(0.0, 1.0, 11), 4000, p=np.r_[[0.02] * 5, [0.05] * 5, 0.65])
    sigma = rng.choice(np.linspace(0.0, 0.3, 7), 4000, p=[0.7, 0.1, 0.08, 0.06, 0.03, 0.02,
                                                         0.01])
    cart = cartography(mu, sigma)
    assert_png(P.save_figure(P.plot_cartography_density(cart), tmp_path / "cart.png"))
    ax = figures[-1].axes[0]
    hb = ax.collections[0]
    assert hb.get_array().sum() == 4000  # every atom in some cell: a count, not a scatter
    texts = legend_texts(ax)
    n = {k: int(np.sum(cart.label_names() == k)) for k in ("easy", "ambiguous", "hard")}
    for k, c in n.items():
        assert any(t.startswith(k) and f"{c:,} atoms ({100 * c / 4000:.1f} %)" in t
                   for t in texts)
    assert any("μ threshold" in t for t in texts) and any("σ threshold" in t for t in texts)
    # axes fitted to the data, not the full [0, 1] box
    assert ax.get_xlim()[1] < 0.4 and ax.get_xlim()[0] >= -0.01


def test_md_traces_lines_in_legend_and_fitted_axes(tmp_path, figures):
    t = np.arange(50) * 2.0
    u = 0.7 + 0.3 * np.linspace(0, 1, 50)
    nov = np.linspace(1.0, 5.0, 50)
    runs = {"hot": {"time_fs": t, "uncertainty": u, "novelty": nov,
                    "thresholds": [("novelty", 3.0, "stop threshold 3 (1 % alarm rate)")],
                    "events": [(t[30], nov[30], "stop")]},
            "warm": {"time_fs": t, "uncertainty": u - 0.05, "novelty": nov / 2,
                     "thresholds": [("novelty", 2.0, "resample threshold 2")],
                     "events": [(t[10], nov[10] / 2, "resample"),
                                (t[20], nov[20] / 2, "resample")]}}
    assert_png(P.save_figure(P.plot_md_traces(runs), tmp_path / "md.png"))
    axu, axn = figures[-1].axes
    lo, hi = axu.get_ylim()
    assert 0.6 < lo < 0.66 and hi <= 1.02  # fitted to 0.65-1.0, not 0-1
    assert legend_texts(axu) == ["hot: max atom uncertainty", "warm: max atom uncertainty"]
    assert legend_texts(axn) == ["hot: max atom novelty", "stop threshold 3 (1 % alarm rate)",
                                 "hot: stop", "warm: max atom novelty",
                                 "resample threshold 2", "warm: resample"]
    np.testing.assert_allclose(axn.get_lines()[0].get_ydata(), nov)
    assert axn.get_yscale() == "linear"
    # another alarm statistic on the bottom panel: its curves, thresholds, events and label
    score = {"time_fs": t, "uncertainty": u, "novelty": nov, "alarm": nov * 10,
             "thresholds": [("alarm", 30.0, "stop threshold 30"), ("novelty", 3.0, "n")],
             "events": [(t[30], nov[30] * 10, "stop")]}
    assert_png(P.save_figure(P.plot_md_traces({"hot": score}, alarm="alarm",
                                              alarm_label="alarm score\n(-log p)"),
                             tmp_path / "md_alarm.png"))
    axu, axn = figures[-1].axes
    np.testing.assert_allclose(axn.get_lines()[0].get_ydata(), nov * 10)
    assert axn.get_ylabel() == "alarm score\n(-log p)"
    assert legend_texts(axn) == ["hot: alarm score", "stop threshold 30", "hot: stop"]
    assert "n" in legend_texts(axu)  # a threshold of another signal stays on the top panel


def test_uq_vs_rmsd_bootstrap_intervals(tmp_path, figures):
    rng = np.random.default_rng(3)
    x = rng.random(30)
    y = 0.2 + x + 0.2 * rng.random(30)
    assert_png(P.save_figure(P.plot_rmsd_vs_uncertainty(
        {"in-domain": (x[:20], y[:20]), "new": (x[20:], y[20:])}, n_bins=3), tmp_path / "uq.png"))
    ax, axb = figures[-1].axes
    texts = legend_texts(ax)
    assert texts[0].startswith("in-domain (n = 20): ρ = ") and "[" in texts[0]
    assert texts[-1] == "0.5 Å: a failed relaxation lies above"
    assert any("bootstrap 95 %" in t for t in legend_texts(axb))
    # binned means: 3 equal-count bins of the pooled points, each with an interval around it
    order = np.argsort(x, kind="stable")
    trend = axb.get_lines()[0]
    np.testing.assert_allclose(trend.get_ydata(),
                               [y[c].mean() for c in np.array_split(order, 3)])
    segs = [s for c in axb.collections for s in c.get_segments()]
    assert len(segs) == 3 and all(s[0][1] < m < s[1][1]
                                  for s, m in zip(segs, trend.get_ydata(), strict=True))
    assert ax.get_xlim()[0] > -0.1 and ax.get_xlim()[1] < 1.1
    with pytest.raises(DataError):
        P.plot_rmsd_vs_uncertainty({"a": ([0.1, 0.2], [1.0])})


def test_panels_compose_on_a_callers_axes_and_subfigures(tmp_path, data):
    """A notebook user's layout: one-panel plots draw on the given axes, several-panel plots
    into the given SubFigure; each returns the figure drawn on and saves nothing."""
    p, ok, err = data
    fig = Figure(figsize=(12, 5))
    left, right = fig.subfigures(1, 2)
    ax = right.add_subplot(1, 1, 1)
    labels = err > np.median(err)
    assert P.plot_roc({"LTAU": (err, labels)}, ax=ax) is right
    assert P.plot_calibration({"x": calibration_curve(p, ok)}, fig=left) is left
    assert len(left.axes) == 2 and right.axes == [ax] and len(fig.axes) == 3
    assert legend_texts(ax)[0] == f"LTAU (AUROC {auroc(err, labels):.3f})"
    assert not list(tmp_path.iterdir())
    assert_png(P.save_figure(left, tmp_path / "both.png"))  # the whole figure is written
