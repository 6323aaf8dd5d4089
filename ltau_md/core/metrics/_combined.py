"""Combined frame statistics: several statistics of per-atom signals turned into in-domain tail
p-values and combined by Fisher's method, optionally after normalising each atom by the
in-domain atoms of its element.

A *combined signal* name joins components with "+"; a component "SIGNAL/element" is the
per-element normalised signal: each atom's value becomes -log of its tail p-value against the
in-domain atoms of its element, so no element's tail sets the frame's (e.g. H atoms whose
in-domain values run far above the C atoms'). With a frame statistic ON, the combined key is
``stat_key("gmm+clustered_doptimality/element", "max")`` =
``"gmm+clustered_doptimality/element:max"``: per frame,
``-sum_c log p_c``, ``p_c`` the in-domain tail p-value of component c's frame statistic. A
single component with "/element" ("doptimality/element") is a combined signal too.

Tail p-value of v against n sorted in-domain values (conformal): (1 + #{values >= v}) / (n + 1);
beyond the largest in-domain value, where that is 1/(n + 1) whatever v, the smaller of that and
the predictive tail of the values above their (1 - :data:`~ltau_md.core.metrics.TAIL_FRACTION`)
quantile (:class:`~ltau_md.core.metrics.PredictiveTail`: exponential excesses of uncertain
rate, a Pareto II tail), so values beyond the in-domain range still rank. (Taking the smaller of
the two inside the range too would bias p low there: a rate fitted on small frames would not
hold for large ones.)

The in-domain frames the references are fitted on get leave-one-frame-out p-values (a frame's
statistics against the other frames', its atoms' per-element values against the other frames'
atoms), so they are exchangeable with new in-domain frames and the conformal threshold of their
combined values holds for them.

For a frame maximum ("max") of r times as many atoms as the in-domain frames each component's
p-value is adjusted to 1 - (1 - p)^r (the chance that the largest of r in-domain frames'
values is as large), so the alarm rate holds for structures of another size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.metrics._alarm import PredictiveTail
from ltau_md.core.metrics._frame_statistics import frame_statistics

__all__ = ["COMBINE", "ELEMENT", "P_FLOOR", "combined_components", "combined_statistics",
           "TailReference", "element_normalised", "fit_combined", "is_combined",
           "own_frame_counts", "prepare_reference", "statistic_signals",
           "tail_pvalue"]

#: joins the components of a combined signal name
COMBINE = "+"
#: suffix of a per-element normalised component
ELEMENT = "/element"
#: smallest p-value used (a tail probability underflows far out)
P_FLOOR = 1e-300


def is_combined(signal: str) -> bool:
    """Whether ``signal`` names a combined signal ("A+B", "A/element")."""
    return COMBINE in signal or signal.endswith(ELEMENT)


def combined_components(signal: str) -> list[tuple[str, bool]]:
    """``"gmm+clustered_doptimality/element"`` -> [("gmm", False),
    ("clustered_doptimality", True)]: each component's per-atom signal and whether it is
    normalised per element. InvalidParameterError for an empty or repeated component."""
    out = []
    for part in signal.split(COMBINE):
        base = part[:-len(ELEMENT)] if part.endswith(ELEMENT) else part
        if not base or "/" in base:
            raise InvalidParameterError(
                f"a combined signal reads 'SIGNAL[/element]+SIGNAL[/element]...', got {signal!r}")
        out.append((base, part.endswith(ELEMENT)))
    if len(set(out)) < len(out):
        raise InvalidParameterError(f"combined signal {signal!r} repeats a component")
    return out


def statistic_signals(key: str) -> set[str]:
    """The per-atom signals the statistic ``key`` ("SIGNAL:ON[@tags=T]", or a bare signal
    name) is computed from: its signal, or a combined signal's components."""
    name = str(key).partition("@")[0].partition(":")[0]
    return {b for b, _ in combined_components(name)} if is_combined(name) else {name}


@dataclass(frozen=True)
class TailReference:
    """Sorted in-domain values with their tail fitted once (:func:`tail_pvalue` reads it; a
    step of the monitor then costs a search, not a sort)."""

    values: np.ndarray
    tail: PredictiveTail

    @classmethod
    def of(cls, values: Any) -> TailReference:
        """From in-domain values (any order); a TailReference is returned as it is."""
        if isinstance(values, TailReference):
            return values
        v = np.sort(np.asarray(values, dtype=np.float64))
        return cls(v, PredictiveTail.fit(v))


def prepare_reference(reference: Mapping[str, Any]) -> dict[str, Any]:
    """A combined statistic's references (:func:`fit_combined`) as :class:`TailReference`
    objects, for repeated :func:`combined_statistics` calls."""
    return {"frames": {c: TailReference.of(v) for c, v in reference.get("frames", {}).items()},
            "atoms": {s: _with_pooled(e) for s, e in reference.get("atoms", {}).items()}}


#: key of the pooled reference (every element's in-domain atoms) in prepared references
POOLED = 0


def _with_pooled(references: Mapping[Any, Any]) -> dict[int, TailReference]:
    """Per-element references as TailReferences, plus the pooled one under :data:`POOLED`."""
    refs = {int(k): TailReference.of(r) for k, r in references.items()}
    if POOLED not in refs:
        parts = [r.values for z, r in refs.items()]
        refs[POOLED] = TailReference.of(np.concatenate(parts) if parts else np.empty(0))
    return refs


def tail_pvalue(values: np.ndarray, reference: np.ndarray | TailReference, *,
                leave_one_out: bool = False, own: tuple[np.ndarray, np.ndarray] | None = None
                ) -> np.ndarray:
    """In-domain tail p-values of ``values`` against the sorted in-domain ``reference`` (see
    the module docstring), floored at :data:`P_FLOOR`.

    ``leave_one_out``: each value is itself one of the reference values and is not counted
    against itself. ``own`` = (ge, n): per value, how many reference values of its own frame
    are >= it and how many its frame holds, all left out (leave one frame out; the reference
    values of a frame's atoms). "Beyond the in-domain range" then means beyond the values
    left in."""
    t = TailReference.of(reference)
    ref = t.values
    v = np.asarray(values, dtype=np.float64)
    if ref.size == 0:
        return np.full(v.shape, P_FLOOR)
    ge = (ref.size - np.searchsorted(ref, v, side="left")).astype(np.float64)
    n: float | np.ndarray = float(ref.size)
    if leave_one_out:
        ge, n = ge - 1.0, n - 1.0
    elif own is not None:
        ge = ge - np.asarray(own[0], dtype=np.float64)
        n = n - np.asarray(own[1], dtype=np.float64)
    p = (ge + 1.0) / (n + 1.0)
    beyond = ge <= 0  # beyond every in-domain value left in (v > u there: no overflow)
    if t.tail.count > 0 and beyond.any():
        p[beyond] = np.minimum(p[beyond], t.tail.survival(v[beyond]))
    return np.maximum(p, P_FLOOR)


def own_frame_counts(values: np.ndarray, numbers: np.ndarray, frame_offsets: np.ndarray,
                      mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per atom: how many atoms of the same frame and element within ``mask`` have a value >=
    its own, and how many such atoms the frame holds (0 for atoms outside ``mask``)."""
    frame = np.repeat(np.arange(frame_offsets.size - 1), np.diff(frame_offsets))
    ge, cnt = np.zeros(values.size), np.zeros(values.size)
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return ge, cnt
    # group by (frame, element), values descending within a group
    order = idx[np.lexsort((-values[idx], numbers[idx], frame[idx]))]
    key = frame[order] * (int(numbers.max()) + 1) + numbers[order]
    start = np.r_[0, np.flatnonzero(np.diff(key)) + 1]
    size = np.diff(np.r_[start, order.size])
    cnt[order] = np.repeat(size, size)
    pos = np.arange(order.size) - np.repeat(start, size)  # 0 = the group's largest
    v = values[order]
    # ties: each takes the position of the last value equal to it in its group
    change = np.r_[(key[1:] != key[:-1]) | (v[1:] != v[:-1]), True]
    run_end = np.flatnonzero(change)                   # last index of each run of equals
    run = np.r_[0, np.cumsum(change[:-1])]             # run of each sorted atom
    ge[order] = pos[run_end[run]] + 1
    return ge, cnt


def element_normalised(values: np.ndarray, numbers: np.ndarray,
                       references: Mapping[Any, np.ndarray],
                       own: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Each atom's -log tail p-value against the sorted in-domain values of its element
    (``references``: atomic number (int or str) -> sorted values, or :func:`prepare_reference`'s
    prepared ones). An element without in-domain atoms (present in training, absent from the
    in-domain frames) is compared against every element's atoms pooled, so it neither alarms
    at once nor never. ``own``: per-atom counts left out of the reference (:func:`tail_pvalue`),
    for the in-domain atoms the references were drawn from."""
    v = np.asarray(values, dtype=np.float64)
    z = np.asarray(numbers)
    refs = _with_pooled(references)
    out = np.empty(v.shape)
    for e in np.unique(z):
        m = z == e
        ref = refs.get(int(e)) if int(e) != POOLED else None
        if ref is None or ref.values.size == 0:
            ref, o = refs[POOLED], None
        else:
            o = None if own is None else (own[0][m], own[1][m])
        out[m] = -np.log(tail_pvalue(v[m], ref, own=o))
    return out


def _component_values(base: str, per_element: bool, per_atom: Mapping[str, np.ndarray],
                      numbers: np.ndarray | None, atoms: Mapping[str, Any] | None,
                      own: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    if base not in per_atom:
        raise DataError(f"the combined statistic needs the per-atom signal {base!r} (have "
                        f"{sorted(per_atom)})")
    v = np.asarray(per_atom[base], dtype=np.float64)
    if not per_element:
        return v
    if numbers is None:
        raise DataError(f"{base}{ELEMENT} needs the atomic numbers of the atoms")
    return element_normalised(v, numbers, (atoms or {}).get(base, {}), own)


def fit_combined(signal: str, on: str, per_atom: Mapping[str, np.ndarray],
                 frame_offsets: np.ndarray, numbers: np.ndarray | None = None,
                 mask: np.ndarray | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Fit the in-domain references of the combined statistic ``signal``:``on`` on in-domain
    frames, and return them with the frames' leave-one-frame-out combined values.

    Parameters
    ----------
    signal : a combined signal name (:func:`combined_components`).
    on : frame statistic ("max", "mean", "qNN").
    per_atom : signal -> (n_atoms,) per-atom values of the in-domain frames.
    frame_offsets : (F+1,) first atom of each frame, then n_atoms.
    numbers : (n_atoms,) atomic numbers (needed for "/element" components).
    mask : (n_atoms,) bool, optional: the atoms the statistic is taken over (and the
        per-element references are drawn from); default all.

    Returns
    -------
    reference : {"frames": {component: sorted in-domain frame values}, "atoms": {signal:
        {"Z": sorted in-domain atom values}}} (JSON-able), for :func:`combined_statistics`.
    values : (F,) leave-one-frame-out combined values of the frames (NaN where a frame has no
        selected atom): each frame's p-values against the other frames, its atoms'
        per-element values against the other frames' atoms.
    """
    off = np.asarray(frame_offsets)
    atoms: dict[str, dict[str, list[float]]] = {}
    sel = np.ones(int(off[-1]), bool) if mask is None else np.asarray(mask, bool)
    for base, per_element in combined_components(signal):
        if per_element and base not in atoms:
            if numbers is None:
                raise DataError(f"{base}{ELEMENT} needs the atomic numbers of the atoms")
            v = np.asarray(per_atom[base], dtype=np.float64)[sel]
            z = np.asarray(numbers)[sel]
            atoms[base] = {str(int(e)): np.sort(v[z == e]).tolist() for e in np.unique(z)}
    frames: dict[str, list[float]] = {}
    total = np.zeros(off.size - 1)
    for base, per_element in combined_components(signal):
        name = base + (ELEMENT if per_element else "")
        own = (own_frame_counts(np.asarray(per_atom[base], dtype=np.float64), np.asarray(numbers),
                                 off, sel) if per_element else None)
        stat = frame_statistics(_component_values(base, per_element, per_atom, numbers, atoms,
                                                  own), off, on, mask)
        ok = np.isfinite(stat)
        ref = np.sort(stat[ok])
        frames[name] = ref.tolist()
        p = np.full(stat.shape, np.nan)
        p[ok] = tail_pvalue(stat[ok], ref, leave_one_out=True)
        total = total - np.log(p)
    return {"frames": frames, "atoms": atoms}, total


def combined_statistics(signal: str, on: str, per_atom: Mapping[str, np.ndarray],
                        frame_offsets: np.ndarray, reference: Mapping[str, Any],
                        numbers: np.ndarray | None = None, mask: np.ndarray | None = None,
                        size_ratio: float = 1.0) -> np.ndarray:
    """(F,) combined statistic ``signal``:``on`` of new frames against the in-domain
    ``reference`` of :func:`fit_combined` (or :func:`prepare_reference` of it, faster when
    called again and again) (NaN where a frame has no selected atom).
    ``size_ratio`` (atoms of a frame / atoms of the in-domain frames) adjusts each component's
    p-value of a maximum for the frame's size (module docstring)."""
    if not (np.isfinite(size_ratio) and size_ratio > 0):
        raise InvalidParameterError(f"size_ratio must be a finite number > 0, got {size_ratio!r}")
    off = np.asarray(frame_offsets)
    reference = prepare_reference(reference)  # a no-op on prepared references
    frames, atoms = reference["frames"], reference["atoms"]
    total = np.zeros(off.size - 1)
    for base, per_element in combined_components(signal):
        name = base + (ELEMENT if per_element else "")
        if name not in frames:
            raise DataError(f"the in-domain reference holds no component {name!r} (has "
                            f"{sorted(frames)}): fit the statistic again")
        stat = frame_statistics(_component_values(base, per_element, per_atom, numbers, atoms),
                                off, on, mask)
        p = tail_pvalue(stat, frames[name])
        if on == "max" and size_ratio != 1.0:
            p = np.maximum(-np.expm1(size_ratio * np.log1p(-np.minimum(p, 1.0 - 1e-16))),
                           P_FLOOR)
        total = total - np.log(np.where(np.isnan(stat), np.nan, p))
    return total
