"""UQ metrics and calibration curves against hand-computed cases, brute force and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm, spearmanr

from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.metrics import (
    CalibrationCurve,
    aggregate_by_frame,
    auroc,
    binned_error_calibration,
    calibration_curve,
    gaussian_confidence,
    gaussian_force_nll,
    miscalibration_area,
    spearman,
    within_tolerance,
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


# ---------------------------------------------------------------------------- curves
def test_curve_hand_computed_case():
    conf = np.array([0.1] * 4 + [0.9] * 6)
    ok = np.array([1, 1, 0, 0] + [1, 1, 1, 0, 0, 0], dtype=bool)
    c = calibration_curve(conf, ok, n_bins=10)
    assert isinstance(c, CalibrationCurve)
    assert c.counts.tolist() == [0, 4, 0, 0, 0, 0, 0, 0, 0, 6]
    np.testing.assert_allclose(c.observed[[1, 9]], [0.5, 0.5])
    np.testing.assert_allclose(c.mean_confidence[[1, 9]], [0.1, 0.9])
    assert np.isnan(c.observed[0]) and np.isnan(c.mean_confidence[5])
    assert c.miscalibration_area == pytest.approx((4 * 0.4 + 6 * 0.4) / 10)
    assert c.integrated_area == pytest.approx(0.16)  # two triangles 0.4 x 0.4 / 2
    assert c.brier == pytest.approx((2 * 0.81 + 2 * 0.01 + 3 * 0.01 + 3 * 0.81) / 10)
    assert c.sharpness == pytest.approx(0.3)  # sqrt(mean p(1-p)) = sqrt(0.09)
    assert c.dispersion == pytest.approx(np.std(conf))
    assert c.accuracy == pytest.approx(0.5) and c.n == 10
    d = c.to_dict()
    assert d["observed"][0] is None and d["counts"][1] == 4


def test_curve_perfectly_calibrated_and_known_miscalibration():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    ok = rng.random(p.size) < p  # P(ok | p) = p: calibrated
    c = calibration_curve(p, ok, n_bins=20)
    assert c.miscalibration_area < 0.008
    assert c.integrated_area < 0.008
    # P(ok | p) = p^2: area = int_0^1 (p - p^2) dp = 1/6 for any binning (sign is constant)
    ok2 = rng.random(p.size) < p ** 2
    for binning in ("uniform", "quantile"):
        c2 = calibration_curve(p, ok2, n_bins=20, binning=binning)
        assert c2.miscalibration_area == pytest.approx(1 / 6, abs=0.006)
    assert calibration_curve(p, ok2, n_bins=20).integrated_area == pytest.approx(1 / 6, abs=0.01)
    q = calibration_curve(p, ok2, n_bins=8, binning="quantile")
    assert q.counts.tolist() == [25_000] * 8


def test_curve_and_tolerance_bad_input():
    with pytest.raises(DataError, match="within \\[0, 1\\]"):
        calibration_curve([0.5, 1.5], [True, False])
    with pytest.raises(DataError, match="shape"):
        calibration_curve([0.5, 0.5], [True])
    with pytest.raises(InvalidParameterError, match="binning"):
        calibration_curve([0.5], [True], binning="log")
    with pytest.raises(InvalidParameterError, match="n_bins"):
        calibration_curve([0.5], [True], n_bins=0)
    with pytest.raises(InvalidParameterError, match="scaling factor"):
        within_tolerance([0.1], 0.1, s=-1.0)
    with pytest.raises(DataError, match="rtol > 0"):
        within_tolerance([0.1], 0.1, rtol=0.1)
    with pytest.raises(DataError, match="NaN"):
        within_tolerance([np.nan], 0.1)
    # (n, 3) vectors are reduced to norms; rtol adds rtol * |F_ref|
    err = np.array([[0.3, 0.4, 0.0], [0.0, 0.0, 0.05]])
    np.testing.assert_array_equal(within_tolerance(err, 0.1, s=2.0), [False, True])
    np.testing.assert_array_equal(
        within_tolerance(err, 0.1, rtol=0.1, ref_force_norm=[4.0, 0.0]), [True, True])


def test_gaussian_confidence_and_nll_against_sampled_errors():
    """Isotropic Gaussian errors of spread sigma (sqrt of the summed variance): the predicted
    P(|err| <= atol) against the sampled fraction, the NLL against scipy's density of the
    components."""
    rng = np.random.default_rng(7)
    spread = np.array([0.05, 0.1, 0.2, 0.4])
    comp = rng.normal(size=(200_000, 4, 3)) * (spread / np.sqrt(3))[None, :, None]
    norms = np.linalg.norm(comp, axis=2)
    for atol in (0.03, 0.1, 0.3):
        np.testing.assert_allclose(gaussian_confidence(spread, atol),
                                   (norms <= atol).mean(0), atol=4e-3)
    e = comp[:50].reshape(-1, 3)
    sd = np.tile(spread, 50)
    want = -norm.logpdf(e, 0, (sd / np.sqrt(3))[:, None]).mean()
    assert gaussian_force_nll(sd, e) == pytest.approx(want, rel=1e-12)
    assert gaussian_force_nll(sd, np.linalg.norm(e, axis=1)) == pytest.approx(want, rel=1e-12)
    with pytest.raises(DataError, match="force_std"):
        gaussian_confidence(np.array([0.1, 0.0]), 0.1)
