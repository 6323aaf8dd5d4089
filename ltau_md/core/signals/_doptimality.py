"""D-optimality extrapolation grade (MaxVol active sets), global or clustered, per element.

Lysogorskiy et al., "Active learning strategies for atomic cluster expansion models", Phys.
Rev. Mater. 7, 043801 (2023) (ACE/pacemaker's gamma); Podryabinkin & Shapeev, Comput. Mater.
Sci. 140, 171 (2017) (MTP's MaxVol); the clustered variant after Shuang et al., "Clustering-
enhanced local D-optimality" (2025, arXiv 2508.03405).

For the training atoms of an element, X (N, r) in the r-dimensional span of their features,
MaxVol picks r rows A (the active set) of locally maximal |det A|; then every training row
has |x A^-1|_j <= 1 (up to the tolerance). The grade of a query atom is
gamma = max_j |(x A^-1)_j|: <= 1 inside the active set's span (interpolation), > 1
extrapolation. The default NequIP readout is linear in these features, so this is the exact
analogue of ACE's gamma. Clustered: k-means clusters of the element's training atoms, an
active set per cluster, and gamma in the cluster whose centroid is nearest the query.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np

from ltau_md.core._param_validation import Interval
from ltau_md.core.signals._base import LatentSignal

__all__ = ["ClusteredDOptimality", "DOptimality", "maxvol"]


def maxvol(x: np.ndarray, tol: float = 1.01, max_iter: int | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """MaxVol rows of a tall full-column-rank matrix ``x`` (N, r), N >= r.

    Returns (rows (r,), A^-1 (r, r)) with A = x[rows]; every |x A^-1| entry is <= ``tol``
    on return (Goreinov et al. 2010: start from the pivots of a column-pivoted QR of x^T,
    swap in the row of the largest |x A^-1| entry while it exceeds ``tol``; each swap
    multiplies |det A| by that entry)."""
    import scipy.linalg

    n, r = x.shape
    if n < r:
        raise ValueError(f"maxvol needs at least as many rows as columns, got {x.shape}")
    # a well-conditioned start: the first r pivots of a rank-revealing QR of x^T
    _, _, piv = scipy.linalg.qr(x.T, mode="economic", pivoting=True)
    rows = np.array(piv[:r])
    a_inv = np.linalg.inv(x[rows])
    b = x @ a_inv
    for _ in range(max_iter or 100 * r):
        i, j = np.unravel_index(np.argmax(np.abs(b)), b.shape)
        if abs(b[i, j]) <= tol:
            break
        # row j of A becomes x_i: B' = B - B[:, j] (B[i] - e_j) / B[i, j]
        u = b[i].copy()
        u[j] -= 1.0
        b -= np.outer(b[:, j], u / b[i, j])
        rows[j] = i
    a_inv = np.linalg.inv(x[rows])
    return rows, a_inv


def _span(x: np.ndarray, rel_tol: float = 1e-6) -> np.ndarray:
    """Orthonormal basis (D, r) of the row space of ``x`` (N, D): right singular vectors with
    singular value > rel_tol * the largest."""
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    r = int((sv > rel_tol * sv[0]).sum()) if sv.size and sv[0] > 0 else 0
    return vt[:max(r, 1)].T


def _active_set(x: np.ndarray) -> dict[str, np.ndarray]:
    basis = _span(x)
    rows, a_inv = maxvol(x @ basis)
    return {"basis": basis, "a_inv": a_inv, "rows": rows}


class DOptimality(LatentSignal):
    """Per-atom D-optimality extrapolation grade gamma (dimensionless; <= 1 inside the
    training active set's span) from one MaxVol active set per element. Queries in
    directions the training features never span get no grade from them (the basis is the
    training span); see :func:`maxvol`.

    Parameters
    ----------
    max_atoms : int
        At most this many training atoms per element are searched for the active set (a
        seeded subsample).
    seed : int
        Seed of that subsample.
    """

    name = "doptimality"
    label = "D-optimality grade gamma (MaxVol)"
    _parameter_constraints = {
        "max_atoms": [Interval(Integral, 10, None, closed="left")],
        "seed": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, max_atoms: int = 100000, seed: int = 0):
        self.max_atoms = max_atoms
        self.seed = seed

    def _subsample(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if x.shape[0] > self.max_atoms:
            return x[np.sort(rng.choice(x.shape[0], self.max_atoms, replace=False))]
        return x

    def _fit(self, x: np.ndarray, species: np.ndarray) -> None:
        rng = np.random.default_rng(self.seed)
        self.__dict__.pop("_projection_cache", None)
        self.active_sets_: dict[int, list[dict[str, np.ndarray]]] = {}
        self.centroids_: dict[int, np.ndarray] = {}
        for z in np.unique(species):
            xz = self._subsample(x[species == z], rng)
            labels, centroids = self._clusters(xz, rng)
            self.centroids_[int(z)] = centroids
            self.active_sets_[int(z)] = [_active_set(xz[labels == c])
                                         for c in range(centroids.shape[0])]

    def _clusters(self, x: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(label per row, centroids (C, D)); one cluster here."""
        return np.zeros(x.shape[0], dtype=np.int64), x.mean(axis=0, keepdims=True)

    def _projections(self, element: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centroids (C, D), their squared norms (C,), basis @ A^-1 of every cluster stacked
        (C, D, r), zero-padded to the largest rank r): derived once per element, so a step is
        one matrix product."""
        cache = self.__dict__.setdefault("_projection_cache", {})
        if element not in cache:
            cent = np.asarray(self.centroids_[element], dtype=np.float64)
            mats = [s["basis"] @ s["a_inv"] for s in self.active_sets_[element]]
            r = max(m.shape[1] for m in mats)
            stack = np.zeros((len(mats), cent.shape[1], r))
            for c, m in enumerate(mats):
                stack[c, :, :m.shape[1]] = m
            cache[element] = (cent, (cent ** 2).sum(1), stack)
        return cache[element]

    def _score(self, x: np.ndarray, element: int) -> np.ndarray:
        cent, cent_sq, stack = self._projections(element)
        if stack.shape[0] == 1:
            return np.abs(x @ stack[0]).max(axis=1)
        d2 = cent_sq[None, :] - 2 * x @ cent.T  # + |x|^2, the same for every centroid
        label = np.argmin(d2, axis=1)
        return np.abs(np.einsum("nd,ndr->nr", x, stack[label])).max(axis=1)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for z, sets in self.active_sets_.items():
            out[f"centroids.{z}"] = self.centroids_[z]
            for c, s in enumerate(sets):
                for k, v in s.items():
                    out[f"set.{z}.{c}.{k}"] = v
        return out

    def _from_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.__dict__.pop("_projection_cache", None)
        self.centroids_ = {int(k.split(".")[1]): np.asarray(v) for k, v in arrays.items()
                           if k.startswith("centroids.")}
        self.active_sets_ = {}
        for z, cent in self.centroids_.items():
            self.active_sets_[z] = [
                {k: np.asarray(arrays[f"set.{z}.{c}.{k}"]) for k in ("basis", "a_inv", "rows")}
                for c in range(cent.shape[0])]


class ClusteredDOptimality(DOptimality):
    """:class:`DOptimality` with k-means clusters per element: an active set per cluster and
    gamma in the cluster of the nearest centroid (Shuang et al. 2025), so a query between
    two well-sampled regions, inside the global span but far from both, extrapolates.

    Parameters
    ----------
    n_clusters : int
        Clusters per element; fewer where an element has under ``min_per_dim`` x D training
        atoms per cluster (each cluster needs enough atoms for its active set).
    min_per_dim : float
        Training atoms per feature dimension a cluster needs.
    max_atoms, seed : as :class:`DOptimality` (the seed also seeds k-means).
    """

    name = "clustered_doptimality"
    label = "clustered D-optimality grade gamma"
    _parameter_constraints = {
        **DOptimality._parameter_constraints,
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "min_per_dim": [Interval(Real, 1, None, closed="left")],
    }

    def __init__(self, n_clusters: int = 8, min_per_dim: float = 10.0,
                 max_atoms: int = 100000, seed: int = 0):
        super().__init__(max_atoms=max_atoms, seed=seed)
        self.n_clusters = n_clusters
        self.min_per_dim = min_per_dim

    def _clusters(self, x: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.cluster import KMeans

        c = int(max(1, min(self.n_clusters, x.shape[0] // (self.min_per_dim * x.shape[1]))))
        if c == 1:
            return super()._clusters(x, rng)
        km = KMeans(c, n_init=3, random_state=self.seed).fit(x)
        labels = km.labels_.astype(np.int64)
        # a cluster too small for an active set joins its nearest neighbour's
        sizes = np.bincount(labels, minlength=c)
        if (sizes < x.shape[1]).any():
            keep = np.flatnonzero(sizes >= x.shape[1])
            cent = km.cluster_centers_[keep]
            d2 = ((x[:, None, :] - cent[None]) ** 2).sum(-1)
            labels = np.argmin(d2, axis=1)
        cent = np.stack([x[labels == k].mean(axis=0) for k in range(labels.max() + 1)])
        return labels, cent
