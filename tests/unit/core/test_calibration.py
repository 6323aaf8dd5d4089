"""Fitting the tolerance scale s (global and per group) and evaluating calibration, against
planted scales and against brute-force numpy references that never call the estimator.

The planted-scale tests use a real LTAUEstimator (real FAISS) fitted on synthetic clustered
descriptors and an ErrorLog whose per-atom errors are log-normal with a per-cluster scale;
test errors are c times draws from the same distributions, so confidences read at the
training tolerance atol*s are exactly calibrated for the target tolerance atol at s = 1/c.

The numpy references take the raw logged errors (M members, E epochs, N atoms), find the k
nearest training atoms by brute force, compute p exactly as a fraction of epochs and the
population-weighted miscalibration area from its definition. The estimator interpolates p
from per-atom histograms, which is exact at bin edges: comparisons at s = edge/atol are exact,
elsewhere they allow the interpolation error.
"""

from __future__ import annotations

import numpy as np
import pytest

from ltau_md.core.calibration import (
    evaluate_calibration,
    fit_scale,
    split_frames,
    target_tolerance,
)
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import Calibration, LTAUEstimator
from ltau_md.core.exceptions import DataError, InvalidParameterError


# ---------------------------------------------------------------------------- numpy references
def np_neighbors(x_train, q, k):
    d2 = ((q[:, None, :].astype(np.float64) - x_train[None, :, :].astype(np.float64)) ** 2)
    return np.argsort(d2.sum(-1), axis=1, kind="stable")[:, :k]


def np_confidence(raw, nn, tol):
    """Mean over neighbours ``nn`` (n, k) of mu_M(p_i), p_i = fraction of epochs <= tol."""
    p = (raw.astype(np.float64) <= tol).mean(axis=1).mean(axis=0)  # (M, E, N) -> (N,)
    return p[nn].mean(axis=1)


def np_area(conf, ok, n_bins=20):
    """sum_b n_b |fraction ok_b - mean conf_b| / n over equal-width bins of conf."""
    b = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for i in range(n_bins):
        m = b == i
        if m.any():
            total += m.sum() * abs(ok[m].mean() - conf[m].mean())
    return total / conf.size


def edge_scales(est, lo, hi):
    """Scales s = edge/atol of the histogram edges within [lo, hi] (p is exact there)."""
    s = est.summary_.edges[1:-1] / est.atol_
    return s[(s >= lo) & (s <= hi)]


# ---------------------------------------------------------------------------- planted scale
def planted(tmp_path, c_of_group, seed=0, n_clusters=40, per_train=40, per_test=100, epochs=41,
            width=0.6, members=3):
    """Real estimator + test atoms whose errors are c x the training error distributions.
    Returns est, test descriptors, test errors, test groups, training descriptors and the raw
    logged errors (M, E, N)."""
    rng = np.random.default_rng(seed)
    d = 8
    centers = rng.normal(size=(n_clusters, d)) * 4
    sig = np.exp(rng.uniform(np.log(0.03), np.log(0.6), n_clusters))  # eV/A per cluster
    lab = np.repeat(np.arange(n_clusters), per_train)
    x = (centers[lab] + rng.normal(size=(lab.size, d)) * 0.2).astype(np.float32)
    n = lab.size
    log = ErrorLog.create(tmp_path / "log", species=np.full(n, 6),
                          frame_offsets=np.arange(0, n + 1, 10), ref_force_norm=np.ones(n))
    raw = np.empty((members, epochs, n), np.float32)
    for m in range(members):
        for e in range(epochs):
            raw[m, e] = sig[lab] * np.exp(width * rng.normal(size=n))
            log.append(raw[m, e], member=m)
    est = LTAUEstimator(k=7, atol=0.1).fit(x, log)
    lab_t = np.repeat(np.arange(n_clusters), per_test)
    xt = (centers[lab_t] + rng.normal(size=(lab_t.size, d)) * 0.2).astype(np.float32)
    groups = np.array(sorted(c_of_group))[lab_t % len(c_of_group)]
    c = np.array([c_of_group[g] for g in groups])
    err = c * sig[lab_t] * np.exp(width * rng.normal(size=lab_t.size))
    return est, xt, err, groups, x, raw


def test_fit_scale_recovers_planted_scale_and_persists(tmp_path):
    est, xt, err, _, _, _ = planted(tmp_path, {"a": 2.0})  # test errors 2x training: s* = 0.5
    before = evaluate_calibration(est, xt, err)
    assert before.s == 1.0 and before.miscalibration_area > 0.1  # overconfident at s = 1
    fit = fit_scale(est, xt, err)
    assert fit.s == pytest.approx(0.5, rel=0.08)
    assert fit.area < 0.03 and fit.area_unscaled == pytest.approx(before.miscalibration_area)
    assert fit.target_atol == pytest.approx(est.atol_) and not fit.at_bound
    # fitted state, not an overwritten parameter
    assert est.s is None and est.scale_ == fit.s
    assert est.calibration_ == fit.to_calibration()
    assert est.calibration_.target_atol == fit.target_atol == target_tolerance(est)
    assert fit.area == pytest.approx(fit.area_grid.min())  # the reported minimum is the grid's
    after = evaluate_calibration(est, xt, err)
    assert after.s == fit.s and after.miscalibration_area == pytest.approx(fit.area)
    est.save(tmp_path / "est")
    back = LTAUEstimator.load(tmp_path / "est")
    assert back.calibration_ == est.calibration_ and back.s is None and back.scale_ == fit.s
    np.testing.assert_allclose(back.predict(xt[:50]).confidence, est.predict(xt[:50]).confidence)
    assert target_tolerance(back) == pytest.approx(fit.target_atol)


def test_area_and_fitted_scale_match_numpy_bruteforce(tmp_path):
    est, xt, err, _, x, raw = planted(tmp_path, {"a": 2.0}, seed=2)
    nn = np_neighbors(x, xt, est.k)
    ok = err <= est.atol_
    # at bin-edge scales the estimator's area equals the numpy one exactly
    grid = edge_scales(est, 0.2, 2.0)
    ref = np.array([np_area(np_confidence(raw, nn, est.atol_ * s), ok) for s in grid])
    got = np.array([evaluate_calibration(est, xt, err, s=s).miscalibration_area for s in grid])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # the fitted s is optimal for the exact (numpy) area up to the histogram interpolation
    fit = fit_scale(est, xt, err, store=False)
    exact_at_fit = np_area(np_confidence(raw, nn, est.atol_ * fit.s), ok)
    assert exact_at_fit <= ref.min() + 0.005
    assert fit.area == pytest.approx(exact_at_fit, abs=0.005)
    assert grid[np.argmin(ref)] == pytest.approx(fit.s, rel=0.1)


def test_fit_scale_per_group_and_used_at_inference(tmp_path):
    est, xt, err, groups, x, raw = planted(tmp_path, {"a": 2.0, "b": 0.8}, seed=1)
    fit = fit_scale(est, xt, err, groups=groups)
    assert fit.s_per_group["a"] == pytest.approx(0.5, rel=0.08)
    assert fit.s_per_group["b"] == pytest.approx(1.25, rel=0.08)
    assert 0.5 < fit.s < 1.25
    assert est.calibration_.s_per_group == fit.s_per_group
    assert fit.n_per_group == {"a": 2000, "b": 2000}
    # group a's area from numpy brute force (raw errors, exact p) at the group's s
    m = groups == "a"
    nn = np_neighbors(x, xt[m], est.k)
    conf = np_confidence(raw, nn, est.atol_ * fit.s_per_group["a"])
    assert np_area(conf, err[m] <= est.atol_) == pytest.approx(fit.area_per_group["a"],
                                                               abs=0.005)
    # inference: group a is read at its own s, an unknown group at the global one
    pa = est.predict(xt[m][:200], group="a")
    assert pa.s == fit.s_per_group["a"]
    assert np.mean(pa.confidence) < np.mean(est.predict(xt[m][:200]).confidence) - 0.05
    assert est.predict(xt[:5], group="zzz").s == fit.s
    # evaluated per group (as deployed) the held-in curve is better than with one s
    per_group = evaluate_calibration(est, xt, err, groups=groups)
    assert per_group.s is None
    assert per_group.miscalibration_area < evaluate_calibration(est, xt, err).miscalibration_area


def test_per_group_scale_equals_hand_computed_confidence(tmp_path):
    est, xt, err, groups, x, raw = planted(tmp_path, {"a": 1.0, "b": 1.0}, n_clusters=10,
                                           per_train=20, per_test=20)
    s_glob, s_a = edge_scales(est, 0.3, 3.0)[[3, 12]]  # bin edges: exact p
    est.calibration_ = Calibration(s=s_glob, target_atol=est.atol_, s_per_group={"a": s_a})
    nn = np_neighbors(x, xt, est.k)
    hand_a = np_confidence(raw, nn, est.atol_ * s_a)
    hand_glob = np_confidence(raw, nn, est.atol_ * s_glob)
    assert np.abs(hand_a - hand_glob).max() > 0.2  # the group's s matters
    np.testing.assert_allclose(est.predict(xt, group="a").confidence, hand_a, atol=1e-6)
    np.testing.assert_allclose(est.predict(xt, group="b").confidence, hand_glob, atol=1e-6)
    np.testing.assert_allclose(est.predict(xt).confidence, hand_glob, atol=1e-6)
    # evaluate_calibration with groups scores each atom at its group's s
    ok = err <= est.atol_
    mixed = np.where(groups == "a", hand_a, hand_glob)
    curve = evaluate_calibration(est, xt, err, groups=groups)
    assert curve.miscalibration_area == pytest.approx(np_area(mixed, ok), abs=1e-6)


def test_evaluate_scaled_outcome_and_target_against_numpy(tmp_path):
    est, xt, err, _, x, raw = planted(tmp_path, {"a": 1.0}, n_clusters=10, per_train=20,
                                      per_test=50)
    s = edge_scales(est, 1.5, 2.0)[0]
    conf = np_confidence(raw, np_neighbors(x, xt, est.k), est.atol_ * s)
    c = evaluate_calibration(est, xt, err, s=s, outcome="scaled")
    assert c.s == s and c.miscalibration_area == pytest.approx(
        np_area(conf, err <= est.atol_ * s), abs=1e-6)
    assert c.accuracy == pytest.approx(np.mean(err <= est.atol_ * s))
    c = evaluate_calibration(est, xt, err, s=s, target_atol=0.2)
    assert c.miscalibration_area == pytest.approx(np_area(conf, err <= 0.2), abs=1e-6)
    assert c.accuracy == pytest.approx(np.mean(err <= 0.2))
    with pytest.raises(InvalidParameterError, match="outcome"):
        evaluate_calibration(est, xt, err, outcome="both")


def test_one_target_tolerance_default(tmp_path):
    est, xt, err, _, _, _ = planted(tmp_path, {"a": 1.5}, n_clusters=10, per_train=20,
                                    per_test=50, epochs=20)
    assert target_tolerance(est) == est.atol_
    assert evaluate_calibration(est, xt, err).accuracy == pytest.approx(np.mean(err <= est.atol_))
    fit = fit_scale(est, xt, err, target_atol=0.08, n_grid=15, n_refine=3)
    assert fit.target_atol == 0.08 == est.calibration_.target_atol == target_tolerance(est)
    # the calibration's T is the default of evaluate_calibration and of the next fit_scale
    assert evaluate_calibration(est, xt, err).accuracy == pytest.approx(np.mean(err <= 0.08))
    assert fit_scale(est, xt, err, n_grid=15, n_refine=3, store=False).target_atol == 0.08
    assert target_tolerance(est, 0.3) == 0.3
    with pytest.raises(InvalidParameterError, match="target tolerance"):
        target_tolerance(est, -1.0)


def test_fit_scale_errors_and_warnings(tmp_path):
    est, xt, err, _, x, _ = planted(tmp_path, {"a": 2.0}, n_clusters=10, per_train=20,
                                    per_test=20, epochs=10)
    with pytest.warns(RuntimeWarning, match="bound"):
        f = fit_scale(est, xt, err, s_bounds=(2.0, 50.0), n_grid=5, store=False)
    assert f.at_bound and f.s == pytest.approx(2.0)
    assert est.s is None and est.calibration_ is None  # store=False
    with pytest.raises(DataError, match="every calibration atom"):
        fit_scale(est, xt, err, target_atol=1e3)
    with pytest.raises(DataError, match="groups"):
        fit_scale(est, xt, err, groups=["a"])
    with pytest.raises(DataError, match="have errors"):
        fit_scale(est, xt, err[:-1])
    for kw, match in (({"s_bounds": (1.0, 0.5)}, "s_bounds"), ({"n_grid": 2}, "n_grid"),
                      ({"binning": "log"}, "binning")):
        with pytest.raises(InvalidParameterError, match=match):
            fit_scale(est, xt, err, **kw)
    est_r = LTAUEstimator(k=5, atol=0.1, rtol=0.05).fit(x, ErrorLog.open(tmp_path / "log"))
    with pytest.raises(DataError, match="ref_force_norm"):
        fit_scale(est_r, xt, err)
    # neighbour indices given instead of descriptors: the same result
    idx = est.kneighbors(xt)[1]
    a = fit_scale(est, xt, err, store=False)
    b = fit_scale(est, None, err, indices=idx, store=False)
    assert a.s == b.s and a.area == b.area
    # a set s parameter overrides the calibration: fitting warns
    est.s = 1.0
    with pytest.warns(UserWarning, match="overrides the fitted calibration"):
        fit_scale(est, xt, err, n_grid=9, n_refine=2)
    assert est.scale_ == 1.0 and est.calibration_ is not None


def test_split_frames_keeps_structures_whole():
    off = np.array([0, 3, 5, 9, 10, 15])
    cal, ev = split_frames(off, fraction=0.4, seed=3)
    assert not np.any(cal & ev) and np.all(cal | ev)
    frames = np.repeat(np.arange(5), np.diff(off))
    for f in range(5):  # each frame entirely on one side
        assert len(set(cal[frames == f])) == 1
    assert len(set(frames[cal])) == 2
    with pytest.raises(InvalidParameterError, match="fraction"):
        split_frames(off, fraction=1.0)


# ---------------------------------------------------------------------------- structures
def test_calibrate_structures_against_numpy_bruteforce(tmp_path):
    """EMT as the deployed model: reference forces are EMT + known noise, so the errors are
    the noise norms. The areas at bin-edge scales equal the numpy ones, and the fitted
    (per-group) s lie at the minimum of the exact numpy area over a fine scan of s."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from ltau_md.core.calibration import calibrate_structures
    from ltau_md.core.structures import reference_forces
    from ltau_md.testing import EMTFeatureModel

    model = EMTFeatureModel(elements=("Cu",))
    rng = np.random.default_rng(0)

    def frames(n, seed):
        out = []
        for i in range(n):
            a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
            a.rattle(0.05 + 0.1 * (i % 3), seed=seed + i)
            out.append(a)
        return out

    train = frames(12, 100)
    x_train = np.concatenate([model.evaluate(a).features for a in train])
    n = x_train.shape[0]
    log = ErrorLog.create(tmp_path / "log", species=np.full(n, 29),
                          frame_offsets=np.arange(0, n + 1, 32), ref_force_norm=np.ones(n))
    raw = rng.lognormal(np.log(0.05), 0.5, (1, 41, n)).astype(np.float32)
    for e in range(raw.shape[1]):
        log.append(raw[0, e])
    est = LTAUEstimator(k=7, atol=0.05).fit(x_train, log)
    cal = frames(30, 500)
    noise = []
    for i, a in enumerate(cal):
        f = model.evaluate(a).forces
        nz = rng.normal(size=f.shape) * (0.03 if i % 2 else 0.06)  # hot atoms err twice as much
        noise.append(nz)
        a.info["config_type"] = "hot" if i % 2 == 0 else "cold"
        a.calc = SinglePointCalculator(a, energy=0.0, forces=f + nz)
    fit, arrays = calibrate_structures(model, est, cal, group_key="config_type", n_bins=10,
                                       n_grid=31, n_refine=6)
    err = np.linalg.norm(np.concatenate(noise), axis=1)
    np.testing.assert_allclose(arrays["errors"], err, atol=1e-9)
    assert fit.n_per_group == {"cold": 480, "hot": 480} and fit.n_atoms == 960
    assert est.calibration_.group_key == "config_type" and est.s is None
    # numpy reference: brute-force neighbours of the calibration atoms, exact p from raw errors
    x_cal = np.concatenate([model.evaluate(a).features for a in cal])
    nn = np_neighbors(x_train, x_cal, est.k)
    np.testing.assert_array_equal(np.sort(arrays["indices"], 1), np.sort(nn, 1))
    ok = err <= est.atol_
    for s in edge_scales(est, 0.3, 3.0):
        got = evaluate_calibration(est, None, err, indices=arrays["indices"], s=s, n_bins=10)
        assert got.miscalibration_area == pytest.approx(
            np_area(np_confidence(raw, nn, est.atol_ * s), ok, 10), abs=1e-6)
    groups = np.concatenate([[a.info["config_type"]] * len(a) for a in cal])
    scan = np.geomspace(0.1, 10, 200)
    for mask, s_fit in ((np.ones(err.size, bool), fit.s), (groups == "hot", fit.s_per_group["hot"]),
                        (groups == "cold", fit.s_per_group["cold"])):
        areas = [np_area(np_confidence(raw, nn[mask], est.atol_ * s), ok[mask], 10)
                 for s in scan]
        assert s_fit == pytest.approx(scan[int(np.argmin(areas))], rel=0.1)
    assert fit.s_per_group["hot"] < fit.s < fit.s_per_group["cold"]
    bare = bulk("Cu")
    with pytest.raises(DataError, match="no reference forces"):
        reference_forces(bare, 3)
    bare.calc = SinglePointCalculator(bare, energy=0.0, forces=np.zeros((1, 3)))
    with pytest.raises(DataError, match=r"structures \[2\] lack info"):
        calibrate_structures(model, est, cal[:2] + [bare], group_key="config_type")


def test_fit_spread_scale_undoes_a_known_factor():
    """Gaussian errors of spreads drawn per atom; the predicted spread is 2.5x each: the
    fitted factor is about 1/2.5 and brings the area from large to near zero."""
    from ltau_md.core.calibration import fit_spread_scale, spread_calibration

    rng = np.random.default_rng(11)
    spread = rng.uniform(0.05, 0.4, 20_000)
    err = np.linalg.norm(rng.normal(size=(spread.size, 3)) * (spread / np.sqrt(3))[:, None],
                         axis=1)
    fit = fit_spread_scale(2.5 * spread, err, atol=0.15)
    assert fit.scale == pytest.approx(0.4, rel=0.05) and not fit.at_bound
    assert fit.area_unscaled > 0.2 and fit.area < 0.02
    assert spread_calibration(spread, err, 0.15).miscalibration_area < 0.02
