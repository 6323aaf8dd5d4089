"""Combined frame statistics (ltau_md.core.metrics._combined) against brute-force loops written
here from the definitions; the size adjustment against replicated in-domain frames; the
default alarm's fallbacks. End to end (fitted, stored, watched along MD): test_alarms.py."""

from __future__ import annotations

import numpy as np
import pytest

from ltau_md.core.calibration import (
    DEFAULT_ALARM,
    DEFAULT_SIGNALS,
    FALLBACK_ALARM,
    default_alarm,
)
from ltau_md.core.exceptions import InvalidParameterError
from ltau_md.core.metrics import (
    TAIL_FRACTION,
    alarm_threshold,
    combined_components,
    combined_statistics,
    element_normalised,
    fit_combined,
    own_frame_counts,
    tail_pvalue,
)
from ltau_md.core.observers import Threshold


def brute_p(v, ref, exclude_self=False, others=None):
    """Conformal tail p-value by counting the ``others`` (default: ``ref``, less ``v`` itself
    with ``exclude_self``); where none of them is >= v the predictive tail of the values of
    ``ref`` above its 80 % quantile, f (1 + (v - u)/S)^-k, where it is smaller."""
    ref = np.asarray(ref, float)
    if others is None:
        others = list(ref)
        if exclude_self:
            others.remove(v)
    p = (1 + sum(r >= v for r in others)) / (len(others) + 1)
    u = np.quantile(ref, 1 - TAIL_FRACTION)
    top = ref[ref > u]
    if not any(r >= v for r in others) and top.size:
        p = min(p, top.size / ref.size * (1 + (v - u) / (top - u).sum()) ** -top.size)
    return max(p, 1e-300)


def frames(rng, n_frames, n_mol=1):
    """Frames of n_mol 3-atom molecules (Z 1, 1, 6); per-atom signals a, b iid per element,
    H's heavy-tailed."""
    z = np.tile([1, 1, 6], n_mol * n_frames)
    a = np.where(z == 1, rng.standard_exponential(z.size) * 3, rng.normal(0, 1, z.size))
    b = np.where(z == 1, rng.lognormal(0, 1, z.size), rng.normal(5, 1, z.size))
    off = np.arange(n_frames + 1) * 3 * n_mol
    return {"a": a, "b": b}, z, off


def test_tail_pvalue_equals_counting():
    rng = np.random.default_rng(0)
    ref = np.sort(rng.normal(size=50))
    v = np.r_[rng.normal(size=20), ref[[0, 10, 49]], 3.0, 10.0]
    np.testing.assert_allclose(tail_pvalue(v, ref), [brute_p(x, ref) for x in v])
    np.testing.assert_allclose(tail_pvalue(ref, ref, leave_one_out=True),
                               [brute_p(x, ref, exclude_self=True) for x in ref])
    assert tail_pvalue(np.array([1e200]), ref)[0] == 1e-300


def test_element_normalisation_and_combination_equal_loops():
    rng = np.random.default_rng(1)
    sig, z, off = frames(rng, 40)
    signal = "a+b/element"
    assert combined_components(signal) == [("a", False), ("b", True)]
    ref, loo = fit_combined(signal, "max", sig, off, z)
    # references: in-domain atoms of each element, frame maxima of each component
    assert ref["atoms"]["b"]["1"] == sorted(sig["b"][z == 1])
    nb = np.array([-np.log(brute_p(v, sig["b"][z == e])) for v, e in zip(sig["b"], z,
                                                                         strict=True)])
    np.testing.assert_allclose(element_normalised(sig["b"], z, ref["atoms"]["b"]), nb)
    # an element without in-domain atoms (Z 8 here) against every element's atoms pooled
    got = element_normalised(np.array([0.5, 40.0]), np.array([8, 8]), ref["atoms"]["b"])
    np.testing.assert_allclose(got, [-np.log(brute_p(v, sig["b"])) for v in (0.5, 40.0)])
    fa = [sig["a"][i:j].max() for i, j in zip(off[:-1], off[1:], strict=True)]
    # the in-domain frames themselves: each frame's atoms against the other frames' atoms of
    # their element, its maxima against the other frames'
    frame = np.repeat(np.arange(off.size - 1), 3)
    nb_own = np.array([-np.log(brute_p(v, sig["b"][z == e], others=list(
        sig["b"][(z == e) & (frame != f)]))) for v, e, f in zip(sig["b"], z, frame,
                                                                  strict=True)])
    fb_own = [nb_own[i:j].max() for i, j in zip(off[:-1], off[1:], strict=True)]
    want = [-np.log(brute_p(x, fa, True)) - np.log(brute_p(y, fb_own, True))
            for x, y in zip(fa, fb_own, strict=True)]
    np.testing.assert_allclose(loo, want)
    # new frames: against the references, no leave-one-out; 2x bigger frames: p -> 1-(1-p)^2
    new, zn, offn = frames(rng, 10, n_mol=2)
    nbn = element_normalised(new["b"], zn, ref["atoms"]["b"])
    got = combined_statistics(signal, "max", new, offn, ref, zn, size_ratio=2.0)
    want = []
    for i, j in zip(offn[:-1], offn[1:], strict=True):
        pa, pb = brute_p(new["a"][i:j].max(), fa), brute_p(nbn[i:j].max(), fb_own)
        want.append(-np.log(1 - (1 - pa) ** 2) - np.log(1 - (1 - pb) ** 2))
    np.testing.assert_allclose(got, want, rtol=1e-10)
    with pytest.raises(InvalidParameterError, match="combined signal"):
        combined_components("a+/element")
    for bad in ("gmm+", "gmm+gmm"):             # refused when the policy is made
        with pytest.raises(InvalidParameterError, match="combined signal"):
            Threshold("stop", signal=bad, alarm_rate=0.01)


def test_the_in_domain_rate_holds_for_frames_ten_times_larger():
    """Thresholds from 1-molecule frames; in-domain frames of 10 molecules alarm at about the
    nominal rate with the size adjustment, at several times it without."""
    rng = np.random.default_rng(2)
    sig, z, off = frames(rng, 2000)
    ref, loo = fit_combined("a+b/element", "max", sig, off, z)
    thr = alarm_threshold(loo, 0.05)
    big, zb, offb = frames(rng, 2000, n_mol=10)
    rate = np.mean(combined_statistics("a+b/element", "max", big, offb, ref, zb,
                                       size_ratio=10.0) > thr)
    raw = np.mean(combined_statistics("a+b/element", "max", big, offb, ref, zb) > thr)
    assert 0.5 * 0.05 <= rate <= 1.5 * 0.05, rate
    assert raw > 3 * 0.05, raw


def test_default_alarm_falls_back_by_the_signals_fitted():
    class E:
        signals_: dict = {}
    e = E()
    assert default_alarm(e) == FALLBACK_ALARM
    e.signals_ = {"gmm": None}
    assert default_alarm(e) == "gmm:max"
    # an estimator fitted with the previous default's signals keeps the previous default
    e.signals_ = {"gmm": None, "clustered_doptimality": None}
    assert default_alarm(e) == "gmm+clustered_doptimality/element:max"
    e.signals_ = dict.fromkeys(DEFAULT_SIGNALS)
    assert default_alarm(e) == DEFAULT_ALARM
    e.signals_ = {"gmm": None, **dict.fromkeys(DEFAULT_SIGNALS)}
    assert default_alarm(e) == DEFAULT_ALARM


def test_an_element_without_in_domain_atoms_is_named_at_fit():
    """Training holds O, the in-domain frames do not: fit_alarm_thresholds says so, and an O
    atom is then scored against the pooled references, not as infinitely novel."""
    from ltau_md.core.calibration import fit_alarm_thresholds
    from ltau_md.core.estimator import LTAUEstimator

    rng = np.random.default_rng(3)
    z = np.tile([1, 6, 8], 200)
    est = LTAUEstimator(k=3, signals=DEFAULT_SIGNALS).fit(rng.normal(size=(z.size, 4)), None,
                                                         species=z)
    zi = np.tile([1, 6], 60)
    per_atom = est.signal_values(rng.normal(size=(zi.size, 4)), zi)
    with pytest.warns(UserWarning, match=r"no atoms of elements \[8\]"):
        entry = fit_alarm_thresholds(est, per_atom, np.arange(61) * 2, stats=[DEFAULT_ALARM],
                                     numbers=zi, store=False)[DEFAULT_ALARM]
    q = rng.normal(size=(3, 4))
    v = combined_statistics(DEFAULT_ALARM.split(":")[0], "max",
                            est.signal_values(q, np.array([1, 6, 8])), np.array([0, 3]),
                            entry["reference"], np.array([1, 6, 8]))
    assert np.isfinite(v).all() and v[0] < 50


def test_own_frame_counts_equal_counting_with_ties():
    rng = np.random.default_rng(4)
    for _ in range(50):
        sizes = rng.integers(1, 7, rng.integers(1, 6))
        off = np.r_[0, np.cumsum(sizes)]
        n = int(off[-1])
        v = rng.integers(0, 3, n).astype(float)           # many ties
        z, m = rng.integers(1, 3, n), rng.random(n) < 0.8
        ge, cnt = own_frame_counts(v, z, off, m)
        frame = np.repeat(np.arange(sizes.size), sizes)
        for i in range(n):
            same = (frame == frame[i]) & (z == z[i]) & m
            want = (0, 0) if not m[i] else (same.sum(), (same & (v >= v[i])).sum())
            assert (cnt[i], ge[i]) == want
