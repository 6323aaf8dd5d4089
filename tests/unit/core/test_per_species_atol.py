"""Per-species tolerance (atol="per_species" or {Z: atol_Z}, eV/A) of ErrorSummary / LTAUEstimator:
hand-computed p, unchanged global default, exact reads at per-species bin edges, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ltau_md.core.confidence import PER_SPECIES, ErrorSummary, bin_index, check_atol, make_edges
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import ArtifactError, DataError, InvalidParameterError

# 3 atoms (H, O, H), 4 epochs, errors in eV/A
TINY_Z = np.array([1, 8, 1])
TINY_ERR = np.array([[0.10, 0.40, 0.30],
                     [0.20, 0.20, 0.05],
                     [0.05, 0.50, 0.25],
                     [0.15, 0.30, 0.05]])


def make_log(path, errors, species, ref=None, members=1, seed=1):
    e, n = errors.shape
    log = ErrorLog.create(path, species=species, frame_offsets=[0, n],
                          ref_force_norm=np.ones(n) if ref is None else ref)
    rng = np.random.default_rng(seed)
    for m in range(members):
        scale = 1.0 if m == 0 else rng.uniform(0.7, 1.3, size=(e, n))
        for row in errors * scale:
            log.append(row, member=m)
    return log


def test_per_species_tiny_log_by_hand(tmp_path):
    log = make_log(tmp_path / "log", TINY_ERR, TINY_Z)
    summ = ErrorSummary.from_logs(log, atol="per_species")
    # last epoch: H atoms 0.15, 0.05 -> atol_H = 0.10; O atom 0.30 -> atol_O = 0.30
    assert summ.atol_per_species == pytest.approx({1: 0.10, 8: 0.30})
    # reference atol: atom-weighted mean = global last-epoch MAE (0.15 + 0.30 + 0.05) / 3
    assert summ.atol == pytest.approx(0.5 / 3)
    np.testing.assert_allclose(summ.atol_of(), [0.10, 0.30, 0.10])
    # atom 0 (H): 0.10, 0.20, 0.05, 0.15 <= 0.10 -> 2/4; atom 1 (O): 0.40, 0.20, 0.50, 0.30
    # <= 0.30 -> 2/4; atom 2 (H): 0.30, 0.05, 0.25, 0.05 <= 0.10 -> 2/4
    np.testing.assert_allclose(summ.p0[0], [0.5, 0.5, 0.5])
    # s = 2.10 (a bin edge, 10**(5 * 4/62)): H tolerance 0.210 -> atom 0: 4/4, atom 2: 2/4;
    # O tolerance 0.630 -> 4/4
    s = float(make_edges(1.0)[37])
    assert s == pytest.approx(10 ** (20 / 62))
    p2, _ = summ.confidence(s)
    np.testing.assert_allclose(p2, [1.0, 1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(summ.tolerance(s), [0.1 * s, 0.3 * s, 0.1 * s])
    # the global atol judges all three atoms at 0.5/3 eV/A instead
    glob = ErrorSummary.from_logs(log)
    np.testing.assert_allclose(glob.p0[0], [0.75, 0.0, 0.5])
    # a given dict, with an element the log lacks (ignored) and string keys
    d = ErrorSummary.from_logs(log, atol={"1": 0.22, 8: 0.45, 29: 1.0})
    assert d.atol_per_species == {1: 0.22, 8: 0.45}
    np.testing.assert_allclose(d.p0[0], [1.0, 0.75, 0.5])
    np.testing.assert_allclose(d.tolerance(3.0), [0.66, 1.35, 0.66])


def test_per_species_equals_numpy_with_rtol_and_window(tmp_path):
    rng = np.random.default_rng(0)
    n, e = 90, 20
    z = rng.choice([1, 6, 8], n)
    scale = np.where(z == 1, 0.03, np.where(z == 6, 0.08, 0.15))
    errs = rng.lognormal(np.log(scale), 0.7, size=(e, n))
    ref = rng.gamma(2.0, 1.0, n)
    log = make_log(tmp_path / "log", errs, z, ref=ref, members=2)
    all_errs = [log.read_epoch(t, m).astype(np.float64) for m in (0, 1) for t in range(e)]
    all_errs = np.array(all_errs).reshape(2, e, n)
    atol_z = {int(k): float(np.mean([all_errs[m, -1][z == k].mean() for m in (0, 1)]))
              for k in (1, 6, 8)}
    rtol = 0.02
    summ = ErrorSummary.from_logs(log, atol="per_species", rtol=rtol, start=2, stop=18)
    assert summ.atol_per_species == pytest.approx(atol_z, rel=1e-12)
    a_i = np.array([atol_z[int(k)] for k in z])
    ref32 = ref.astype(np.float32).astype(np.float64)
    tol = a_i + rtol * ref32
    p = (all_errs[:, 2:18] <= tol).mean(1)
    np.testing.assert_allclose(summ.p0, p, atol=1e-6)
    # per-species bin edges: p at a tolerance atol_Z*s with s an edge of make_edges(1) is exact
    rel = make_edges(1.0)[1:-1]
    summ0 = ErrorSummary.from_logs(log, atol="per_species", start=2, stop=18)
    for b in (5, 20, 31, 44):
        s = float(rel[b])
        exact = (all_errs[:, 2:18] <= a_i * s).mean(1)
        np.testing.assert_allclose(summ0.member_confidence(s), exact, atol=1e-6)
        rows = np.array([3, 0, 7, 7, 50])  # any subset, repeated rows, any order
        np.testing.assert_allclose(summ0.member_confidence(s, rows), exact[:, rows], atol=1e-6)
    # each atom's counts lie in its own element's bins
    for k in (1, 6, 8):
        sel = z == k
        edges = summ0.edges_of(k)
        assert edges[len(edges) // 2] == atol_z[k]  # atol_Z is an exact edge
        want = np.zeros((int(sel.sum()), edges.size - 1), dtype=np.int64)
        for t in range(2, 18):
            np.add.at(want, (np.arange(sel.sum()), bin_index(edges, all_errs[0, t][sel])), 1)
        np.testing.assert_array_equal(summ0.hist[0][sel], want)
    assert summ0.nbytes_per_atom == pytest.approx(2 * (64 + 8) + 8)


def test_global_default_unchanged(tmp_path):
    """atol=None / a float: the same histograms, p and edges as the single-atol algorithm
    (re-implemented here), and a dict giving every element that atol gives the same p."""
    rng = np.random.default_rng(5)
    n, e = 70, 12
    z = rng.choice([1, 8], n)
    errs = rng.lognormal(np.log(0.05), 0.8, size=(e, n))
    log = make_log(tmp_path / "log", errs, z)
    err32 = np.array([log.read_epoch(t, 0) for t in range(e)])
    for atol in (None, 0.04):
        summ = ErrorSummary.from_logs(log, atol=atol)
        a = float(err32[-1].mean(dtype=np.float64)) if atol is None else atol
        assert summ.atol == a and summ.atol_per_species is None
        edges = make_edges(a)
        np.testing.assert_array_equal(summ.edges, edges)
        hist = np.zeros((n, 64), dtype=np.int64)
        for t in range(e):
            hist[np.arange(n), bin_index(edges, err32[t])] += 1
        np.testing.assert_array_equal(summ.hist[0], hist)
        np.testing.assert_array_equal(summ.p0[0], ((err32 <= a).sum(0) / e).astype(np.float32))
        assert summ.scalars()["atol_per_species"] is None
        same = ErrorSummary.from_logs(log, atol={1: a, 8: a})
        np.testing.assert_array_equal(same.hist, summ.hist)
        np.testing.assert_array_equal(same.p0, summ.p0)
        for s in (0.3, 1.7, float(edges[40] / a)):
            np.testing.assert_allclose(same.confidence(s)[0], summ.confidence(s)[0], atol=1e-6)


def test_estimator_save_load_keeps_per_species(tmp_path):
    rng = np.random.default_rng(2)
    n, e = 300, 10
    z = rng.choice([1, 6, 8, 13], n)  # 13 after 8: JSON key order must not break the digest
    errs = rng.lognormal(np.log(np.where(z == 1, 0.02, 0.1)), 0.6, size=(e, n))
    log = make_log(tmp_path / "log", errs, z, members=2)
    x = (rng.normal(size=(n, 6)) + z[:, None]).astype(np.float32)
    q = (rng.normal(size=(40, 6)) + rng.choice([1, 6, 8, 13], 40)[:, None]).astype(np.float32)
    for atol in ("per_species", {13: 0.2, 1: 0.03, 8: 0.1, 6: 0.12}):
        est = LTAUEstimator(k=5, atol=atol).fit(x, log)
        assert est.summary_.atol_per_species is not None
        est.save(tmp_path / "est")
        manifest = json.loads((tmp_path / "est" / "manifest.json").read_text())
        stored = manifest["summary"]["atol_per_species"]
        assert stored == {str(k): v for k, v in est.summary_.atol_per_species.items()}
        back = LTAUEstimator.load(tmp_path / "est")
        assert back.summary_.atol_per_species == est.summary_.atol_per_species
        assert back.get_params() == est.get_params()
        assert back.atol_ == est.atol_
        for s in (None, 1.0, 0.5, 2.3):
            a, b = est.predict(q, s=s), back.predict(q, s=s)
            np.testing.assert_array_equal(a.confidence, b.confidence)
            np.testing.assert_array_equal(a.confidence_std, b.confidence_std)
        np.testing.assert_array_equal(back.summary_.confidence(0.7)[0],
                                      est.summary_.confidence(0.7)[0])
    # differs from the global-atol estimator
    glob = LTAUEstimator(k=5).fit(x, log)
    assert glob.summary_.scalars()["atol_per_species"] is None
    assert not np.allclose(glob.predict(q).confidence, est.predict(q).confidence)


def test_artifact_missing_element_is_refused(tmp_path):
    log = make_log(tmp_path / "log", TINY_ERR, TINY_Z)
    summ = ErrorSummary.from_logs(log, atol=PER_SPECIES)
    scal = summ.scalars()
    back = ErrorSummary.from_arrays(summ.arrays(), json.loads(json.dumps(scal)))
    assert back.atol_per_species == summ.atol_per_species
    scal["atol_per_species"] = {"1": 0.1}
    with pytest.raises(ArtifactError, match=r"lacks elements \[8\]"):
        ErrorSummary.from_arrays(summ.arrays(), scal)
    scal["atol_per_species"] = {"1": 0.1, "8": -1.0}
    with pytest.raises(ArtifactError, match="positive"):
        ErrorSummary.from_arrays(summ.arrays(), scal)
    old = {k: v for k, v in summ.scalars().items() if k != "atol_per_species"}
    assert ErrorSummary.from_arrays(summ.arrays(), old).atol_per_species is None  # older files


def test_atol_option_validation(tmp_path):
    assert check_atol(None) is None and check_atol(0.05) == 0.05
    assert check_atol({8: 0.2, "1": 0.1, 13: 0.3}) == {"1": 0.1, "8": 0.2, "13": 0.3}
    for bad, match in (("per_atom", "per_species"), ({}, "empty"), ({0: 0.1}, "atomic"),
                       ({1: 0.0}, "positive"), ({1: "x"}, "number"), (True, "number"),
                       (-0.1, "positive"), ({1: 0.1, "1": 0.2}, "twice")):
        with pytest.raises(InvalidParameterError, match=match):
            check_atol(bad)
        with pytest.raises(InvalidParameterError):
            LTAUEstimator(atol=bad).check_params()
    log = make_log(tmp_path / "log", TINY_ERR, TINY_Z)
    with pytest.raises(DataError, match=r"lacks elements \[8\]"):
        ErrorSummary.from_logs(log, atol={1: 0.1})
    zero = make_log(tmp_path / "zero", np.vstack([TINY_ERR, [0.1, 0.0, 0.1]]), TINY_Z)
    with pytest.raises(DataError, match="positive"):
        ErrorSummary.from_logs(zero, atol="per_species")
