"""Figures are written as complete PNGs, atomically, with the plotted data in them."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from ltau_md import DataError
from ltau_md import plots as P
from ltau_md.calibration import ScaleFit, calibration_curve, cartography
from ltau_md.metrics import auroc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not a blank canvas
    assert not list(path.parent.glob(".*.tmp"))  # no temp file left behind


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    p = rng.random(3000)
    ok = rng.random(p.size) < p
    err = rng.lognormal(np.log(0.05), 0.5, p.size) * (1.5 - p)
    return p, ok, err


def test_all_plots_write_pngs(tmp_path, data):
    p, ok, err = data
    curves = {"300K, s=1": calibration_curve(p, ok, s=1.0),
              "300K, fitted": calibration_curve(p ** 0.8, ok, s=0.7)}
    assert_png(P.plot_calibration(curves, tmp_path / "cal.png", title="calibration"))
    assert_png(P.plot_error_vs_uncertainty(
        {"LTAU": (1 - p, err), "ensemble std": (err * 0.5 + 0.01, err)},
        tmp_path / "err.png", xlabels={"LTAU": "1 - p", "ensemble std": "eV/Å"}))
    cart = cartography(p, rng_sigma(p.size))
    assert_png(P.plot_cartography(cart, tmp_path / "cart.png"))
    grid = np.geomspace(0.1, 10, 30)
    fit = ScaleFit(s=1.3, area=0.02, area_unscaled=0.1, target_atol=0.05, s_grid=grid,
                   area_grid=np.abs(np.log(grid / 1.3)) / 10 + 0.02, n_atoms=100)
    assert_png(P.plot_scale_fit({"300K": fit}, tmp_path / "fit.png"))
    assert_png(P.plot_roc({"LTAU max": (err, err > np.median(err))}, tmp_path / "roc.png"))


def rng_sigma(n):
    return np.random.default_rng(1).random(n) * 0.3


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
        P.plot_calibration({"x": calibration_curve(p, ok)}, out)
    assert out.read_bytes() == b"old"
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_input(tmp_path):
    with pytest.raises(DataError, match="nothing to plot"):
        P.plot_calibration({}, tmp_path / "x.png")
    with pytest.raises(DataError, match="differ"):
        P.plot_error_vs_uncertainty({"a": (np.ones(3), np.ones(4))}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
