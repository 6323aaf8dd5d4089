"""Core LTAU: error log, per-atom confidence, cartography and the FAISS estimator against
brute-force numpy. Saving and loading: test_estimator_artifact.py."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ltau_md.core.confidence import ErrorSummary, cartography, cartography_from
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.estimator import _index as index_module
from ltau_md.core.exceptions import (
    ArtifactError,
    DataError,
    DescriptorError,
    InvalidParameterError,
    LTAUError,
    NotFittedError,
    SpeciesError,
)


def make_log(path, errors, species=None, ref=None, member=0, log=None):
    """errors: (E, N) array appended epoch by epoch."""
    e, n = errors.shape
    if log is None:
        species = np.full(n, 29) if species is None else species
        ref = np.ones(n) if ref is None else ref
        log = ErrorLog.create(path, species=species, frame_offsets=[0, n // 2, n],
                              ref_force_norm=ref)
    for row in errors:
        log.append(row, member=member)
    return log


def brute_p(errors, tol):
    """p_i = fraction of epochs with eps <= tol_i; errors (E, N)."""
    return (errors <= tol[None, :]).mean(axis=0)


def brute_predict(train_x, test_x, k, p_train, err_train):
    d = ((test_x[:, None, :] - train_x[None, :, :]) ** 2).sum(-1)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return p_train[idx].mean(1), err_train[idx].mean(1), np.sqrt(np.take_along_axis(d, idx, 1))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------- error log
def test_errorlog_roundtrip_and_validation(tmp_path, rng):
    errs = rng.gamma(2.0, 0.05, size=(5, 40)).astype(np.float32)
    log = make_log(tmp_path / "log", errs)
    re = ErrorLog.open(tmp_path / "log")
    assert re.epochs(0) == [0, 1, 2, 3, 4] and re.members == [0]
    np.testing.assert_array_equal(np.stack(list(re.iter_epochs(0))), errs)
    np.testing.assert_array_equal(np.stack(list(re.iter_epochs(0, start=-2))), errs[-2:])
    with pytest.raises(DataError, match="shape"):
        log.append(np.zeros(39))
    with pytest.raises(DataError, match=r"NaN/inf at atoms \[3\]"):
        bad = np.zeros(40)
        bad[3] = np.nan
        log.append(bad)
    with pytest.raises(DataError, match="gap"):
        log.append(np.zeros(40), epoch=9)
    with pytest.raises(FileExistsError):
        ErrorLog.create(tmp_path / "log", species=np.full(40, 29), frame_offsets=[0, 40],
                        ref_force_norm=np.ones(40))
    with pytest.raises(ArtifactError, match="another dataset"):
        ErrorLog.create(tmp_path / "log", species=np.full(40, 8), frame_offsets=[0, 40],
                        ref_force_norm=np.ones(40), exist_ok=True)
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        ErrorLog.open(tmp_path / "nowhere")


def test_errorlog_crash_mid_epoch_and_resume(tmp_path, rng):
    errs = rng.random((4, 30)).astype(np.float32)
    make_log(tmp_path / "log", errs[:3])
    # simulate a crash while epoch 3 was being written: a partial temp file is left behind
    d = tmp_path / "log" / "member_000"
    (d / ".epoch_000003.npy.abcd.npy.tmp").write_bytes(b"\x93NUMPY partial")
    re = ErrorLog.open(tmp_path / "log")
    assert re.epochs(0) == [0, 1, 2]
    assert not list(d.glob(".*.tmp"))
    # resume: next epoch is 3, no duplicate, no gap
    assert re.append(errs[3]) == 3
    np.testing.assert_array_equal(np.stack(list(re.iter_epochs(0))), errs)
    # resume from an earlier checkpoint (epoch 2): later epochs are replaced, not duplicated
    new2 = np.full(30, 0.5, dtype=np.float32)
    assert re.append(new2, epoch=2) == 2
    assert re.epochs(0) == [0, 1, 2]
    np.testing.assert_array_equal(re.read_epoch(2), new2)
    # a truncated epoch file (non-atomic FS) is reported, never read as data
    (d / "epoch_000001.npy").write_bytes((d / "epoch_000001.npy").read_bytes()[:100])
    with pytest.raises(ArtifactError, match="epoch_000001"):
        re.read_epoch(1)


# ---------------------------------------------------------------------------- confidence
@pytest.mark.parametrize("rtol", [0.0, 0.1])
def test_summary_matches_bruteforce_ensemble_window(tmp_path, rng, rtol):
    n, e_count, m_count = 200, 12, 3
    ref = rng.uniform(0.1, 3.0, n)
    all_errs = [rng.lognormal(np.log(0.05), 0.8, size=(e_count, n)).astype(np.float32)
                for _ in range(m_count)]
    log = None
    for m, errs in enumerate(all_errs):
        log = make_log(tmp_path / "log", errs, ref=ref, member=m, log=log)
    start, stop = 2, 10
    summ = ErrorSummary.from_logs(log, rtol=rtol, start=start, stop=stop)
    # atol default: MAE of the last logged epoch, averaged over members
    atol = np.mean([errs[-1].astype(np.float64).mean() for errs in all_errs])
    assert summ.atol == pytest.approx(atol, rel=1e-6)
    tol = atol + rtol * ref.astype(np.float32).astype(np.float64)
    p = np.stack([brute_p(errs[start:stop], tol) for errs in all_errs])
    mu, sigma = summ.confidence(1.0)
    np.testing.assert_allclose(mu, p.mean(0), atol=1e-6)
    np.testing.assert_allclose(sigma, p.std(0), atol=1e-6)
    mean_err = np.mean([errs[start:stop].mean(0) for errs in all_errs], axis=0)
    np.testing.assert_allclose(summ.predicted_error(), mean_err, rtol=1e-5)
    # other tolerances from the histograms: within one bin's mass of the exact value
    for s in (0.3, 2.0, 7.5):
        tol_s = atol * s + rtol * ref.astype(np.float32).astype(np.float64)
        exact = np.stack([brute_p(errs[start:stop], tol_s) for errs in all_errs]).mean(0)
        approx, _ = summ.confidence(s)
        assert np.max(np.abs(approx - exact)) <= 2.0 / (stop - start) + 1e-6
        assert np.mean(np.abs(approx - exact)) < 0.03
    assert summ.nbytes_per_atom == pytest.approx(m_count * (64 + 8) + 8)


def test_summary_exact_at_bin_edges(tmp_path, rng):
    errs = rng.lognormal(np.log(0.05), 1.0, size=(20, 50)).astype(np.float32)
    log = make_log(tmp_path / "log", errs)
    summ = ErrorSummary.from_logs(log, atol=0.05)
    edges = summ.edges
    for b in (10, 31, 40):
        s = edges[b] / 0.05
        approx, _ = summ.confidence(s)
        exact = (errs.astype(np.float64) <= edges[b]).mean(0)
        np.testing.assert_allclose(approx, exact, atol=1e-6)


def test_summary_rejects_mismatched_logs(tmp_path, rng):
    a = make_log(tmp_path / "a", rng.random((2, 10)))
    b = make_log(tmp_path / "b", rng.random((2, 10)), species=np.full(10, 8))
    with pytest.raises(ArtifactError, match=r"different training sets.*usual cause.*data_seed"):
        ErrorSummary.from_logs([a, b])
    with pytest.raises(DataError, match="window"):
        ErrorSummary.from_logs(a, start=5)


# ---------------------------------------------------------------------------- estimator
def clustered(rng, n, d=8, centers=20, spread=0.3, seed=42):
    """Points around ``centers`` fixed cluster centres (the same for every rng)."""
    c = np.random.default_rng(seed).normal(size=(centers, d)) * 3
    lab = rng.integers(0, centers, n)
    return (c[lab] + rng.normal(size=(n, d)) * spread).astype(np.float32)


@pytest.fixture
def fitted(tmp_path, rng):
    n = 600
    x = clustered(rng, n)
    errs = rng.lognormal(np.log(0.05), 0.7, size=(8, n)).astype(np.float32)
    errs2 = rng.lognormal(np.log(0.06), 0.7, size=(8, n)).astype(np.float32)
    log = make_log(tmp_path / "log", errs)
    make_log(tmp_path / "log", errs2, member=1, log=log)
    return x, log, [errs, errs2]


def test_predict_equals_bruteforce(fitted, rng):
    x, log, errs = fitted
    est = LTAUEstimator(k=7, index="flat").fit(x, log)
    q = clustered(np.random.default_rng(1), 50)
    pred = est.predict(q)
    atol = np.mean([e[-1].astype(np.float64).mean() for e in errs])
    p_train = np.mean([brute_p(e, np.full(x.shape[0], atol)) for e in errs], axis=0)
    err_train = np.mean([e.mean(0) for e in errs], axis=0)
    conf, perr, dist = brute_predict(x.astype(np.float64), q.astype(np.float64), 7, p_train,
                                     err_train)
    np.testing.assert_allclose(pred.confidence, conf, atol=1e-5)
    np.testing.assert_allclose(pred.uncertainty, 1 - conf, atol=1e-5)
    np.testing.assert_allclose(pred.predicted_error, perr, rtol=1e-4)
    np.testing.assert_allclose(pred.distances, dist, rtol=1e-3, atol=1e-3)
    # re-scoring at another s from the same neighbours equals a fresh prediction at that s
    c2, _ = est.confidence_from_neighbors(pred.indices, s=2.0)
    np.testing.assert_allclose(c2, est.predict(q, s=2.0).confidence, atol=1e-6)
    assert np.all(c2 >= pred.confidence - 1e-6)  # a looser tolerance never lowers confidence


def test_hnsw_recall_and_close_to_exact(rng):
    n = 20000
    x = clustered(rng, n, d=16, centers=50)
    errs = rng.lognormal(np.log(0.05), 0.7, size=(5, n)).astype(np.float32)
    flat = LTAUEstimator(k=10, index="flat")
    hnsw = LTAUEstimator(k=10, index="hnsw", ef_search=64)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        log = make_log(os.path.join(d, "log"), errs)
        summ = ErrorSummary.from_logs(log)
    flat.fit(x, summ)
    hnsw.fit(x, summ)
    q = clustered(np.random.default_rng(5), 500, d=16, centers=50)
    pf, ph = flat.predict(q), hnsw.predict(q)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(pf.indices, ph.indices,
                                                               strict=True)])
    assert recall >= 0.95
    assert np.max(np.abs(pf.confidence - ph.confidence)) < 0.05
    assert np.mean(np.abs(pf.confidence - ph.confidence)) < 0.01


def test_hnsw_cell_order_returns_training_rows(rng, tmp_path):
    """The HNSW index stores its rows grouped by k-means cell (for cache locality); searches,
    the stored descriptors and a saved estimator still speak training rows, and the results
    are those of a plain FAISS HNSW graph built on the rows in that order."""
    import faiss

    n = 12000
    x = clustered(rng, n, d=8, centers=40)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # a deterministic graph build
    try:
        est = LTAUEstimator(k=6, index="hnsw", confirm_pvalue=0).fit(
            x, None, species=np.ones(n, dtype=int))
        plain = faiss.IndexHNSWFlat(8, est.hnsw_m)
        plain.hnsw.efConstruction = est.ef_construction
        plain.add(x[index_module.stored_rows(est.index_)])
    finally:
        faiss.omp_set_num_threads(threads)
    rows = index_module.stored_rows(est.index_)
    assert sorted(rows.tolist()) == list(range(n)) and not np.array_equal(rows, np.arange(n))
    # neighbouring stored rows are close: far closer than rows in training order
    step = np.linalg.norm(np.diff(x[rows], axis=0), axis=1).mean()
    assert step < 0.5 * np.linalg.norm(np.diff(x, axis=0), axis=1).mean()
    np.testing.assert_array_equal(est.training_descriptors(), x)
    plain.hnsw.efSearch = est.ef_search
    q = clustered(np.random.default_rng(7), 400, d=8, centers=40)
    d_plain, i_plain = plain.search(q, 6)
    d, idx = est.kneighbors(q)
    np.testing.assert_array_equal(idx, rows[i_plain])
    np.testing.assert_allclose(d, np.sqrt(d_plain), rtol=1e-5)
    self_i = est.kneighbors(x[:300])[1]  # a training atom finds itself first (HNSW: mostly)
    assert np.mean(self_i[:, 0] == np.arange(300)) >= 0.98
    loaded = LTAUEstimator.load(est.save(tmp_path / "est"))
    np.testing.assert_array_equal(loaded.kneighbors(q)[1], idx)
    np.testing.assert_array_equal(loaded.training_descriptors(), x)


def test_ivfpq_runs_close_to_exact(rng):
    n = 20000
    x = clustered(rng, n, d=16, centers=30, spread=0.2)
    e = rng.lognormal(np.log(0.05), 0.7, size=(4, n)).astype(np.float32)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        summ = ErrorSummary.from_logs(make_log(os.path.join(d, "log"), e))
    exact = LTAUEstimator(k=10).fit(x, summ)
    ivf = LTAUEstimator(k=10, index="ivfpq", ivf_nlist=64, pq_m=8, pq_nbits=4,
                        nprobe=16).fit(x, summ)
    q = x[:300] + 0.01
    assert np.mean(np.abs(exact.predict(q).confidence - ivf.predict(q).confidence)) < 0.1


def test_bad_input_errors(fitted):
    x, log, _ = fitted
    with pytest.raises(DescriptorError, match="599 training descriptors"):
        LTAUEstimator().fit(x[:-1], log)
    bad = x.copy()
    bad[[4, 17]] = np.nan
    with pytest.raises(DescriptorError, match=r"rows \[4, 17\]"):
        LTAUEstimator().fit(bad, log)
    est = LTAUEstimator(k=3).fit(x, log)
    with pytest.raises(DescriptorError, match="dimension 7"):
        est.predict(x[:5, :7])
    q = x[:5].copy()
    q[2, 0] = np.inf
    with pytest.raises(DescriptorError, match=r"rows \[2\]"):
        est.predict(q)
    with pytest.raises(SpeciesError, match="element.* O "):
        est.predict(x[:2], species=np.array([29, 8]))
    with pytest.raises(DescriptorError, match="N > 0"):
        LTAUEstimator().fit(np.zeros((0, 8), np.float32), log)
    with pytest.raises(InvalidParameterError, match="index must be"):
        LTAUEstimator(index="bogus").fit(x, log)


@pytest.mark.parametrize("params, match", [
    ({"k": 0}, "k must be"), ({"k": 2.5}, "k must be"), ({"s": -1.0}, "s must be"),
    ({"s": float("nan")}, "s must be"), ({"atol": 0.0}, "atol"), ({"rtol": -0.1}, "rtol"),
    ({"window": (1,)}, "window"), ({"n_bins": 7}, "n_bins"), ({"ef_search": 0}, "ef_search"),
    ({"pq_nbits": 20}, "pq_nbits"), ({"n_threads": 0}, "n_threads"),
])
def test_invalid_parameters_are_value_errors(fitted, params, match):
    x, log, _ = fitted
    with pytest.raises(InvalidParameterError, match=match) as info:
        LTAUEstimator(**params).fit(x, log)
    assert isinstance(info.value, ValueError) and isinstance(info.value, LTAUError)
    with pytest.raises(ValueError, match="exceeds the 600"):  # caught the usual way
        LTAUEstimator(k=601).fit(x, log)


def test_not_fitted_error(fitted):
    est = LTAUEstimator()
    for call in (lambda: est.predict(np.zeros((2, 8))), lambda: est.kneighbors(np.zeros((1, 8))),
                 lambda: est.save("nowhere"), lambda: est.effective_s(),
                 lambda: cartography_from(est)):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    with pytest.raises(ValueError):
        est.predict(np.zeros((2, 8)))
    assert not hasattr(est, "scale_")  # NotFittedError is an AttributeError, as in sklearn
    assert not est.is_fitted


def test_index_auto_flat_below_threshold_hnsw_above(fitted, monkeypatch):
    x, log, _ = fitted
    est = LTAUEstimator(k=5).fit(x, log)
    assert est.index == "auto" and est.index_kind_ == "flat"
    monkeypatch.setattr(index_module, "AUTO_HNSW_MIN_ATOMS", 600)
    est = LTAUEstimator(k=5).fit(x, log)
    assert est.index == "auto" and est.index_kind_ == "hnsw"
    assert index_module.hnsw_graph(est.index_).hnsw.efSearch == est.ef_search == 24
    monkeypatch.setattr(index_module, "AUTO_HNSW_MIN_ATOMS", 601)
    assert LTAUEstimator(k=5).fit(x, log).index_kind_ == "flat"


def test_scale_resolution_order(fitted):
    """call s > the s parameter > the calibration's group s > its global s > 1."""
    from ltau_md.core.estimator import Calibration

    x, log, _ = fitted
    est = LTAUEstimator(k=5).fit(x, log)
    assert est.scale_ == 1.0 and est.calibration_ is None
    est.calibration_ = Calibration(s=0.7, target_atol=0.05, s_per_group={"hot": 2.0})
    assert est.scale_ == 0.7 and est.effective_s("hot") == 2.0 and est.effective_s("x") == 0.7
    q = x[:20] + 0.01
    assert est.predict(q).s == 0.7 and est.predict(q, group="hot").s == 2.0
    assert est.predict(q, s=1.5, group="hot").s == 1.5
    est.s = 1.2
    assert est.scale_ == 1.2 and est.effective_s("hot") == 1.2
    with pytest.raises(InvalidParameterError, match="s must be"):
        est.predict(q, s=0.0)
    with pytest.raises(InvalidParameterError, match="group 'a'"):
        Calibration(s=1.0, target_atol=0.05, s_per_group={"a": -1.0})


def test_trajectory_warm_start_matches_exact(rng):
    from ltau_md.core.estimator import TrajectoryNeighbors

    n = 20000
    x = clustered(rng, n, d=16, centers=50)
    errs = rng.lognormal(np.log(0.05), 0.7, size=(5, n)).astype(np.float32)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        summ = ErrorSummary.from_logs(make_log(os.path.join(d, "log"), errs))
    flat = LTAUEstimator(k=10).fit(x, summ)
    hnsw = LTAUEstimator(k=10, index="hnsw", ef_search=64).fit(x, summ)
    traj = TrajectoryNeighbors(hnsw)
    q0 = clustered(np.random.default_rng(3), 100, d=16, centers=50)
    drift = np.random.default_rng(4).normal(size=q0.shape).astype(np.float32) * 0.02
    recalls = []
    for t in range(10):
        q = q0 + t * drift
        p, ex = traj.predict(q), flat.predict(q)
        recalls.append(np.mean([len(set(a) & set(b)) / 10
                                for a, b in zip(ex.indices, p.indices, strict=True)]))
        # distances are true Euclidean distances to the returned neighbours
        np.testing.assert_allclose(p.distances, np.linalg.norm(x[p.indices] - q[:, None], axis=-1),
                                   rtol=1e-3, atol=1e-3)
    assert min(recalls) >= 0.95
    assert traj._since_cold == 9  # warm after the first step
    traj.predict(q0[:50])  # atom count changed: cold search
    assert traj._since_cold == 0


def test_histogram_counts_beyond_255_epochs(tmp_path, rng):
    """>= 256 epochs: uint16 histogram counts; p from the histogram at a bin-edge tolerance
    equals the numpy fraction, also where one bin holds all 300 epochs of an atom."""
    n, epochs, atol = 60, 300, 0.05
    errs = rng.lognormal(np.log(atol), 0.8, size=(epochs, n)).astype(np.float32)
    errs[:, ::2] = 0.03  # every epoch of these atoms in one bin: 300 counts (uint8 would wrap)
    log = make_log(tmp_path / "log", errs)
    summ = ErrorSummary.from_logs(log, atol=atol)
    assert summ.hist.dtype == np.uint16 and summ.hist.max() == epochs
    edges = summ.edges
    b = int(np.searchsorted(edges, 0.03))  # first edge above 0.03
    for edge in (edges[b], edges[b + 3], edges[b - 2]):
        exact = (errs.astype(np.float64) <= edge).mean(0)
        np.testing.assert_allclose(summ.confidence(edge / atol)[0], exact, atol=1e-6)
    x = clustered(rng, n)
    est = LTAUEstimator(k=4).fit(x, summ)
    q = clustered(np.random.default_rng(9), 30)
    s = edges[b] / atol
    p_train = (errs.astype(np.float64) <= edges[b]).mean(0)
    conf, _, _ = brute_predict(x.astype(np.float64), q.astype(np.float64), 4, p_train,
                               p_train)
    np.testing.assert_allclose(est.predict(q, s=s).confidence, conf, atol=1e-6)


# ---------------------------------------------------------------------------- cartography
def test_cartography_labels_hand_case():
    mu = np.array([0.95, 0.9, 0.2, 0.1, 0.5, 0.6])
    sig = np.array([0.01, 0.02, 0.01, 0.0, 0.3, 0.25])
    cart = cartography(mu, sig, ambiguous_quantile=0.6, min_ambiguous_sigma=0.05)
    assert cart.label_names().tolist() == ["easy", "easy", "hard", "hard", "ambiguous",
                                           "ambiguous"]
    assert cart.fractions() == pytest.approx({"easy": 1 / 3, "ambiguous": 1 / 3, "hard": 1 / 3})
    assert cart.weights.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(cart.weights, ((1 - mu) + sig) / ((1 - mu) + sig).mean())
    # with an agreeing ensemble (sigma tiny everywhere) nothing is ambiguous
    assert (cartography(mu, np.full(6, 1e-3)).labels != 1).all()
    with pytest.raises(InvalidParameterError, match="ambiguous_quantile"):
        cartography(mu, sig, ambiguous_quantile=2.0)


def test_cartography_from_estimator_equals_numpy(fitted):
    x, log, errs = fitted
    est = LTAUEstimator(k=5).fit(x, log)
    edge = est.summary_.edges[40]  # a bin edge: the histogram p is exact there
    for s, kw in ((1.0, {}), (edge / est.atol_, {"s": edge / est.atol_})):
        p = np.stack([(e.astype(np.float64) <= est.atol_ * s).mean(0) for e in errs])
        c = cartography_from(est, **kw) if kw else cartography_from(est)
        np.testing.assert_allclose(c.mu, p.mean(0), atol=1e-6)
        np.testing.assert_allclose(c.sigma, p.std(0), atol=1e-6)
    # default s: the estimator's scale
    est.s = edge / est.atol_
    p = np.stack([(e.astype(np.float64) <= edge).mean(0) for e in errs])
    np.testing.assert_allclose(cartography_from(est).mu, p.mean(0), atol=1e-6)
    np.testing.assert_allclose(cartography_from(est.summary_).mu,
                               cartography_from(est, s=1.0).mu)
