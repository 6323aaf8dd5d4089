"""The declared parameter constraints of the estimator (checked by ``fit``, ``save`` and
``load`` through :func:`~ltau_md.core._param_validation.validate_params`)."""

from __future__ import annotations

import numbers
from numbers import Integral, Real
from typing import Any

from ltau_md.core._param_validation import Interval, Satisfies, StrOptions
from ltau_md.core.estimator._index import INDEX_KINDS
from ltau_md.core.estimator._novelty import NOVELTY_KINDS
from ltau_md.core.signals import SIGNAL_CLASSES

__all__ = ["ESTIMATOR_CONSTRAINTS"]


def _is_window(w: Any) -> bool:
    return isinstance(w, (tuple, list)) and len(w) == 2 and all(
        v is None or (not isinstance(v, bool) and isinstance(v, numbers.Integral)) for v in w)


def _is_signal_names(v: Any) -> bool:
    return (isinstance(v, (tuple, list)) and all(n in SIGNAL_CLASSES for n in v)
            and len(set(v)) == len(v))


def _int_from(low: int) -> list:
    return [Interval(Integral, low, None, closed="left")]


#: declared parameter constraints of :class:`~ltau_md.core.estimator.LTAUEstimator`
#: (``atol`` is checked by :func:`~ltau_md.core.confidence.check_atol`, ``n_bins`` must also
#: be even)
ESTIMATOR_CONSTRAINTS: dict = {
    "k": _int_from(1),
    "index": [StrOptions({"auto", *INDEX_KINDS})],
    "s": [Interval(Real, 0, None, closed="neither"), None],
    "rtol": [Interval(Real, 0, None, closed="left")],
    "window": [Satisfies(_is_window, "(start, stop) of ints or None")],
    "n_bins": _int_from(4),
    "hnsw_m": _int_from(2),
    "ef_construction": _int_from(1),
    "ef_search": _int_from(1),
    "ivf_nlist": [*_int_from(1), None],
    "pq_m": _int_from(1),
    "pq_nbits": [Interval(Integral, 1, 16, closed="both")],
    "nprobe": _int_from(1),
    "n_threads": [*_int_from(1), None],
    "novelty": [StrOptions(set(NOVELTY_KINDS))],
    "confirm_pvalue": [Interval(Real, 0, 1, closed="left")],
    "signals": [Satisfies(_is_signal_names, f"a tuple of names from "
                          f"{sorted(SIGNAL_CLASSES)} without repeats")],
    "metadata": [dict],
}
