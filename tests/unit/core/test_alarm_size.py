"""The size adjustment of frame-maximum alarms: a threshold fitted on small in-domain frames
keeps its alarm rate on structures made of many such frames (replicated molecules), where the
unadjusted threshold fires far more often; checked by simulation with real EMT features."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Icosahedron
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.stats import gamma

from ltau_md.core.calibration import DEFAULT_ALARM, DEFAULT_SIGNALS, fit_alarm_thresholds
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.metrics import (
    TAIL_FRACTION,
    PredictiveTail,
    alarm_threshold,
    combined_statistics,
)
from ltau_md.core.observers import Threshold
from ltau_md.testing import EMTFeatureModel


def test_extrapolated_threshold_is_the_predictive_tail_by_hand():
    v = np.arange(1.0, 101.0)                       # 100 in-domain frame maxima
    # ratio 2 at 20 %: 10 % leaves 10 of 100 values above -> the conformal threshold at 10 %
    assert alarm_threshold(v, 0.2, 2.0) == alarm_threshold(v, 0.1)
    # ratio 50 at 10 %: 0.2 % leaves too few -> the x where f (1 + x/S)^-k = 0.002 beyond u
    u = np.quantile(v, 1 - TAIL_FRACTION)
    exc = v[v > u] - u
    k, total, f = exc.size, exc.sum(), exc.size / 100
    x = brentq(lambda x: f * (1 + x / total) ** -k - 0.002, 0, 1e6)
    assert alarm_threshold(v, 0.1, 50.0) == pytest.approx(u + x, rel=1e-9)
    assert alarm_threshold(v, 0.1, 0.5) == alarm_threshold(v, 0.2)   # smaller frames
    assert alarm_threshold(v, 0.1, 1.0) == alarm_threshold(v, 0.1)   # same size: conformal


def test_predictive_tail_is_the_exponential_tail_averaged_over_the_rates_posterior():
    """P(X > u + x) = f (1 + x/S)^-k is f E[exp(-lambda x)] over lambda ~ Gamma(k, rate S),
    the rate's posterior after k exponential excesses summing to S (numerical integral)."""
    rng = np.random.default_rng(3)
    v = rng.exponential(2.0, 250)
    tail = PredictiveTail.fit(v)
    u = np.quantile(v, 1 - TAIL_FRACTION)
    assert tail.count == (v > u).sum() and tail.total == pytest.approx((v[v > u] - u).sum())
    post = gamma(a=tail.count, scale=1 / tail.total)
    for x in (0.5, 5.0, 20.0):
        want = tail.frac * quad(lambda lam, x=x: np.exp(-lam * x) * post.pdf(lam), 0,
                                post.ppf(1 - 1e-15), points=[post.mean()], limit=200)[0]
        assert tail.survival(u + x) == pytest.approx(want, rel=1e-6)
        assert tail.quantile(float(tail.survival(u + x))) == pytest.approx(u + x, rel=1e-9)


def test_extrapolated_thresholds_hold_their_rate_over_calibration_draws():
    """Averaged over draws of 100 calibration frames (maxima of 15 exponential atoms), frames 10
    and 100 times larger exceed the extrapolated 1 % threshold at most at the nominal rate
    (exact exceedance from the maxima's distribution); the plug-in exponential tail ran at
    1.7x and 2.5x here."""
    rng = np.random.default_rng(4)
    for m in (10, 100):
        rates = []
        for _ in range(1000):
            t = alarm_threshold(rng.exponential(size=(100, 15)).max(axis=1), 0.01, m)
            rates.append(1 - (1 - np.exp(-t)) ** (15 * m))
        assert 0.005 <= np.mean(rates) <= 0.011, (m, np.mean(rates))


def test_exponential_maxima_keep_their_rate_at_any_size():
    rng = np.random.default_rng(0)
    cal = rng.exponential(size=(2000, 15)).max(axis=1)       # 15-atom in-domain frames
    for m in (10, 100):
        big = rng.exponential(size=(4000, 15 * m)).max(axis=1)
        for rate in (0.01, 0.05):
            got = np.mean(big > alarm_threshold(cal, rate, m))
            assert 0.5 * rate <= got <= 1.5 * rate, (m, rate, got)
            assert np.mean(big > alarm_threshold(cal, rate)) > 3 * rate    # unadjusted


def _cluster(rng):
    a = Icosahedron("Cu", 2)                                 # 13 atoms, no periodicity
    a.positions += rng.normal(size=a.positions.shape) * 0.1
    return a


def test_replicated_in_domain_clusters_alarm_at_the_nominal_rate(tmp_path):
    """Boxes of 8 far-apart in-domain clusters (104 atoms): every atom's features are its
    cluster's, so the box is as in domain as the clusters the threshold was fitted on. The
    novelty maximum (threshold adjusted) and the default alarm (combined: p-values adjusted,
    as the monitor computes it) alike."""
    model = EMTFeatureModel(elements=("Cu",))
    rng = np.random.default_rng(1)
    x = np.concatenate([model.evaluate(_cluster(rng)).features for _ in range(120)])
    log = ErrorLog.create(tmp_path / "log", species=np.full(len(x), 29),
                          frame_offsets=np.arange(121) * 13, ref_force_norm=np.ones(len(x)))
    for _ in range(3):
        log.append(rng.gamma(2.0, 0.05, len(x)))
    est = LTAUEstimator(k=10, signals=DEFAULT_SIGNALS).fit(x, log)

    def novelty_max(atoms, feats):
        return est.predict(feats, species=atoms.numbers).novelty.max()

    held_out = [_cluster(rng) for _ in range(400)]
    feats = [model.evaluate(a).features for a in held_out]     # one model pass per cluster
    z = np.concatenate([a.numbers for a in held_out])
    fit_alarm_thresholds(est, est.signal_values(np.concatenate(feats), z),
                         np.arange(401) * 13, stats=[DEFAULT_ALARM], numbers=z)
    cal = np.array([novelty_max(a, f) for a, f in zip(held_out, feats, strict=True)])
    est.alarm_statistics_.update({"novelty:max": {
        "values": cal.tolist(), "n_frames": cal.size, "source": "held-out",
        "atoms_per_frame": 13}})
    boxes, combined = [], {"adjusted": [], "unadjusted": []}
    entry = est.alarm_statistics_[DEFAULT_ALARM]
    signal, on = DEFAULT_ALARM.split(":")
    for _ in range(200):
        box = Atoms()
        for i in range(8):
            c = _cluster(rng)
            c.positions += [25.0 * i, 0.0, 0.0]
            box += c
        f = model.evaluate(box).features
        boxes.append(novelty_max(box, f))
        sig = est.signal_values(f, box.numbers)
        for kind, r in (("adjusted", len(box) / entry["atoms_per_frame"]), ("unadjusted", 1.0)):
            combined[kind].append(combined_statistics(signal, on, sig, np.array([0, len(box)]),
                                                      entry["reference"], box.numbers,
                                                      size_ratio=r)[0])
    boxes = np.array(boxes)
    thr_c = Threshold("stop", alarm_rate=0.1, signal=signal).resolve(
        SimpleNamespace(estimator=est), n_atoms=104)
    assert thr_c == alarm_threshold(entry["values"], 0.1)  # the size is in the p-values
    assert 0.05 <= np.mean(np.array(combined["adjusted"]) > thr_c) <= 0.15
    assert np.mean(np.array(combined["unadjusted"]) > thr_c) > 0.3
    pol = Threshold("stop", alarm_rate=0.1, signal="novelty")
    thr = pol.resolve(SimpleNamespace(estimator=est), n_atoms=104)
    assert pol.resolved_from["size_ratio"] == 8.0
    assert thr == alarm_threshold(cal, 0.1, 8.0)
    assert 0.05 <= np.mean(boxes > thr) <= 0.15
    assert np.mean(boxes > alarm_threshold(cal, 0.1)) > 0.3      # unadjusted: most boxes
