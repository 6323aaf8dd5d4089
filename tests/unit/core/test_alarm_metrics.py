"""Frame statistics, selections, statistic keys and the conformal alarm threshold, against
plain numpy and against the nominal alarm rate on synthetic in-domain data."""

from __future__ import annotations

import numpy as np
import pytest

from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.metrics import (
    alarm_threshold,
    frame_statistic,
    frame_statistics,
    parse_stat_key,
    selection_mask,
    stat_key,
)


@pytest.mark.parametrize("on,ref", [("max", np.max), ("mean", np.mean),
                                    ("q90", lambda v: np.quantile(v, 0.9)),
                                    ("q99", lambda v: np.quantile(v, 0.99)),
                                    ("q50", np.median)])
def test_frame_statistic_equals_numpy_with_every_selection_form(on, ref):
    rng = np.random.default_rng(0)
    v = rng.lognormal(size=37)
    tags = rng.integers(0, 3, size=37)
    idx = np.flatnonzero(tags == 2)
    assert frame_statistic(v, on) == pytest.approx(ref(v), rel=1e-12)
    for sel in (tags == 2, idx, "tags=2"):
        assert frame_statistic(v, on, sel, tags=tags) == pytest.approx(ref(v[tags == 2]),
                                                                       rel=1e-12)
    both = np.isin(tags, (1, 2))
    assert frame_statistic(v, on, "tags=2,1", tags=tags) == pytest.approx(ref(v[both]))


def test_frame_statistic_non_finite_and_empty_selection_are_explicit():
    v = np.array([1.0, 5.0, np.inf, 2.0])
    assert frame_statistic(v, "max") == np.inf
    assert frame_statistic(v, "mean") == np.inf
    assert frame_statistic(v, "q90") == np.inf          # not NaN from inf - inf
    assert frame_statistic(v, "q50", [0, 1, 3]) == pytest.approx(2.0)
    assert np.isnan(frame_statistic(np.array([1.0, np.nan]), "max"))
    assert frame_statistic(np.array([1.0, np.nan]), "max", [0]) == 1.0
    assert np.isnan(frame_statistic(v, "max", "tags=2", tags=np.zeros(4, int)))
    with pytest.raises(InvalidParameterError, match="on must be"):
        frame_statistic(v, "median")
    with pytest.raises(DataError, match="needs the atoms' tags"):
        frame_statistic(v, "max", "tags=2")
    with pytest.raises(InvalidParameterError, match="select must be"):
        selection_mask("adsorbate", 4, np.zeros(4, int))
    with pytest.raises(DataError, match="out of range"):
        selection_mask([7], 4)


@pytest.mark.parametrize("on", ["max", "mean", "q90"])
def test_frame_statistics_equal_a_loop_over_frames(on):
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 9, size=25)
    off = np.concatenate([[0], np.cumsum(sizes)])
    v = rng.normal(size=off[-1])
    mask = rng.random(off[-1]) < 0.5
    got = frame_statistics(v, off, on, mask)
    for f in range(25):
        a, b = off[f], off[f + 1]
        want = frame_statistic(v[a:b], on, mask[a:b])
        if np.isnan(want):
            assert np.isnan(got[f]) and not mask[a:b].any()
        else:
            assert got[f] == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(frame_statistics(v, off, on),
                               [frame_statistic(v[a:b], on)
                                for a, b in zip(off[:-1], off[1:], strict=True)])


def test_stat_keys_round_trip_and_normalise():
    assert stat_key("novelty") == "novelty:max"
    assert stat_key("novelty", "max", "tags=2, 1") == "novelty:max@tags=1,2"
    assert parse_stat_key("uncertainty:q99@tags=2,1") == ("uncertainty", "q99", "tags=1,2")
    assert parse_stat_key("novelty:mean") == ("novelty", "mean", None)
    for bad in ("novelty", "novelty:median", "nov@elty:max", "novelty:max@species=8"):
        with pytest.raises(InvalidParameterError):
            parse_stat_key(bad)
    with pytest.raises(InvalidParameterError, match="mask or"):
        stat_key("novelty", "max", np.ones(3, bool))


def test_alarm_threshold_is_the_conformal_order_statistic():
    v = np.arange(99.0)[::-1]                        # n = 99: ceil(100 * 0.99) = 99 -> max
    assert alarm_threshold(v, 0.01) == 98.0
    assert alarm_threshold(v, 0.05) == 94.0          # ceil(95) = 95th smallest
    assert alarm_threshold(np.arange(19.0), 0.05) == 18.0
    with pytest.warns(UserWarning, match=r"1/\(n\+1\) = 0.0196"):
        assert alarm_threshold(np.arange(50.0), 0.01) == np.inf
    for bad in (0.0, 1.0, -0.1, True):
        with pytest.raises(InvalidParameterError):
            alarm_threshold(v, bad)
    with pytest.raises(DataError, match="NaN"):
        alarm_threshold([1.0, np.nan], 0.5)


@pytest.mark.parametrize("rate,n_cal", [(0.01, 500), (0.05, 200), (0.05, 1000)])
def test_alarm_threshold_hits_its_nominal_rate(rate, n_cal):
    """In-domain frame statistic = max over 12 atoms of lognormal per-atom values. Exceedance
    of the threshold on 20,000 fresh in-domain frames, averaged over 40 calibration draws,
    lies within binomial error of the conformal rate (n+1-k)/(n+1) and below alarm_rate."""
    rng = np.random.default_rng(42)

    def frames(m):
        return frame_statistics(rng.lognormal(0, 0.4, m * 12), np.arange(m + 1) * 12, "max")

    rates = []
    for _ in range(40):
        thr = alarm_threshold(frames(n_cal), rate)
        rates.append(np.mean(frames(20_000) > thr))
    k = int(np.ceil((n_cal + 1) * (1 - rate)))
    expect = (n_cal + 1 - k) / (n_cal + 1)          # exact marginal rate, continuous values
    mean = float(np.mean(rates))
    # sampling error of the average: fresh-frame binomial + calibration-draw spread
    se = np.sqrt(expect * (1 - expect) / 20_000 / 40 + np.var(rates) / 40)
    assert abs(mean - expect) < 4 * se
    assert mean <= rate + 4 * se
    assert mean >= rate - 1.0 / (n_cal + 1) - 4 * se
