"""The names of frame statistics, ``"SIGNAL:ON[@tags=T]"`` (e.g. ``"novelty:max@tags=2"``),
and their inverse."""

from __future__ import annotations

from ltau_md.core.exceptions import InvalidParameterError
from ltau_md.core.metrics._combined import combined_components, is_combined
from ltau_md.core.metrics._frame_statistics import quantile_of
from ltau_md.core.metrics._selection import parse_selection

__all__ = ["parse_stat_key", "stat_key"]


def stat_key(signal: str, on: str = "max", select: str | None = None) -> str:
    """The name of a frame statistic, e.g. ``"novelty:max"``, ``"novelty:q99"``,
    ``"novelty:max@tags=2"``, ``"gmm+clustered_doptimality/element:max"`` (a combined signal,
    :mod:`ltau_md.core.metrics._combined`): the key of its in-domain values in
    ``estimator.alarm_statistics_``. ``select`` must be None or a "tags=..." string (a
    mask or index array names no reusable statistic). Inverse: :func:`parse_stat_key`."""
    if not isinstance(signal, str) or not signal or any(c in signal for c in ":@"):
        raise InvalidParameterError(f"signal must be a per-atom result name, got {signal!r}")
    if is_combined(signal):
        combined_components(signal)  # "A+B/element": each part a signal name
    quantile_of(on)
    key = f"{signal}:{on}"
    if select is None:
        return key
    if not isinstance(select, str):
        raise InvalidParameterError(
            "an in-domain statistic needs select=None or a 'tags=...' string, not a mask or "
            "index array (their atoms are not the same from one structure to the next)")
    _, vals = parse_selection(select)
    return f"{key}@tags={','.join(map(str, vals))}"


def parse_stat_key(key: str) -> tuple[str, str, str | None]:
    """``"novelty:max@tags=2"`` -> ("novelty", "max", "tags=2"); inverse of :func:`stat_key`
    (which normalises the selection, e.g. "tags=2,1" -> "tags=1,2")."""
    head, _, select = str(key).partition("@")
    signal, sep, on = head.partition(":")
    if not sep:
        raise InvalidParameterError(f"a statistic key reads 'SIGNAL:ON[@tags=T]', got {key!r}")
    sel = select or None
    stat_key(signal, on, sel)  # validates
    if sel is not None:
        sel = "tags=" + ",".join(map(str, parse_selection(sel)[1]))
    return signal, on, sel
