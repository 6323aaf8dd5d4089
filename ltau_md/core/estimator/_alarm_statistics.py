"""In-domain alarm statistics of an estimator (``estimator.alarm_statistics_``).

Any signal (LTAU novelty and uncertainty, a baseline's score) adds the sorted in-domain values
of its frame statistics, keyed by :func:`ltau_md.core.metrics.stat_key`
(``SIGNAL:STAT[@SELECTION]``, e.g. ``"novelty:max"``, ``"uncertainty:max@tags=2"``), and
:class:`~ltau_md.core.observers.Threshold` (``alarm_rate=``) reads its threshold from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ltau_md.core.exceptions import InvalidParameterError

__all__ = ["SCALE_DEPENDENT_SIGNALS", "InDomainStatistics"]

SCALE_DEPENDENT_SIGNALS = ("uncertainty", "confidence")
"""Signals whose values change with the tolerance scale s: their in-domain statistics are
dropped when a new scale calibration is set."""

_ENTRY_KEYS = {"values", "n_frames", "source"}
#: optional: the median number of atoms the statistic was taken over per frame (for the size
#: adjustment of frame maxima, :func:`~ltau_md.core.metrics.alarm_threshold`)
_OPTIONAL_KEYS = {"atoms_per_frame", "reference"}
#: "reference": the in-domain references of a combined statistic
#: (:func:`~ltau_md.core.metrics.fit_combined`)


def _check_entry(key: str, entry: Any) -> dict[str, Any]:
    if not isinstance(key, str) or ":" not in key:
        raise InvalidParameterError(f"alarm statistic key must be 'SIGNAL:STAT[@SELECTION]', "
                                    f"got {key!r}")
    if (not isinstance(entry, Mapping) or not _ENTRY_KEYS <= set(entry)
            or not set(entry) <= _ENTRY_KEYS | _OPTIONAL_KEYS):
        raise InvalidParameterError(f"alarm statistic {key!r} must be a dict with keys "
                                    f"{sorted(_ENTRY_KEYS)} (optionally "
                                    f"{sorted(_OPTIONAL_KEYS)}), got {entry!r}")
    try:
        values = np.asarray(entry["values"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"alarm statistic {key!r}: values must be numbers") from exc
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise InvalidParameterError(f"alarm statistic {key!r}: values must be a non-empty list "
                                    "of finite numbers")
    n = entry["n_frames"]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n != values.size:
        raise InvalidParameterError(f"alarm statistic {key!r}: n_frames must equal the "
                                    f"{values.size} values, got {n!r}")
    if not isinstance(entry["source"], str):
        raise InvalidParameterError(f"alarm statistic {key!r}: source must be a string")
    out = {"values": np.sort(values).tolist(), "n_frames": int(n), "source": entry["source"]}
    if "atoms_per_frame" in entry:
        a = entry["atoms_per_frame"]
        if isinstance(a, bool) or not isinstance(a, (int, float, np.number)) \
                or not np.isfinite(a) or a <= 0:
            raise InvalidParameterError(f"alarm statistic {key!r}: atoms_per_frame must be a "
                                        f"number > 0, got {a!r}")
        out["atoms_per_frame"] = float(a)
    if "reference" in entry:
        out["reference"] = _check_reference(key, entry["reference"])
    return out


def _check_reference(key: str, ref: Any) -> dict[str, Any]:
    """A combined statistic's references: {"frames": {component: values}, "atoms": {signal:
    {Z: values}}}, the values sorted lists of finite numbers."""
    def values(v: Any, where: str) -> list[float]:
        a = np.asarray(v, dtype=np.float64) if isinstance(v, (list, tuple, np.ndarray)) else None
        if a is None or a.ndim != 1 or not np.isfinite(a).all():
            raise InvalidParameterError(f"alarm statistic {key!r}: reference {where} must be a "
                                        "list of finite numbers")
        return np.sort(a).tolist()

    if not (isinstance(ref, Mapping) and set(ref) == {"frames", "atoms"}
            and isinstance(ref["frames"], Mapping) and isinstance(ref["atoms"], Mapping)
            and all(isinstance(v, Mapping) for v in ref["atoms"].values())):
        raise InvalidParameterError(f"alarm statistic {key!r}: reference must be a dict "
                                    "{'frames': {component: values}, 'atoms': {signal: {Z: "
                                    "values}}}")
    return {"frames": {str(c): values(v, f"frames[{c!r}]") for c, v in ref["frames"].items()},
            "atoms": {str(s): {str(z): values(v, f"atoms[{s!r}][{z!r}]") for z, v in e.items()}
                      for s, e in ref["atoms"].items()}}


class InDomainStatistics(Mapping):
    """In-domain frame statistics for alarm-rate thresholds: a read-only mapping
    ``key -> {"values": sorted in-domain frame values, "n_frames": F, "source": where they
    came from ("held-out", "calibration", "training-loo", ...), optionally
    "atoms_per_frame": median atoms the statistic was taken over}`` that signals add to.

    Parameters
    ----------
    entries : mapping, optional
        Initial entries (checked as :meth:`update` checks them).
    """

    def __init__(self, entries: Mapping[str, Mapping[str, Any]] | None = None):
        self._entries: dict[str, dict[str, Any]] = {}
        if entries:
            self.update(entries)

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._entries) == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def update(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Add or replace ``entries`` (key -> {"values", "n_frames", "source"}); raise
        InvalidParameterError naming the first malformed one (nothing is added then)."""
        checked = {k: _check_entry(k, v) for k, v in dict(entries).items()}
        self._entries.update(checked)

    def drop(self, signals: Iterable[str]) -> list[str]:
        """Remove every statistic of the given signals (a combined statistic with one of them
        among its components too); return the removed keys (sorted)."""
        from ltau_md.core.metrics import statistic_signals

        signals = set(signals)
        gone = sorted(k for k in self._entries if statistic_signals(k) & signals)
        for k in gone:
            del self._entries[k]
        return gone

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-able copy (the manifest's ``"alarm_statistics"`` section)."""
        return {k: dict(v) for k, v in self._entries.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InDomainStatistics:
        """Inverse of :meth:`to_dict`; InvalidParameterError names a malformed entry."""
        if not isinstance(d, Mapping):
            raise InvalidParameterError(
                f"alarm statistics must be a dict, got {type(d).__name__}")
        return cls(d)

    def __repr__(self) -> str:
        return f"InDomainStatistics({sorted(self._entries)})"
