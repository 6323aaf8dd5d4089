"""Latent novelty of the estimator against brute-force numpy: leave-one-out k-NN distances of
the training atoms, per-element and local novelty, p-values, a planted out-of-domain cluster,
the broad re-search of atoms that look novel, persistence and the calculator's results."""

from __future__ import annotations

import numpy as np
import pytest

from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import ArtifactError


def _data(rng, n_per=120, dim=6):
    """Two elements (H: tight cluster, O: wide cluster) in dim-D descriptor space."""
    xh = rng.normal(0.0, 0.2, size=(n_per, dim))
    xo = rng.normal(3.0, 1.0, size=(n_per, dim))
    x = np.concatenate([xh, xo]).astype(np.float32)
    z = np.repeat([1, 8], n_per)
    return x, z


def _fit(tmp_path, x, z, k=5, **kw):
    n = len(x)
    log = ErrorLog.create(tmp_path / "log", species=z, frame_offsets=[0, n],
                          ref_force_norm=np.ones(n))
    rng = np.random.default_rng(1)
    for _ in range(4):
        log.append(rng.gamma(2.0, 0.05, n))
    return LTAUEstimator(k=k, **kw).fit(x, log)


def _brute_loo(x, k):
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1).mean(1), idx


def _brute_query(xtr, xq, k):
    d = np.sqrt(((xq[:, None, :].astype(np.float64) - xtr[None, :, :]) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1).mean(1), idx


@pytest.mark.parametrize("mode", ["element", "local"])
def test_novelty_equals_numpy_bruteforce(tmp_path, mode):
    rng = np.random.default_rng(0)
    x, z = _data(rng)
    k = 5
    est = _fit(tmp_path, x, z, k=k, novelty=mode, index="flat")
    loo, loo_idx = _brute_loo(x, k)
    np.testing.assert_allclose(est.knn_distance_, loo, rtol=1e-4)
    scale = {zz: np.median(loo[z == zz]) for zz in (1, 8)}
    if mode == "element":
        train_nov = loo / np.array([scale[zz] for zz in z])
    else:
        train_nov = loo / loo[loo_idx].mean(1)
    np.testing.assert_allclose(est.train_novelty_, train_nov, rtol=1e-4)
    xq = np.concatenate([rng.normal(0.0, 0.2, (10, 6)), rng.normal(3.0, 1.0, (10, 6))])
    zq = np.repeat([1, 8], 10)
    dq, iq = _brute_query(x, xq, k)
    pred = est.predict(xq.astype(np.float32), species=zq)
    want = dq / (np.array([scale[zz] for zz in zq]) if mode == "element" else loo[iq].mean(1))
    np.testing.assert_allclose(pred.novelty, want, rtol=1e-4)
    # p-value: (1 + #same-element training atoms with novelty >= it) / (1 + #element atoms)
    pv = np.array([(1 + np.sum(train_nov[z == zz] >= v - 1e-9)) / (1 + np.sum(z == zz))
                   for v, zz in zip(want, zq, strict=True)])
    np.testing.assert_allclose(pred.novelty_pvalue, pv, atol=1.5 / 121)


def test_duplicates_keep_their_twin_as_neighbour(tmp_path):
    rng = np.random.default_rng(2)
    x, z = _data(rng, n_per=30)
    x[5] = x[4]  # an exact duplicate pair
    est = _fit(tmp_path, x, z, k=3, index="flat")
    loo, _ = _brute_loo(x, 3)
    np.testing.assert_allclose(est.knn_distance_, loo, rtol=1e-4, atol=1e-6)
    assert est.knn_distance_[4] == pytest.approx(est.knn_distance_[5], rel=1e-5)


def test_planted_out_of_domain_cluster_is_flagged(tmp_path):
    rng = np.random.default_rng(3)
    x, z = _data(rng, n_per=300)
    est = _fit(tmp_path, x, z, k=10, index="flat")
    held_in = np.concatenate([rng.normal(0.0, 0.2, (200, 6)), rng.normal(3.0, 1.0, (200, 6))])
    z_in = np.repeat([1, 8], 200)
    far = rng.normal(0.0, 0.2, (50, 6)) + np.array([2.5, -2.5, 0, 0, 0, 0])  # H, elsewhere
    p_in = est.predict(held_in.astype(np.float32), species=z_in)
    p_out = est.predict(far.astype(np.float32), species=np.ones(50, int))
    assert 0.8 < np.median(p_in.novelty) < 1.3
    # in-domain p-values are about uniform: ~1 % below 0.01, ~10 % below 0.1
    assert np.mean(p_in.novelty_pvalue < 0.1) < 0.2
    assert p_out.novelty.min() > 5 * np.quantile(p_in.novelty, 0.99)
    assert np.all(p_out.novelty_pvalue == pytest.approx(1 / 301))
    # an element the estimator never saw cannot come through predict (SpeciesError), but a
    # species without a reference is maximally novel in novelty_of
    nov, pv = est.novelty_of(p_in.distances[:3], p_in.indices[:3], np.array([6, 6, 6]))
    assert np.all(pv == 0.0)


def test_confirm_replaces_misses_with_the_true_neighbours(tmp_path):
    rng = np.random.default_rng(4)
    x, z = _data(rng, n_per=200)
    est = _fit(tmp_path, x, z, k=5, index="hnsw", confirm_pvalue=0.05)
    q = x[:40] + rng.normal(0, 0.01, (40, 6)).astype(np.float32)
    zq = z[:40]
    dist, idx = est.kneighbors(q, zq, confirm=False)
    bad_idx = idx.copy()
    bad_idx[:5] = np.arange(300, 305)[:, None]  # plant misses: far-away O atoms, 5 H queries
    bad_dist = np.sqrt(((q[:, None, :] - x[bad_idx]) ** 2).sum(-1))
    d2, i2 = est.confirm_novel(q, bad_dist, bad_idx, zq)
    true_d, true_i = _brute_query(x, q, 5)
    np.testing.assert_array_equal(np.sort(i2[:5], 1), np.sort(true_i[:5], 1))
    np.testing.assert_array_equal(i2[5:], bad_idx[5:])  # atoms that did not look novel
    off = LTAUEstimator(**{**est.get_params(), "confirm_pvalue": 0.0}).fit(
        x, est.summary_)
    d3, i3 = off.confirm_novel(q, bad_dist, bad_idx, zq)
    np.testing.assert_array_equal(i3, bad_idx)


def test_novelty_survives_save_load_and_damage_is_caught(tmp_path):
    rng = np.random.default_rng(5)
    x, z = _data(rng, n_per=40)
    est = _fit(tmp_path, x, z, k=4, index="flat")
    est.save(tmp_path / "est")
    back = LTAUEstimator.load(tmp_path / "est")
    q = x[:7] + 0.05
    a, b = est.predict(q, species=z[:7]), back.predict(q, species=z[:7])
    np.testing.assert_allclose(a.novelty, b.novelty, rtol=1e-6)
    np.testing.assert_array_equal(a.novelty_pvalue, b.novelty_pvalue)
    np.save(tmp_path / "est" / "knn_distance.npy", -np.ones(80, np.float32))
    with pytest.raises(ArtifactError, match="corrupt"):
        LTAUEstimator.load(tmp_path / "est")
    with pytest.raises(ArtifactError, match="knn_distance.npy must hold 80 finite values"):
        LTAUEstimator.load(tmp_path / "est", verify=False)


def test_calculator_reports_novelty_of_its_atoms(tmp_path):
    from ase.build import bulk

    from ltau_md.core.calculator import LTAUCalculator
    from ltau_md.testing import EMTFeatureModel

    model = EMTFeatureModel(elements=("Cu",))
    frames = []
    for i in range(12):
        a = bulk("Cu", cubic=True).repeat(2)
        a.rattle(0.03, seed=i)
        frames.append(a)
    x = np.concatenate([model.evaluate(a).features for a in frames])
    log = ErrorLog.create(tmp_path / "log", species=np.full(len(x), 29),
                          frame_offsets=np.arange(13) * 32, ref_force_norm=np.ones(len(x)))
    for _ in range(3):
        log.append(np.random.default_rng(0).gamma(2.0, 0.05, len(x)))
    est = LTAUEstimator(k=5).fit(x, log)
    a = bulk("Cu", cubic=True).repeat(2)
    a.rattle(0.3, seed=99)  # hotter than any training frame
    a.calc = LTAUCalculator(model, est, warm_start=False)
    a.get_potential_energy()
    ref = est.predict(model.evaluate(a).features, species=a.numbers)
    np.testing.assert_allclose(a.calc.results["novelty"], ref.novelty)
    np.testing.assert_allclose(a.calc.results["novelty_pvalue"], ref.novelty_pvalue)
    assert a.calc.results["novelty:max"] == pytest.approx(ref.novelty.max())
    assert a.calc.results["novelty:max"] > 1.5


def test_hnsw_and_large_flat_leave_one_out_match_exact(tmp_path, monkeypatch):
    """k above the default efSearch (HNSW must still return k+1 neighbours), and a flat index
    above the auto threshold (a temporary HNSW graph) give the exact LOO distances here."""
    from ltau_md.core.estimator import _index as index_module

    rng = np.random.default_rng(6)
    x, z = _data(rng, n_per=150)
    loo, _ = _brute_loo(x, 40)
    est = _fit(tmp_path, x, z, k=40, index="hnsw", ef_search=8)
    np.testing.assert_allclose(est.knn_distance_, loo, rtol=1e-3)
    monkeypatch.setattr(index_module, "AUTO_HNSW_MIN_ATOMS", 100)
    flat = LTAUEstimator(k=40, index="flat").fit(x, est.summary_)
    assert flat.index_kind_ == "flat"
    np.testing.assert_allclose(flat.knn_distance_, loo, rtol=1e-3)


def test_confirm_is_capped_to_the_most_novel_atoms(tmp_path, monkeypatch):
    from ltau_md.core.estimator import _neighbors as estimator_module

    rng = np.random.default_rng(7)
    x, z = _data(rng, n_per=200)
    est = _fit(tmp_path, x, z, k=5, index="hnsw", confirm_pvalue=0.05)
    monkeypatch.setattr(estimator_module, "CONFIRM_MAX_ATOMS", 3)
    q = x[:10] + rng.normal(0, 0.01, (10, 6)).astype(np.float32)
    dist, idx = est.kneighbors(q, z[:10], confirm=False)
    bad_idx = idx.copy()
    bad_idx[:6] = np.arange(300, 306)[:, None]  # six planted misses, farther and farther
    bad_dist = np.sqrt(((q[:, None, :] - x[bad_idx]) ** 2).sum(-1)) * np.arange(1, 11)[:, None]
    _, i2 = est.confirm_novel(q, bad_dist, bad_idx, z[:10])
    _, true_i = _brute_query(x, q, 5)
    fixed = [r for r in range(6) if set(i2[r]) == set(true_i[r])]
    assert fixed == [3, 4, 5]  # the three most novel-looking rows were re-searched


def test_trajectory_searches_a_novel_looking_atom_broadly_once(tmp_path, monkeypatch):
    """Along a trajectory an atom that keeps looking novel is searched broadly at its first
    step only (its later warm searches start from what that search found); a cold refresh
    allows it again; its neighbours stay the exact ones."""
    from ltau_md.core.estimator import TrajectoryNeighbors
    from ltau_md.core.estimator import _neighbors as estimator_module

    rng = np.random.default_rng(8)
    x, z = _data(rng, n_per=300)
    est = _fit(tmp_path, x, z, k=5, index="hnsw", confirm_pvalue=0.05)
    searched = []
    real = estimator_module.broad_search

    def counting(index, kind, q, k):
        searched.append(len(q))
        return real(index, kind, q, k)

    monkeypatch.setattr(estimator_module, "broad_search", counting)
    q = np.concatenate([x[:6] + 0.01, [np.full(6, 1.5)]]).astype(np.float32)  # last: between
    zq = np.r_[z[:6], 1]  # an H atom far from the tight H cluster
    traj = TrajectoryNeighbors(est, refresh_every=4)
    for step in range(5):  # one cold step, then 4 warm ones
        _, idx = traj.kneighbors(q + step * 1e-3, zq)
        np.testing.assert_array_equal(np.sort(idx[-1]),
                                      np.sort(_brute_query(x, q[-1:] + step * 1e-3, 5)[1][0]))
    assert searched and sum(searched) == searched[0]  # the first step only
    traj.kneighbors(q, zq)  # after refresh_every warm steps, a cold one: searched again
    assert len(searched) == 2 and searched[1] == searched[0]
