"""Statistics of the evaluation: bootstrap intervals, per-atom ranking, detection, alarm rates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ltau_md.core.metrics import (
    alarm_thresholds_rows,
    auroc,
    auroc_weighted,
    combined_statistics,
    fit_combined,
    parse_stat_key,
    prepare_reference,
    spearman,
    spearman_weighted,
    statistic_signals,
)

__all__ = ["HIGH_ERROR_QUANTILE", "ci95", "combined_split_rates", "detection_scores",
           "metric_entry", "per_atom_scores", "split_permutations", "split_thresholds"]

#: atoms with |dF| above this quantile of the in-domain evaluation errors are "high-error"
HIGH_ERROR_QUANTILE = 0.9
#: bootstrap resamples x items scored at once (bounds the (B, n) count matrices: 32 MB)
_BOOT_CELLS = 1 << 22


def _row_counts(draws: np.ndarray, n: int) -> np.ndarray:
    """(B, n) counts of each item 0..n-1 in each row of ``draws`` (B, m)."""
    b = draws.shape[0]
    flat = (draws + np.arange(b)[:, None] * n).reshape(-1)
    return np.bincount(flat, minlength=b * n).reshape(b, n)


# ---------------------------------------------------------------------------- statistics
def ci95(values: Sequence[float]) -> list[float | None]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return [None, None]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]


def boot_rng(seed: int, *labels: str) -> np.random.Generator:
    """The bootstrap generator of one figure, from the evaluation's ``seed`` and the figure's
    ``labels`` (e.g. "detection", the set, the statistic): each figure draws its own
    resamples, so its interval does not depend on what else is scored, or in what order."""
    import zlib

    return np.random.default_rng([int(seed), *(zlib.crc32(str(x).encode()) for x in labels)])


def metric_entry(value: float, boot: Sequence[float]) -> dict[str, Any]:
    return {"value": value, "ci95": ci95(boot)}


def per_atom_scores(sig: dict[str, np.ndarray], err: np.ndarray, numbers: np.ndarray,
              off: np.ndarray, n_boot: int, rng: np.random.Generator, thr: float
              ) -> dict[str, Any]:
    """Spearman(signal, |dF|) and AUROC for high-error atoms (|dF| > ``thr`` eV/A) of the
    atoms of frames ``off``, with frame-bootstrap intervals and per-element values."""
    from ase.data import chemical_symbols

    high = err > thr
    res: dict[str, Any] = {}
    for name, v in sig.items():
        per_el = {}
        for z in np.unique(numbers):
            m = numbers == z
            per_el[chemical_symbols[int(z)]] = (spearman(v[m], err[m]) if m.sum() > 2
                                                else float("nan"))
        finite_el = {k: x for k, x in per_el.items() if np.isfinite(x)}
        worst = min(finite_el, key=finite_el.get) if finite_el else None
        res[name] = {
            "spearman": spearman(v, err),
            "high_error_auroc": auroc(v, high) if 0 < high.sum() < high.size else float("nan"),
            "spearman_per_element": per_el,
            "spearman_worst_element": {"element": worst,
                                       "value": finite_el.get(worst, float("nan"))},
        }
    # frame resamples drawn one at a time (the random stream of earlier versions), scored
    # as counts per atom: no resample is expanded or sorted
    n_frames = off.size - 1
    draws = np.stack([rng.integers(0, n_frames, n_frames) for _ in range(n_boot)]) \
        if n_boot else np.empty((0, n_frames), np.int64)
    frame_of_atom = np.repeat(np.arange(n_frames), np.diff(off))
    boot: dict[str, dict[str, list[np.ndarray]]] = {n: {"sp": [], "au": []} for n in sig}
    step = max(1, _BOOT_CELLS // max(err.size, 1))
    for a in range(0, n_boot, step):
        counts = _row_counts(draws[a:a + step], n_frames)[:, frame_of_atom]
        for name, v in sig.items():
            boot[name]["sp"].append(spearman_weighted(v, err, counts))
            boot[name]["au"].append(auroc_weighted(v, high, counts))
    for name in sig:
        res[name]["spearman"] = metric_entry(res[name]["spearman"],
                                             np.concatenate(boot[name]["sp"] or [[]]))
        res[name]["high_error_auroc"] = metric_entry(res[name]["high_error_auroc"],
                                                     np.concatenate(boot[name]["au"] or [[]]))
    return res


def detection_scores(neg: np.ndarray, pos: np.ndarray, n_boot: int, rng: np.random.Generator
               ) -> dict[str, Any]:
    """AUROC of frame scores for OOD (``pos``) vs in-domain (``neg``) frames, stratified
    frame bootstrap interval."""
    sc = np.concatenate([pos, neg])
    lab = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    ok = np.isfinite(sc) | np.isposinf(sc)
    value = auroc(np.nan_to_num(sc[ok], posinf=np.finfo(float).max), lab[ok])
    draws = [(rng.integers(0, pos.size, pos.size), rng.integers(0, neg.size, neg.size))
             for _ in range(n_boot)]
    s_all = np.nan_to_num(sc, posinf=np.finfo(float).max)
    boot = []
    step = max(1, _BOOT_CELLS // max(sc.size, 1))
    for a in range(0, n_boot, step):
        part = draws[a:a + step]
        counts = np.concatenate([_row_counts(np.stack([p for p, _ in part]), pos.size),
                                 _row_counts(np.stack([n for _, n in part]), neg.size)], axis=1)
        boot.append(auroc_weighted(s_all, lab, counts))
    boot = np.concatenate(boot) if boot else np.empty(0)
    return metric_entry(value, boot)


def split_permutations(n: int, fraction: float, n_splits: int, seed: int
                       ) -> tuple[np.ndarray, int]:
    """The random frame splits of :func:`split_thresholds` and :func:`combined_split_rates`:
    (n_splits, n) permutations of the n in-domain frames, each split's calibration frames
    the first ``n_cal`` of its row; returns them and ``n_cal``."""
    rng = np.random.default_rng(seed)
    n_cal = int(np.clip(round(fraction * n), 1, n - 1))
    if not n_splits:
        return np.empty((0, n), dtype=np.int64), n_cal
    return np.stack([rng.permutation(n) for _ in range(n_splits)]), n_cal


def split_thresholds(stat: np.ndarray, fraction: float, alarm_rate: float, n_splits: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Over ``n_splits`` random frame splits of the in-domain values ``stat``: the threshold
    fitted on each split's calibration part, and the in-domain alarm rate of its evaluation
    part (frames above that threshold); two (n_splits,) arrays."""
    perms, n_cal = split_permutations(stat.size, fraction, n_splits, seed)
    if not n_splits:
        return np.empty(0), np.empty(0)
    values = np.asarray(stat, dtype=np.float64)[perms]
    thr = alarm_thresholds_rows(values[:, :n_cal], alarm_rate)
    return thr, np.mean(values[:, n_cal:] > thr[:, None], axis=1)


def _frames_of(per_atom: Mapping[str, np.ndarray], offsets: np.ndarray, numbers: np.ndarray,
               mask: np.ndarray | None, frames: np.ndarray) -> tuple[Any, ...]:
    """The per-atom arrays, offsets, numbers and mask of the frames ``frames`` (bool)."""
    counts = np.diff(offsets)
    atoms = np.repeat(frames, counts)
    return ({k: v[atoms] for k, v in per_atom.items()},
            np.concatenate([[0], np.cumsum(counts[frames])]), numbers[atoms],
            None if mask is None else mask[atoms])


def combined_split_rates(key: str, per_atom: Mapping[str, np.ndarray], offsets: np.ndarray,
                         numbers: np.ndarray, mask: np.ndarray | None,
                         ood: Mapping[str, tuple[Mapping[str, np.ndarray], np.ndarray,
                                                 np.ndarray, np.ndarray | None]],
                         fraction: float, alarm_rate: float, n_splits: int, seed: int
                         ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`split_thresholds` of the combined statistic ``key`` ("A/element+B:max"), whose
    in-domain references depend on the calibration frames too: on each of the same random
    splits, the references refitted on the split's calibration frames
    (:func:`~ltau_md.core.metrics.fit_combined`), the threshold fitted on their
    leave-one-frame-out values, and the alarm rates of the split's evaluation frames and of
    each out-of-domain set (``ood``: name -> (per_atom, offsets, numbers, mask)) scored
    against those references. Returns the (n_splits,) in-domain rates and, per set, the
    (n_splits,) out-of-domain rates."""
    signal, on, _ = parse_stat_key(key)  # the atoms: ``mask``
    need = statistic_signals(key)
    per_atom = {k: np.asarray(v, dtype=np.float64) for k, v in per_atom.items() if k in need}
    offsets = np.asarray(offsets)
    perms, n_cal = split_permutations(offsets.size - 1, fraction, n_splits, seed)
    rates = np.empty(n_splits)
    out = {name: np.empty(n_splits) for name in ood}
    for j, perm in enumerate(perms):
        cal = np.zeros(offsets.size - 1, bool)
        cal[perm[:n_cal]] = True
        ref, loo = fit_combined(signal, on, *_frames_of(per_atom, offsets, numbers, mask, cal))
        ref = prepare_reference(ref)
        loo = loo[~np.isnan(loo)]
        thr = alarm_thresholds_rows(loo[None, :], alarm_rate)[0] if loo.size else np.inf
        sig_e, off_e, z_e, m_e = _frames_of(per_atom, offsets, numbers, mask, ~cal)
        rates[j] = np.mean(combined_statistics(signal, on, sig_e, off_e, ref, z_e, m_e) > thr)
        for name, (sig, off, z, m) in ood.items():
            out[name][j] = np.mean(combined_statistics(signal, on, sig, off, ref, z, m) > thr)
    return rates, out


