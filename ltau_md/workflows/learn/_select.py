"""Choosing which alarmed frames to label: one frame per alarm window, then a batch that is
diverse in the model's latent space (greedy D-optimal design against the training set)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ltau_md.core.exceptions import DataError

__all__ = ["SELECTION_METHODS", "alarm_windows", "d_optimal_gain", "d_optimal_selection",
           "information_matrices"]

#: how a batch is chosen from the alarmed frames: "d_optimal" (diverse, the default),
#: "top" (highest alarm values), "random"
SELECTION_METHODS = ("d_optimal", "top", "random")

#: ridge added to each element's information matrix, relative to its mean diagonal
RIDGE = 1e-3


def alarm_windows(steps: Sequence[int], values: Sequence[float], threshold: float,
                  gap: int = 1, max_length: int | None = None) -> list[int]:
    """Indices of the frames to keep from one run's observed frames (``steps`` increasing,
    ``values`` of the alarm statistic): each window of consecutive observed frames above
    ``threshold`` (frames at most ``gap`` observations apart belong to one window, a window
    spans at most ``max_length`` observations: a long stretch of alarms is several events)
    gives its highest-valued frame."""
    v = np.asarray(values, dtype=np.float64)
    above = np.flatnonzero(v > threshold)
    keep, start = [], 0
    for i in range(1, above.size + 1):
        if (i == above.size or above[i] - above[i - 1] > gap
                or (max_length is not None and above[i] - above[start] >= max_length)):
            window = above[start:i]
            keep.append(int(window[np.argmax(v[window])]))
            start = i
    return keep


def information_matrices(features: np.ndarray, species: np.ndarray
                         ) -> dict[int, np.ndarray]:
    """Per element, X^T X of its atoms' features (D, D) plus a ridge of :data:`RIDGE` times
    the mean diagonal (at least 1e-12), so every matrix is invertible."""
    x = np.asarray(features, dtype=np.float64)
    z = np.asarray(species)
    out = {}
    for e in np.unique(z):
        xe = x[z == e]
        m = xe.T @ xe
        out[int(e)] = m + max(RIDGE * float(np.trace(m)) / m.shape[0], 1e-12) * np.eye(m.shape[0])
    return out


def d_optimal_gain(features: np.ndarray, species: np.ndarray,
                   info: dict[int, np.ndarray], dim: int) -> float:
    """Increase of sum over elements of log det(information matrix) if the atoms
    (``features`` (n, D), ``species`` (n,)) were added: sum_e log det(I + X_e M_e^-1 X_e^T)
    (matrix determinant lemma). An element absent from ``info`` starts from the ridge
    identity."""
    x = np.asarray(features, dtype=np.float64)
    z = np.asarray(species)
    gain = 0.0
    for e in np.unique(z):
        xe = x[z == e]
        m = info.get(int(e))
        if m is None:
            m = max(RIDGE, 1e-12) * np.eye(dim)
        k = np.eye(xe.shape[0]) + xe @ np.linalg.solve(m, xe.T)
        gain += float(np.linalg.slogdet(k)[1])
    return gain


def _duplicate(x: np.ndarray, z: np.ndarray, of: list[tuple[np.ndarray, np.ndarray]],
               tol: float) -> bool:
    """True if a frame of ``of`` has the same atomic numbers and features within ``tol``
    (RMS over its atoms' features)."""
    return any(np.array_equal(z, zc) and float(np.sqrt(np.mean((x - xc) ** 2))) <= tol
               for xc, zc in of)


def d_optimal_selection(candidates: Sequence[tuple[np.ndarray, np.ndarray]],
                        reference: tuple[np.ndarray, np.ndarray], batch_size: int, *,
                        min_gain: float = 1e-3, duplicate_tol: float = 1e-2) -> list[int]:
    """Greedy D-optimal batch: indices of at most ``batch_size`` frames of ``candidates``
    (each (features (n, D), atomic numbers (n,))) that, added one at a time to the training
    atoms ``reference`` (features, atomic numbers), most increase sum over elements of the log
    determinant of the information matrix X^T X (+ ridge) of the latent features: the frame
    that adds the most new directions first, then the next given it, and so on. A frame
    whose gain is below ``min_gain`` (a near-duplicate of what is already there) is never
    taken, and neither is a near-duplicate of a frame already taken (same atomic numbers,
    RMS feature difference <= ``duplicate_tol`` times the RMS of the reference features: a
    duplicate still adds information to X^T X, so the gain alone would take it), so fewer
    than ``batch_size`` may come back.

    D-optimal design, the criterion behind the extrapolation grade of
    :class:`~ltau_md.core.signals.DOptimality` and pacemaker's ``pace_select``, which keep a
    MaxVol active set of D atoms instead of the full information matrix used here."""
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    ref_x, ref_z = reference
    ref_x = np.asarray(ref_x, dtype=np.float64)
    if ref_x.ndim != 2:
        raise DataError(f"reference features must be (N, D), got {ref_x.shape}")
    dim = ref_x.shape[1]
    for i, (x, z) in enumerate(candidates):
        if np.asarray(x).ndim != 2 or np.asarray(x).shape[1] != dim or len(z) != len(x):
            raise DataError(f"candidate {i}: features must be (n, {dim}) with n atomic numbers")
    info = information_matrices(ref_x, ref_z)
    tol = float(duplicate_tol) * float(np.sqrt(np.mean(ref_x**2)))
    frames = [(np.asarray(x, dtype=np.float64), np.asarray(z)) for x, z in candidates]
    left = list(range(len(candidates)))
    chosen: list[int] = []
    while left and len(chosen) < int(batch_size):
        left = [i for i in left if not _duplicate(*frames[i], [frames[c] for c in chosen], tol)]
        if not left:
            break
        gains = [d_optimal_gain(*frames[i], info, dim) for i in left]
        j = int(np.argmax(gains))
        if gains[j] < min_gain:
            break
        best = left.pop(j)
        chosen.append(best)
        x, z = frames[best]
        for e in np.unique(z):
            xe = x[z == e].astype(np.float64)
            m = info.get(int(e), max(RIDGE, 1e-12) * np.eye(dim))
            info[int(e)] = m + xe.T @ xe
    return chosen
