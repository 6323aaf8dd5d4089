"""The conformal alarm threshold: the value in-domain frames exceed at a chosen alarm rate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ltau_md.core.exceptions import DataError, InvalidParameterError

__all__ = ["MIN_TAIL_COUNT", "TAIL_FRACTION", "PredictiveTail", "alarm_off_reason",
           "alarm_threshold", "alarm_thresholds_rows", "frames_needed"]


#: fraction of the in-domain values above which the tail of a frame statistic is modelled
#: (:class:`PredictiveTail`) where values beyond the in-domain ones are ranked or a threshold
#: for larger frames is extrapolated (peaks over threshold)
TAIL_FRACTION = 0.2
#: below this many expected in-domain exceedances a size-adjusted threshold is extrapolated
#: from the tail instead of read off the order statistics
MIN_TAIL_COUNT = 10


@dataclass(frozen=True)
class PredictiveTail:
    """The tail of in-domain values above u, their (1 - :data:`TAIL_FRACTION`) quantile: a
    fraction ``frac`` of them, ``count`` = k excesses over u summing to ``total`` = S, read as
    exponential excesses of unknown rate. Exceedance probabilities are the predictive ones
    (the rate's gamma posterior after those k excesses integrated out):
    P(X > u + x) = frac (1 + x / S)^-k, a Pareto II (Lomax) tail, heavier than the plug-in
    frac exp(-x k / S) by the rate's uncertainty; which matters far out, where a frame r times
    larger than the in-domain ones is judged (on acetylacetone boxes of 10 molecules, the
    default alarm's in-domain rate 1.2 % at 1 % nominal against 1.6 % with the plug-in tail)."""

    u: float
    total: float
    count: int
    frac: float

    @classmethod
    def fit(cls, values: Any) -> PredictiveTail:
        """From in-domain values (finite; any order); no tail (``count`` 0) without values."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return cls(np.inf, 1.0, 0, 0.0)
        u = float(np.quantile(v, 1.0 - TAIL_FRACTION))
        excess = v[v > u] - u
        return cls(u, max(float(excess.sum()), 1e-12), int(excess.size), excess.size / v.size)

    def survival(self, values: np.ndarray) -> np.ndarray:
        """P(X > v) for values v >= u."""
        x = np.maximum(np.asarray(values, dtype=np.float64) - self.u, 0.0)
        return self.frac * np.exp(-self.count * np.log1p(x / self.total))

    def quantile(self, rate: float) -> float:
        """The value in-domain values exceed with probability ``rate`` (< ``frac``)."""
        return self.u + self.total * ((self.frac / rate) ** (1.0 / self.count) - 1.0)


def alarm_threshold(in_domain_values: np.ndarray, alarm_rate: float,
                    size_ratio: float = 1.0) -> float:
    """Threshold that a new in-domain frame statistic exceeds with probability <= alarm_rate.

    The conformal (split-conformal, one-sided) quantile of the n in-domain values: the
    k-th smallest with k = ceil((n + 1)(1 - alarm_rate)). If the new frame and the n
    in-domain frames are exchangeable, P(new > threshold) <= (n + 1 - k)/(n + 1) <= alarm_rate
    (and >= alarm_rate - 1/(n + 1) for continuous values). With too few values for the rate
    (k > n, i.e. alarm_rate < 1/(n + 1)) no finite threshold guarantees it: returns inf (the
    alarm never fires) with a warning naming the smallest attainable rate, 1/(n + 1).

    in_domain_values: (n,) finite or +inf statistics of in-domain frames (NaN raises).

    ``size_ratio`` (atoms of the watched frame / atoms of the in-domain frames, for a frame
    *maximum*): a frame r times larger holds about r times as many chances for an in-domain
    extreme, so the threshold is set for the rate alarm_rate / r among the in-domain frames.
    Where fewer than :data:`MIN_TAIL_COUNT` of the n frames are expected above the threshold
    at that rate (an order statistic that far out is too noisy), it is extrapolated from
    the tail above the values' (1 - :data:`TAIL_FRACTION`) quantile u
    (:meth:`PredictiveTail.quantile`: u + S ((f / rate)^(1/k) - 1), k excesses over u summing
    to S, f = k / n). ``size_ratio`` 1 is the conformal threshold above."""
    import warnings

    v = np.asarray(in_domain_values, dtype=np.float64).ravel()
    if not (isinstance(alarm_rate, (int, float, np.floating)) and not isinstance(alarm_rate, bool)
            and 0 < alarm_rate < 1):
        raise InvalidParameterError(f"alarm_rate must be a number in (0, 1), got {alarm_rate!r}")
    if v.size == 0:
        raise DataError("no in-domain values to set an alarm threshold from")
    if np.isnan(v).any():
        raise DataError(f"in-domain values contain NaN at positions "
                        f"{np.flatnonzero(np.isnan(v))[:10].tolist()}")
    if not (np.isfinite(size_ratio) and size_ratio > 0):
        raise InvalidParameterError(f"size_ratio must be a finite number > 0, got {size_ratio!r}")
    n = v.size
    if size_ratio != 1.0:
        rate = min(float(alarm_rate) / float(size_ratio), 0.5)
        if rate * (n + 1) >= MIN_TAIL_COUNT or not np.isfinite(v).all():
            return alarm_threshold(v, rate)
        tail = PredictiveTail.fit(v)
        if tail.count == 0:
            return float(v.max())
        return tail.quantile(rate)
    k = int(np.ceil((n + 1) * (1.0 - float(alarm_rate)) - 1e-9))
    if k > n:
        warnings.warn(f"alarm_rate {alarm_rate:g} is below the smallest rate {n} in-domain "
                      f"frames can guarantee, 1/(n+1) = {1.0 / (n + 1):.3g}: the threshold is "
                      "inf and the alarm never fires; use more in-domain frames or a larger "
                      "alarm_rate", UserWarning, stacklevel=2)
        return float("inf")
    return float(np.sort(v)[max(k, 1) - 1])


def alarm_thresholds_rows(rows: np.ndarray, alarm_rate: float) -> np.ndarray:
    """:func:`alarm_threshold` (size ratio 1) of each row of ``rows`` (B, n) at once, e.g. of
    bootstrap resamples: the k-th smallest value of each row, inf where n cannot resolve
    ``alarm_rate`` (without the warning)."""
    v = np.asarray(rows, dtype=np.float64)
    n = v.shape[1]
    k = int(np.ceil((n + 1) * (1.0 - float(alarm_rate)) - 1e-9))
    if k > n:
        return np.full(v.shape[0], np.inf)
    j = max(k, 1) - 1
    return np.partition(v, j, axis=1)[:, j]


def frames_needed(alarm_rate: float) -> int:
    """The fewest in-domain frames n that resolve ``alarm_rate`` with
    :func:`alarm_threshold` (a finite threshold): n >= 1/alarm_rate - 1 (99 for 1 %, 19 for
    5 %). With fewer frames the alarm is off."""
    import math

    if not 0 < alarm_rate < 1:
        raise InvalidParameterError(f"alarm_rate must be a number in (0, 1), got {alarm_rate!r}")
    return max(1, math.ceil((1.0 - alarm_rate) / alarm_rate - 1e-9))


def alarm_off_reason(n_frames: int, alarm_rate: float, frames: str = "in-domain frames"
                     ) -> str | None:
    """Why an alarm at ``alarm_rate`` fitted on ``n_frames`` in-domain frames (described by
    ``frames``, e.g. "validation frames of gmm:max") is off, or None when they resolve it
    (:func:`frames_needed`)."""
    need = frames_needed(alarm_rate)
    n = int(n_frames)
    if n >= need:
        return None
    resolved = f"; they resolve rates >= {1.0 / (n + 1):.3g}" if n else ""
    return (f"alarm off: the {n} {frames} cannot resolve an alarm rate of {alarm_rate:g}, "
            f"which needs >= {need} in-domain frames (n >= 1/rate - 1{resolved})")
