"""Saving and loading LTAUEstimator: round trips (flat, hnsw, ivfpq, mmap), the calibration
section, and every way an artifact can be wrong (edited, truncated, partial, old, failed save)
ending in ArtifactError with the reason."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import (
    MANIFEST_DIGEST_KEY,
    Calibration,
    LTAUEstimator,
    manifest_digest,
)
from ltau_md.core.exceptions import ArtifactError

PRED_FIELDS = ("confidence", "confidence_std", "uncertainty", "predicted_error", "distances",
               "indices")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """600 clustered training atoms (d=8), two members x 8 epochs of log-normal errors."""
    rng = np.random.default_rng(0)
    centers = np.random.default_rng(42).normal(size=(20, 8)) * 3
    x = (centers[rng.integers(0, 20, 600)] + rng.normal(size=(600, 8)) * 0.3).astype(np.float32)
    log = ErrorLog.create(tmp_path_factory.mktemp("log") / "log", species=np.full(600, 29),
                          frame_offsets=[0, 300, 600], ref_force_norm=np.ones(600))
    for m in range(2):
        for _ in range(8):
            log.append(rng.lognormal(np.log(0.05), 0.7, 600).astype(np.float32), member=m)
    return x, log


def assert_same_prediction(a, b, q, **kw):
    pa, pb = a.predict(q, **kw), b.predict(q, **kw)
    for f in PRED_FIELDS:
        np.testing.assert_array_equal(getattr(pa, f), getattr(pb, f))


def read_manifest(path):
    return json.loads((path / "manifest.json").read_text())


def write_manifest(path, manifest, redigest):
    if redigest:  # a forger who also recomputes the digest: deeper checks must catch it
        manifest[MANIFEST_DIGEST_KEY] = manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_roundtrip_with_calibration_section(data, tmp_path):
    x, log = data
    est = LTAUEstimator(k=5, index="hnsw", metadata={"note": "x"}).fit(x, log)
    q = x[:40] + 0.05
    est.save(tmp_path / "plain")
    m = read_manifest(tmp_path / "plain")
    # no leave-one-out sample: written as version 4, which earlier versions read
    assert m["version"] == 4 and m["index_kind"] == "hnsw" and "calibration" not in m
    assert m["params"]["s"] is None and "s" not in m  # s stored once, as the parameter
    assert m[MANIFEST_DIGEST_KEY] == manifest_digest(m)
    back = LTAUEstimator.load(tmp_path / "plain")
    assert back.calibration_ is None and back.scale_ == 1.0 and back.index_kind_ == "hnsw"
    assert back.metadata == {"note": "x"} and back.get_params() == est.get_params()
    assert_same_prediction(est, back, q)
    est.calibration_ = Calibration(s=0.6, target_atol=0.04, s_per_group={"hot": 1.7},
                                   group_key="config_type", area=0.01, n_atoms=100)
    est.save(tmp_path / "cal")
    m = read_manifest(tmp_path / "cal")
    assert m["calibration"]["s"] == 0.6 and "thresholds" not in m["calibration"]
    assert "alarm_statistics" not in m  # none fitted
    back = LTAUEstimator.load(tmp_path / "cal")
    assert back.calibration_ == est.calibration_ and back.s is None and back.scale_ == 0.6
    assert_same_prediction(est, back, q)
    assert_same_prediction(est, back, q, group="hot")
    assert back.predict(q, group="hot").s == 1.7
    # overwrite in place leaves a complete artifact and no temp dirs
    back.save(tmp_path / "cal")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_mmap_and_ivfpq_roundtrip(data, tmp_path):
    x, log = data
    est = LTAUEstimator(k=5, index="ivfpq", ivf_nlist=8, pq_m=4, pq_nbits=4, nprobe=3).fit(x, log)
    est.save(tmp_path / "ivf")
    assert read_manifest(tmp_path / "ivf")["index_kind"] == "ivfpq"
    back = LTAUEstimator.load(tmp_path / "ivf", mmap=True)
    assert isinstance(back.index_, faiss.IndexIVFPQ) and back.index_kind_ == "ivfpq"
    assert faiss.extract_index_ivf(back.index_).nprobe == 3
    assert isinstance(back.summary_.hist, np.memmap) and isinstance(back.summary_.p0, np.memmap)
    q = x[:50] + 0.02
    assert_same_prediction(est, back, q)
    assert_same_prediction(est, back, q, s=2.3)  # histogram path, memory-mapped


def test_corrupt_partial_and_old_artifacts(data, tmp_path):
    x, log = data
    est = LTAUEstimator(k=5).fit(x, log)
    path = est.save(tmp_path / "est")
    f = path / "p0.npy"
    b = bytearray(f.read_bytes())
    b[-1] ^= 0xFF
    f.write_bytes(bytes(b))
    with pytest.raises(ArtifactError, match="p0.npy is corrupt"):
        LTAUEstimator.load(path)
    # verify=False skips the data-file checksums (and only those): the flipped byte loads
    flipped = LTAUEstimator.load(path, verify=False)
    assert not np.array_equal(flipped.summary_.p0, est.summary_.p0)
    # ... but a truncated array is still an ArtifactError, not a numpy error
    f.write_bytes(f.read_bytes()[:60])
    with pytest.raises(ArtifactError, match="cannot read the summary arrays"):
        LTAUEstimator.load(path, verify=False)
    (path / "index.faiss").unlink()
    with pytest.raises(ArtifactError, match="index.faiss is missing"):
        LTAUEstimator.load(path)
    good = est.save(tmp_path / "good")
    text = (good / "manifest.json").read_text()
    (good / "manifest.json").write_text(text[: len(text) // 2])  # truncated manifest
    with pytest.raises(ArtifactError, match="corrupt estimator manifest"):
        LTAUEstimator.load(good)
    good = est.save(tmp_path / "good2")
    m = read_manifest(good)
    m["version"] = 1  # an artifact of the old format
    write_manifest(good, m, redigest=False)
    with pytest.raises(ArtifactError, match="version 1.*re-fit"):
        LTAUEstimator.load(good)
    m["version"] = 99
    write_manifest(good, m, redigest=True)
    with pytest.raises(ArtifactError, match="version 99"):
        LTAUEstimator.load(good)


def _set(key, value):
    def edit(m):
        node = m
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


def _drop(key):
    return lambda m: m.pop(key)


EDITS = {
    "n_train": (_set("n_train", 599), "n_train 599"),
    "atol": (_set("summary.atol", 0.07), "atol 0.07"),
    "species": (_set("species", [8, 29]), "species"),
    "dim": (_set("dim", 9), "dim 9"),
    "k": (_set("params.k", 0), "k must be"),
    "k>n": (_set("params.k", 601), "k=601 exceeds"),
    "index param": (_set("params.index", "bogus"), "index must be"),
    "unknown param": (_set("params.colour", "red"), "unknown or missing"),
    "index kind": (_set("index_kind", "hnsw"), "does not match the stored IndexFlatL2"),
    "no files": (_drop("files"), "lacks 'files'"),
    "no params": (_drop("params"), "lacks 'params'"),
    "extra file": (lambda m: m["files"].update({"../x.npy": "00"}), "lists files"),
    "calibration": (_set("calibration", {"s": -1.0, "target_atol": 0.05}), "calibration s"),
    "calibration keys": (_set("calibration", {"s": 1.0}), "lacks \\['target_atol'\\]"),
}


@pytest.mark.parametrize("name", list(EDITS))
@pytest.mark.parametrize("redigest", [False, True])
def test_edited_manifest_is_artifact_error(data, tmp_path, name, redigest):
    x, log = data
    path = LTAUEstimator(k=5).fit(x, log).save(tmp_path / "est")
    edit, reason = EDITS[name]
    m = read_manifest(path)
    edit(m)
    write_manifest(path, m, redigest)
    match = reason if redigest else "was edited or is corrupt"
    for verify in (True, False):
        with pytest.raises(ArtifactError, match=match):
            LTAUEstimator.load(path, verify=verify)


def test_failed_save_keeps_old_artifact(data, tmp_path, monkeypatch):
    x, log = data
    old = LTAUEstimator(k=5).fit(x, log)
    path = old.save(tmp_path / "est")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    new = LTAUEstimator(k=3, index="hnsw").fit(x, log)

    def boom(index, fname):
        with open(fname, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        new.save(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["est"]  # no temp dirs behind
    monkeypatch.undo()
    assert LTAUEstimator.load(path).k == 5
