"""Statistics of the evaluation: bootstrap intervals, per-atom ranking, detection, alarm rates."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ltau_md.core.metrics import (
    alarm_threshold,
    auroc,
    auroc_rows,
    spearman,
    spearman_rows,
)

if TYPE_CHECKING:

    pass


__all__ = ["HIGH_ERROR_QUANTILE", "alarm_split_rates", "ci95", "detection_scores",
           "frame_atom_mask", "metric_entry", "per_atom_scores"]

#: atoms with |dF| above this quantile of the in-domain evaluation errors are "high-error"
HIGH_ERROR_QUANTILE = 0.9


# ---------------------------------------------------------------------------- statistics
def ci95(values: Sequence[float]) -> list[float | None]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return [None, None]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]


def frame_atom_mask(off: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Atom indices of ``frames`` (with repeats) given frame offsets."""
    starts, lens = off[frames], off[frames + 1] - off[frames]
    total = int(lens.sum())
    shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return np.arange(total) + shift


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
    boot: dict[str, dict[str, list[float]]] = {n: {"sp": [], "au": []} for n in sig}
    n_frames = off.size - 1
    for _ in range(n_boot):
        atoms = frame_atom_mask(off, rng.integers(0, n_frames, n_frames))
        e = err[atoms][None, :]
        lab = e > thr
        for name, v in sig.items():
            va = v[atoms][None, :]
            boot[name]["sp"].append(float(spearman_rows(va, e)[0]))
            boot[name]["au"].append(float(auroc_rows(va, lab)[0]))
    for name in sig:
        res[name]["spearman"] = metric_entry(res[name]["spearman"], boot[name]["sp"])
        res[name]["high_error_auroc"] = metric_entry(res[name]["high_error_auroc"],
                                                     boot[name]["au"])
    return res


def detection_scores(neg: np.ndarray, pos: np.ndarray, n_boot: int, rng: np.random.Generator
               ) -> dict[str, Any]:
    """AUROC of frame scores for OOD (``pos``) vs in-domain (``neg``) frames, stratified
    frame bootstrap interval."""
    sc = np.concatenate([pos, neg])
    lab = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    ok = np.isfinite(sc) | np.isposinf(sc)
    value = auroc(np.nan_to_num(sc[ok], posinf=np.finfo(float).max), lab[ok])
    boot = []
    for _ in range(n_boot):
        p = pos[rng.integers(0, pos.size, pos.size)]
        n = neg[rng.integers(0, neg.size, neg.size)]
        s = np.nan_to_num(np.concatenate([p, n]), posinf=np.finfo(float).max)
        boot.append(float(auroc_rows(s[None, :], lab[None, :])[0]))
    return metric_entry(value, boot)


def alarm_split_rates(stat: np.ndarray, fraction: float, alarm_rate: float, n_splits: int,
                       seed: int) -> np.ndarray:
    """In-domain alarm rate (frames of the evaluation part above the threshold fitted on the
    calibration part) over ``n_splits`` random frame splits."""
    rng = np.random.default_rng(seed)
    n = stat.size
    n_cal = int(np.clip(round(fraction * n), 1, n - 1))
    rates = np.empty(n_splits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for i in range(n_splits):
            perm = rng.permutation(n)
            thr = alarm_threshold(stat[perm[:n_cal]], alarm_rate)
            rates[i] = float(np.mean(stat[perm[n_cal:]] > thr))
    return rates


