"""Calibration curves, miscalibration area, fitting s against a planted scale, cartography.

The planted-scale tests use a real LTAUEstimator (real FAISS) fitted on synthetic clustered
descriptors and an ErrorLog whose per-atom errors are log-normal with a per-cluster scale;
test errors are c times draws from the same distributions, so confidences read at the
training tolerance atol*s are exactly calibrated for the target tolerance atol at s = 1/c.
"""

from __future__ import annotations

import numpy as np
import pytest

from ltau_md import DataError, ErrorLog, LTAUEstimator
from ltau_md.calibration import (
    CalibrationCurve,
    calibration_curve,
    cartography,
    cartography_from,
    evaluate_calibration,
    fit_scale,
    split_frames,
    target_tolerance,
    within_tolerance,
)


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
    with pytest.raises(DataError, match="binning"):
        calibration_curve([0.5], [True], binning="log")
    with pytest.raises(DataError, match="rtol > 0"):
        within_tolerance([0.1], 0.1, rtol=0.1)
    with pytest.raises(DataError, match="NaN"):
        within_tolerance([np.nan], 0.1)
    # (n, 3) vectors are reduced to norms; rtol adds rtol * |F_ref|
    err = np.array([[0.3, 0.4, 0.0], [0.0, 0.0, 0.05]])
    np.testing.assert_array_equal(within_tolerance(err, 0.1, s=2.0), [False, True])
    np.testing.assert_array_equal(
        within_tolerance(err, 0.1, rtol=0.1, ref_force_norm=[4.0, 0.0]), [True, True])


# ---------------------------------------------------------------------------- planted scale
def planted(tmp_path, c_of_group, seed=0, n_clusters=40, per_train=40, per_test=100, epochs=40,
            width=0.6, members=2):
    """Real estimator + test atoms whose errors are c x the training error distributions."""
    rng = np.random.default_rng(seed)
    d = 8
    centers = rng.normal(size=(n_clusters, d)) * 4
    sig = np.exp(rng.uniform(np.log(0.03), np.log(0.6), n_clusters))  # eV/A per cluster
    lab = np.repeat(np.arange(n_clusters), per_train)
    x = (centers[lab] + rng.normal(size=(lab.size, d)) * 0.2).astype(np.float32)
    n = lab.size
    log = ErrorLog.create(tmp_path / "log", species=np.full(n, 6),
                          frame_offsets=np.arange(0, n + 1, 10), ref_force_norm=np.ones(n))
    for m in range(members):
        for _ in range(epochs):
            log.append((sig[lab] * np.exp(width * rng.normal(size=n))).astype(np.float32),
                       member=m)
    est = LTAUEstimator(k=10, atol=0.1).fit(x, log)
    lab_t = np.repeat(np.arange(n_clusters), per_test)
    xt = (centers[lab_t] + rng.normal(size=(lab_t.size, d)) * 0.2).astype(np.float32)
    groups = np.array(sorted(c_of_group))[lab_t % len(c_of_group)]
    c = np.array([c_of_group[g] for g in groups])
    err = c * sig[lab_t] * np.exp(width * rng.normal(size=lab_t.size))
    return est, xt, err, groups


def test_fit_scale_recovers_planted_scale_and_persists(tmp_path):
    est, xt, err, _ = planted(tmp_path, {"a": 2.0})  # test errors 2x training: s* = 0.5
    before = evaluate_calibration(est, xt, err)
    assert before.s == 1.0 and before.miscalibration_area > 0.1  # overconfident at s = 1
    fit = fit_scale(est, xt, err)
    assert fit.s == pytest.approx(0.5, rel=0.08)
    assert fit.area < 0.03 and fit.area_unscaled == pytest.approx(before.miscalibration_area)
    assert fit.target_atol == pytest.approx(est.atol_) and not fit.at_bound
    assert est.s == fit.s and est.metadata["calibration"]["target_atol"] == fit.target_atol
    # the minimum on the searched grid is the reported one
    assert fit.area == pytest.approx(fit.area_grid.min())
    after = evaluate_calibration(est, xt, err)
    assert after.s == fit.s and after.miscalibration_area == pytest.approx(fit.area)
    # saved and reloaded: same s, same calibrated confidences
    est.save(tmp_path / "est")
    back = LTAUEstimator.load(tmp_path / "est")
    assert back.s == fit.s and back.metadata["calibration"]["s"] == fit.s
    np.testing.assert_allclose(back.predict(xt[:50]).confidence, est.predict(xt[:50]).confidence)
    assert target_tolerance(back) == pytest.approx(fit.target_atol)


def test_fit_scale_per_group_and_matches_independent_curve(tmp_path):
    est, xt, err, groups = planted(tmp_path, {"a": 2.0, "b": 0.8}, seed=1)
    fit = fit_scale(est, xt, err, groups=groups)
    assert fit.s_per_group["a"] == pytest.approx(0.5, rel=0.08)
    assert fit.s_per_group["b"] == pytest.approx(1.25, rel=0.08)
    assert 0.5 < fit.s < 1.25
    assert est.metadata["s_per_group"] == fit.s_per_group
    assert fit.n_per_group == {"a": 2000, "b": 2000}
    # independent check of the group-a area: brute-force k-NN in numpy and the p of the
    # training atoms at atol * s from the summary
    m = groups == "a"
    x_train = est.index_.reconstruct_n(0, est.n_train_)
    d2 = ((xt[m][:, None, :] - x_train[None, :, :]) ** 2).sum(-1)
    nn = np.argsort(d2, axis=1, kind="stable")[:, :est.k]
    mu, _ = est.summary_.confidence(fit.s_per_group["a"])
    conf = mu[nn].mean(axis=1)
    ref = calibration_curve(conf, err[m] <= est.atol_, n_bins=20)
    assert ref.miscalibration_area == pytest.approx(fit.area_per_group["a"], abs=2e-3)


def test_fit_scale_errors_and_bound_warning(tmp_path):
    est, xt, err, _ = planted(tmp_path, {"a": 2.0}, n_clusters=10, per_train=20, per_test=20,
                              epochs=10)
    with pytest.warns(RuntimeWarning, match="bound"):
        f = fit_scale(est, xt, err, s_bounds=(2.0, 50.0), n_grid=5, store=False)
    assert f.at_bound and f.s == pytest.approx(2.0) and est.s == 1.0
    with pytest.raises(DataError, match="every calibration atom"):
        fit_scale(est, xt, err, target_atol=1e3)
    with pytest.raises(DataError, match="groups"):
        fit_scale(est, xt, err, groups=["a"])
    with pytest.raises(DataError, match="have errors"):
        fit_scale(est, xt, err[:-1])
    with pytest.raises(DataError, match="s_bounds"):
        fit_scale(est, xt, err, s_bounds=(1.0, 0.5))
    x_train = est.index_.reconstruct_n(0, est.n_train_)
    est_r = LTAUEstimator(k=5, atol=0.1, rtol=0.05).fit(x_train, ErrorLog.open(tmp_path / "log"))
    with pytest.raises(DataError, match="ref_force_norm"):
        fit_scale(est_r, xt, err)
    # neighbour indices given instead of descriptors: the same result
    idx = est.kneighbors(xt)[1]
    a = fit_scale(est, xt, err, store=False)
    b = fit_scale(est, None, err, indices=idx, store=False)
    assert a.s == b.s and a.area == b.area


def test_evaluate_scaled_outcome(tmp_path):
    est, xt, err, _ = planted(tmp_path, {"a": 1.0}, n_clusters=10, per_train=20, per_test=50,
                              epochs=20)
    pred = est.predict(xt, s=1.7)
    c = evaluate_calibration(est, xt, err, s=1.7, outcome="scaled")
    ref = calibration_curve(pred.confidence, err <= est.atol_ * 1.7)
    assert c.miscalibration_area == pytest.approx(ref.miscalibration_area)
    c = evaluate_calibration(est, xt, err, s=1.7, target_atol=0.2)
    ref = calibration_curve(pred.confidence, err <= 0.2)
    np.testing.assert_allclose(c.observed, ref.observed)


# ---------------------------------------------------------------------------- split, cartography
def test_split_frames_keeps_structures_whole():
    off = np.array([0, 3, 5, 9, 10, 15])
    cal, ev = split_frames(off, fraction=0.4, seed=3)
    assert not np.any(cal & ev) and np.all(cal | ev)
    frames = np.repeat(np.arange(5), np.diff(off))
    for f in range(5):  # each frame entirely on one side
        assert len(set(cal[frames == f])) == 1
    assert len(set(frames[cal])) == 2
    with pytest.raises(DataError, match="fraction"):
        split_frames(off, fraction=1.0)


def test_cartography_labels_and_from_estimator(tmp_path):
    mu = np.array([0.95, 0.9, 0.2, 0.1, 0.5, 0.6])
    sig = np.array([0.01, 0.02, 0.01, 0.0, 0.3, 0.25])
    cart = cartography(mu, sig, ambiguous_quantile=0.6, min_ambiguous_sigma=0.05)
    assert cart.label_names().tolist() == ["easy", "easy", "hard", "hard", "ambiguous",
                                           "ambiguous"]
    assert cart.fractions() == pytest.approx({"easy": 1 / 3, "ambiguous": 1 / 3, "hard": 1 / 3})
    assert cart.weights.mean() == pytest.approx(1.0)
    assert cart.weights[3] > cart.weights[0]  # hard atoms weigh more than easy ones
    # with an agreeing ensemble (sigma tiny everywhere) nothing is ambiguous
    assert (cartography(mu, np.full(6, 1e-3)).labels != 1).all()
    est, _, _, _ = planted(tmp_path, {"a": 1.0}, n_clusters=10, per_train=20, per_test=5,
                           epochs=10, members=3)
    c2 = cartography_from(est, s=1.0)
    mu_ref, sig_ref = est.summary_.confidence(1.0)
    np.testing.assert_allclose(c2.mu, mu_ref)
    np.testing.assert_allclose(c2.sigma, sig_ref)
    assert c2.sigma.max() > 0


def test_calibrate_structures_with_real_feature_model(tmp_path):
    """EMT as the deployed model: the reference forces are EMT + a known noise, so the
    errors calibrate_structures computes must equal the noise norms exactly."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from ltau_md.calibration import calibrate_structures, reference_forces
    from ltau_md.testing import EMTFeatureModel

    model = EMTFeatureModel(elements=("Cu",))
    rng = np.random.default_rng(0)

    def frames(n, seed):
        out = []
        for i in range(n):
            a = bulk("Cu", "fcc", a=3.6, cubic=True)
            a.rattle(0.05 + 0.1 * (i % 3), seed=seed + i)
            out.append(a)
        return out

    train = frames(12, 100)
    x_train = np.concatenate([model.evaluate(a).features for a in train])
    n = x_train.shape[0]
    log = ErrorLog.create(tmp_path / "log", species=np.full(n, 29),
                          frame_offsets=np.arange(0, n + 1, 4), ref_force_norm=np.ones(n))
    for _ in range(20):
        log.append(rng.lognormal(np.log(0.05), 0.5, n).astype(np.float32))
    est = LTAUEstimator(k=5, atol=0.05).fit(x_train, log)
    cal = frames(20, 500)
    noise = []
    for i, a in enumerate(cal):
        f = model.evaluate(a).forces
        nz = rng.normal(size=f.shape) * 0.04
        noise.append(nz)
        a.info["config_type"] = "hot" if i % 2 else "cold"
        a.calc = SinglePointCalculator(a, energy=0.0, forces=f + nz)
    fit, arrays = calibrate_structures(model, est, cal, group_key="config_type",
                                       store=False, n_grid=15, n_refine=4)
    np.testing.assert_allclose(arrays["errors"], np.linalg.norm(np.concatenate(noise), axis=1),
                               atol=1e-9)
    assert sorted(fit.n_per_group) == ["cold", "hot"] and fit.n_atoms == 80
    x_cal = np.concatenate([model.evaluate(a).features for a in cal])
    ref = fit_scale(est, x_cal, arrays["errors"], arrays["groups"], store=False, n_grid=15,
                    n_refine=4)
    assert ref.s == fit.s and ref.s_per_group == fit.s_per_group
    assert est.s == 1.0  # store=False
    bare = bulk("Cu")
    with pytest.raises(DataError, match="no reference forces"):
        reference_forces(bare, 3)
    bare.calc = SinglePointCalculator(bare, energy=0.0, forces=np.zeros((1, 3)))
    with pytest.raises(DataError, match=r"structures \[2\] lack info"):
        calibrate_structures(model, est, cal[:2] + [bare], group_key="config_type")
