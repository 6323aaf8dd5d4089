"""UQ metrics against hand-computed cases, brute force and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, spearmanr

from ltau_md import DataError
from ltau_md.metrics import (
    aggregate_by_frame,
    auroc,
    binned_error_calibration,
    miscalibration_area,
    spearman,
)


def test_spearman_hand_case_and_scipy_with_ties():
    # one swapped pair among 4: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 300).astype(float)  # many ties
    y = x + rng.integers(0, 4, 300)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(DataError, match="entries"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(DataError, match="NaN"):
        spearman([1, np.nan], [1, 2])


def test_auroc_hand_cases_bruteforce_and_mannwhitney():
    # classic example: positives 0.35 (beats 0.1, loses to 0.4) and 0.8 (beats both) -> 3/4
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # a tie counts 1/2
    assert auroc([3.0, 1.0, 2.0], [1, 0, 0]) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    s = rng.integers(0, 10, 200).astype(float)
    lab = rng.random(200) < 0.3
    pos, neg = s[lab], s[~lab]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
    brute /= pos.size * neg.size
    assert auroc(s, lab) == pytest.approx(brute, abs=1e-12)
    u = mannwhitneyu(pos, neg, alternative="two-sided").statistic
    assert auroc(s, lab) == pytest.approx(u / (pos.size * neg.size), abs=1e-12)
    with pytest.raises(DataError, match="positives and negatives"):
        auroc([1, 2], [1, 1])
    with pytest.raises(DataError, match="0/1"):
        auroc([1, 2], [1, 2])


def test_miscalibration_area_weighted_and_integrated():
    e = np.array([0.1, 0.9])
    o = np.array([0.5, 0.5])
    # weighted by populations 4 and 6: (4 * 0.4 + 6 * 0.4) / 10
    assert miscalibration_area(e, o, weights=[4, 6]) == pytest.approx(0.4)
    # integrated: the flat segment crosses y = x at 0.5: two triangles of 0.4 * 0.4 / 2
    assert miscalibration_area(e, o) == pytest.approx(0.16)
    # no crossing: trapezoid
    assert miscalibration_area([0.0, 1.0], [0.2, 1.0]) == pytest.approx(0.1)
    # empty bins (weight 0, NaN) are skipped
    assert miscalibration_area([0.2, np.nan], [0.4, np.nan], weights=[5, 0]) == pytest.approx(0.2)
    # integrated vs dense numerical integration of a random zig-zag curve
    rng = np.random.default_rng(2)
    x = np.sort(rng.random(12))
    y = rng.random(12)
    grid = np.linspace(x[0], x[-1], 400001)
    f = np.abs(np.interp(grid, x, y) - grid)
    dense = np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(grid))
    assert miscalibration_area(x, y) == pytest.approx(dense, abs=1e-6)


def test_binned_error_calibration_hand_case_and_calibrated_gaussian():
    pred = np.array([1.0, 1.0, 2.0, 2.0])
    err = np.array([1.0, 3.0, 2.0, 2.0])
    r = binned_error_calibration(pred, err, n_bins=2)
    np.testing.assert_allclose(r.rmv, [1.0, 2.0])
    np.testing.assert_allclose(r.observed, [np.sqrt(5.0), 2.0])
    assert r.ence == pytest.approx((np.sqrt(5.0) - 1.0) / 2.0)
    r = binned_error_calibration(pred, err, n_bins=2, statistic="mae")
    np.testing.assert_allclose(r.observed, [2.0, 2.0])
    # errors drawn with exactly the predicted RMS: ENCE ~ 0; doubled errors: ENCE ~ 1
    rng = np.random.default_rng(3)
    sig = rng.uniform(0.05, 0.5, 60000)
    vec = rng.normal(size=(sig.size, 3)) * sig[:, None] / np.sqrt(3.0)  # E|v|^2 = sig^2
    assert binned_error_calibration(sig, vec, n_bins=10).ence < 0.03
    assert binned_error_calibration(sig, 2 * vec, n_bins=10).ence == pytest.approx(1.0, abs=0.03)


def test_aggregate_by_frame_matches_loop():
    rng = np.random.default_rng(4)
    off = np.array([0, 3, 4, 9])
    v = rng.random(9)
    for how, fn in (("max", np.max), ("mean", np.mean)):
        expect = [fn(v[a:b]) for a, b in zip(off[:-1], off[1:], strict=True)]
        np.testing.assert_allclose(aggregate_by_frame(v, off, how), expect)
    with pytest.raises(DataError, match="frame_offsets"):
        aggregate_by_frame(v, [0, 3, 8])
