"""The leave-one-out novelty reference of a sample of training atoms (large training sets):
which atoms are drawn, their values against brute-force numpy, persistence, and the
training-LOO alarm statistics taken on a sample of whole frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ltau_md.core.calibration import alarm_statistics_from_training
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import VERSION, LTAUEstimator
from ltau_md.core.estimator import _novelty as novelty_module
from ltau_md.core.exceptions import ArtifactError, DataError

K = 4


def _data(n_frames=60, per_frame=10, dim=5, seed=0):
    """Frames of 9 H atoms (tight cluster) and 1 O atom (wide cluster)."""
    rng = np.random.default_rng(seed)
    z = np.tile(np.r_[np.ones(per_frame - 1, int), 8], n_frames)
    x = np.where(z[:, None] == 1, rng.normal(0, 0.3, (z.size, dim)),
                 rng.normal(3, 1.0, (z.size, dim))).astype(np.float32)
    return x, z, np.arange(n_frames + 1) * per_frame


def _log(tmp_path, z, offsets):
    log = ErrorLog.create(tmp_path / "log", species=z, frame_offsets=offsets,
                          ref_force_norm=np.ones(z.size))
    rng = np.random.default_rng(1)
    for _ in range(3):
        log.append(rng.gamma(2.0, 0.05, z.size))
    return log


def _brute_loo(x, rows, k=K):
    d = np.sqrt(((x[rows, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    d[np.arange(rows.size), rows] = np.inf
    return np.sort(d, axis=1)[:, :k].mean(1)


@pytest.fixture
def small_sample(monkeypatch):
    """Sampling from 200 atoms on: about 150 atoms, at least 40 of each element."""
    monkeypatch.setattr(novelty_module, "LOO_FULL_MAX_ATOMS", 200)
    monkeypatch.setattr(novelty_module, "LOO_SAMPLE_ATOMS", 150)
    monkeypatch.setattr(novelty_module, "LOO_SAMPLE_ATOMS_FLAT", 150)
    monkeypatch.setattr(novelty_module, "LOO_MIN_PER_ELEMENT", 40)


def test_sample_is_stratified_seeded_and_exact(tmp_path, small_sample):
    x, z, off = _data()
    est = LTAUEstimator(k=K, index="flat").fit(x, _log(tmp_path, z, off))
    rows = est.loo_rows_
    assert rows is not None and np.all(np.diff(rows) > 0)
    # H: 540 atoms, share 0.9 * 150 = 135; O: 60 atoms, share 15 -> raised to the floor 40
    assert np.sum(z[rows] == 1) == 135 and np.sum(z[rows] == 8) == 40
    np.testing.assert_array_equal(rows, novelty_module.loo_sample(z, index_kind="flat"))
    loo = _brute_loo(x, rows)
    np.testing.assert_allclose(est.knn_distance_, loo, rtol=1e-4)
    scale = {zz: np.median(loo[z[rows] == zz]) for zz in (1, 8)}
    assert est.novelty_scale_ == pytest.approx(scale, rel=1e-5)
    np.testing.assert_allclose(est.train_novelty_,
                               loo / np.array([scale[zz] for zz in z[rows]]), rtol=1e-4)
    # a query's p-value is read against the sample of its element
    q = x[[3, 9]] * 1.01
    pred = est.predict(q, species=z[[3, 9]])
    for v, zz, p in zip(pred.novelty, z[[3, 9]], pred.novelty_pvalue, strict=True):
        ref = est.train_novelty_[z[rows] == zz]
        assert p == pytest.approx((1 + np.sum(ref >= v)) / (1 + ref.size))
    # on demand, any rows: the same values
    some = np.array([5, 0, 597])
    np.testing.assert_allclose(est.leave_one_out_novelty(some),
                               _brute_loo(x, some) / np.array([scale[zz] for zz in z[some]]),
                               rtol=1e-4)


def test_sample_is_larger_for_approximate_indexes(monkeypatch):
    monkeypatch.setattr(novelty_module, "LOO_FULL_MAX_ATOMS", 200)
    monkeypatch.setattr(novelty_module, "LOO_MIN_PER_ELEMENT", 10)
    z = np.tile(np.r_[np.ones(9, int), 8], 3000)
    flat = novelty_module.loo_sample(z, index_kind="flat")
    hnsw = novelty_module.loo_sample(z, index_kind="hnsw")
    assert flat.size == pytest.approx(novelty_module.LOO_SAMPLE_ATOMS_FLAT, abs=2)
    assert hnsw.size == pytest.approx(novelty_module.LOO_SAMPLE_ATOMS, abs=2)


def test_local_novelty_and_small_sets_use_every_atom(tmp_path, small_sample):
    x, z, off = _data()
    log = _log(tmp_path, z, off)
    local = LTAUEstimator(k=K, index="flat", novelty="local").fit(x, log)
    assert local.loo_rows_ is None and local.knn_distance_.shape == (z.size,)
    small = LTAUEstimator(k=K, index="flat").fit(x[:200], None, species=z[:200])
    assert small.loo_rows_ is None
    np.testing.assert_allclose(small.knn_distance_, _brute_loo(x[:200], np.arange(200)),
                               rtol=1e-4)


def test_sampled_reference_survives_save_load_and_damage_is_caught(tmp_path, small_sample):
    x, z, off = _data()
    est = LTAUEstimator(k=K, index="hnsw").fit(x, _log(tmp_path, z, off))
    est.save(tmp_path / "est")
    m = json.loads((tmp_path / "est" / "manifest.json").read_text())
    assert m["version"] == VERSION == 5 and "loo_rows.npy" in m["files"]
    back = LTAUEstimator.load(tmp_path / "est")
    np.testing.assert_array_equal(back.loo_rows_, est.loo_rows_)
    q = x[:20] + 0.05
    a, b = est.predict(q, species=z[:20]), back.predict(q, species=z[:20])
    np.testing.assert_allclose(a.novelty, b.novelty, rtol=1e-6)
    np.testing.assert_array_equal(a.novelty_pvalue, b.novelty_pvalue)
    np.save(tmp_path / "est" / "loo_rows.npy", est.loo_rows_[::-1])
    with pytest.raises(ArtifactError, match="loo_rows.npy must hold increasing"):
        LTAUEstimator.load(tmp_path / "est", verify=False)


def test_training_loo_statistics_take_whole_sampled_frames(tmp_path, small_sample):
    x, z, off = _data()
    est = LTAUEstimator(k=K, index="flat").fit(x, _log(tmp_path, z, off))
    out = alarm_statistics_from_training(est, off, stats=("novelty:max",), store=False)
    got = out["novelty:max"]
    # 10-atom frames until >= 150 atoms: 15 frames, drawn by the seeded permutation
    pick = np.sort(np.random.default_rng(0).permutation(60)[:15])
    assert got["n_frames"] == 15 and got["source"] == "training-loo"
    scale = est.novelty_scale_
    want = sorted(
        (_brute_loo(x, np.arange(off[f], off[f + 1]))
         / np.array([scale[zz] for zz in z[off[f]:off[f + 1]]])).max() for f in pick)
    np.testing.assert_allclose(got["values"], want, rtol=1e-4)


def test_ivfpq_on_demand_needs_the_descriptors(tmp_path, small_sample):
    x, z, off = _data(n_frames=120)
    x = np.tile(x, (1, 2))[:, :8]  # 8 dims: PQ4 divides it
    est = LTAUEstimator(k=K, index="ivfpq", pq_m=4, pq_nbits=4, ivf_nlist=4,
                        nprobe=4).fit(x, _log(tmp_path, z, off))
    with pytest.raises(DataError, match="pass descriptors="):
        est.leave_one_out_novelty([0, 1])
    out = alarm_statistics_from_training(est, off, stats=("novelty:max",), store=False,
                                         descriptors=x)
    assert out["novelty:max"]["n_frames"] == 15


def test_release_pages_drops_a_memory_map_from_the_resident_set(tmp_path):
    """After a pass over a memory-mapped array, release_pages lets its pages go (the
    mapping's resident size falls to ~0, read from /proc/self/smaps) and the data read
    again are unchanged; arrays that are not memory-mapped are left alone."""
    from ltau_md.core.estimator._index import release_pages

    a = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (1 << 18, 8))
    a[:] = np.arange(a.size, dtype=np.float32).reshape(a.shape)
    a.flush()
    del a
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    total = float(x.sum(dtype=np.float64))

    def resident_kb():
        with open("/proc/self/smaps") as f:
            text = f.read()
        path = str(tmp_path / "x.npy")
        rss, inside = 0, False
        for line in text.splitlines():
            if "-" in line.split(" ")[0] and len(line.split()) >= 5:
                inside = line.rstrip().endswith(path)
            elif inside and line.startswith("Rss:"):
                rss += int(line.split()[1])
        return rss

    assert resident_kb() > 4000  # 8 MB read
    release_pages(np.asarray(x)[10:])  # a view of the map is enough
    assert resident_kb() < 100
    assert float(x.sum(dtype=np.float64)) == total
    release_pages(np.ones(3))  # not a map: nothing happens
