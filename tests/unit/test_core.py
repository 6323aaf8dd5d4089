"""Core LTAU: error log, per-atom confidence and the FAISS estimator against brute-force numpy."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ltau_md import (
    ArtifactError,
    DataError,
    DescriptorError,
    ErrorLog,
    ErrorSummary,
    LTAUEstimator,
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
    with pytest.raises(ArtifactError, match="different datasets"):
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


def test_save_load_bit_identical_and_corruption(fitted, tmp_path):
    x, log, _ = fitted
    est = LTAUEstimator(k=5, index="hnsw", s=1.3, metadata={"note": "x"}).fit(x, log)
    q = x[:40] + 0.05
    before = est.predict(q)
    est.save(tmp_path / "est")
    loaded = LTAUEstimator.load(tmp_path / "est")
    after = loaded.predict(q)
    for f in ("confidence", "confidence_std", "uncertainty", "predicted_error", "distances",
              "indices"):
        np.testing.assert_array_equal(getattr(before, f), getattr(after, f))
    assert loaded.metadata == {"note": "x"} and loaded.s == 1.3 and loaded.k == 5
    # overwrite keeps a complete artifact
    est.save(tmp_path / "est")
    assert sorted(p.name for p in (tmp_path).iterdir() if p.name.startswith(".")) == []
    # corruption: flip a byte in the summary
    f = tmp_path / "est" / "p0.npy"
    b = bytearray(f.read_bytes())
    b[-1] ^= 0xFF
    f.write_bytes(bytes(b))
    with pytest.raises(ArtifactError, match="p0.npy is corrupt"):
        LTAUEstimator.load(tmp_path / "est")
    (tmp_path / "est" / "index.faiss").unlink()
    with pytest.raises(ArtifactError, match="index.faiss is missing"):
        LTAUEstimator.load(tmp_path / "est")
    (tmp_path / "est" / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt estimator manifest"):
        LTAUEstimator.load(tmp_path / "est")
    m = tmp_path / "est2"
    est.save(m)
    man = json.loads((m / "manifest.json").read_text())
    man["version"] = 99
    (m / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="version 99"):
        LTAUEstimator.load(m)


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
    with pytest.raises(ValueError, match="index must be"):
        LTAUEstimator(index="bogus").fit(x, log)


def test_trajectory_warm_start_matches_exact(rng):
    from ltau_md.estimator import TrajectoryNeighbors

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
