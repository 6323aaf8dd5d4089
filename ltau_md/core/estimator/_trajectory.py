"""Warm-started k-NN along a trajectory (HNSW level-0 search from the previous step)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from ltau_md.core.estimator._index import (
    check_descriptors,
    hnsw_graph,
    stored_rows,
    stored_vectors,
)
from ltau_md.core.validation import check_is_fitted

if TYPE_CHECKING:
    from ltau_md.core.estimator._estimator import LTAUEstimator
    from ltau_md.core.estimator._prediction import Prediction

__all__ = ["TrajectoryNeighbors"]


class TrajectoryNeighbors:
    """k-NN along a trajectory, warm-started from the previous step's neighbours.

    With an HNSW index, each atom's level-0 graph search starts from its k neighbours of the
    previous step (which are close to its new neighbours when atoms move a little per step), so
    a small search breadth ``ef_search`` (default max(16, k)) reaches the recall of a cold
    search at a larger one. A cold search is done on the first step, when the number of atoms
    changes, after :meth:`reset`, and every ``refresh_every`` steps. Other index kinds always
    search cold.

    An atom that looks novel is searched again broadly once (as a cold search does), not at
    every step it keeps looking novel: its next warm searches start from the neighbours that
    broad search found. After a cold search every atom may be searched again.
    """

    def __init__(self, estimator: LTAUEstimator, ef_search: int | None = None,
                 refresh_every: int = 100):
        check_is_fitted(estimator)
        self.estimator = estimator
        self.ef_search = int(ef_search or max(16, int(estimator.k)))
        self.refresh_every = int(refresh_every)
        self._xb: np.ndarray | None = None
        self._rows: np.ndarray | None = None  # stored position -> training row
        self._stored: np.ndarray | None = None  # training row -> stored position
        self.reset()

    def _vectors(self) -> np.ndarray:
        """Zero-copy (N, D) view of the HNSW index's stored training vectors (stored order);
        also sets the maps between stored positions and training rows."""
        if self._xb is None:
            index = self.estimator.index_
            self._xb = stored_vectors(index)
            self._rows = stored_rows(index)
            if self._rows is not None:
                self._stored = np.empty_like(self._rows)
                self._stored[self._rows] = np.arange(self._rows.size)
        return self._xb

    def reset(self) -> None:
        """Forget the previous step (next search is cold)."""
        self._prev: np.ndarray | None = None
        self._since_cold = 0
        self._confirmed: np.ndarray | None = None  # atoms searched broadly since the cold one

    def kneighbors(self, descriptors: np.ndarray, species: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(distances (n,k), indices (n,k)) as :meth:`LTAUEstimator.kneighbors`, including
        the broad re-search of atoms that look novel (so a miss is not carried forward)."""
        est = self.estimator
        x = check_descriptors(descriptors, est.dim_)
        n, k = x.shape[0], int(est.k)
        warm = (est.index_kind_ == "hnsw" and self._prev is not None and self._prev.shape == (n, k)
                and self._since_cold < self.refresh_every)
        if not warm:
            dist, idx = est.kneighbors(x, species, confirm=False)
            dist, idx, rows = est.confirm_novel_rows(x, dist, idx, species)
            self._since_cold = 0
            self._confirmed = np.zeros(n, dtype=bool)
            self._confirmed[rows] = True
        else:
            index = hnsw_graph(est.index_)
            vec = self._vectors()
            prev = self._prev if self._stored is None else self._stored[self._prev]
            entry = np.ascontiguousarray(prev, dtype=np.int32)
            vec = vec[entry]
            ed = ((vec - x[:, None, :]) ** 2).sum(-1)
            ed = np.ascontiguousarray(ed, dtype=np.float32)
            d2 = np.empty((n, k), np.float32)
            idx = np.empty((n, k), np.int64)
            ef_cold = index.hnsw.efSearch
            index.hnsw.efSearch = max(self.ef_search, k)
            try:
                index.search_level_0(n, faiss.swig_ptr(x), k, faiss.swig_ptr(entry),
                                     faiss.swig_ptr(ed), faiss.swig_ptr(d2), faiss.swig_ptr(idx),
                                     k, 2)
            finally:
                index.hnsw.efSearch = ef_cold
            if np.any(idx < 0):
                self._prev = None
                return self.kneighbors(x, species)
            if self._rows is not None:
                idx = self._rows[idx]
            dist, idx, rows = est.confirm_novel_rows(x, np.sqrt(np.maximum(d2, 0.0)), idx, species,
                                           skip=self._confirmed)
            self._confirmed[rows] = True
            self._since_cold += 1
        self._prev = idx
        return dist, idx

    def predict(self, descriptors: np.ndarray, *, s: float | None = None, group: Any = None,
                species: np.ndarray | None = None) -> Prediction:
        """As :meth:`LTAUEstimator.predict`, warm-started."""
        dist, idx = self.kneighbors(descriptors, species)
        return self.estimator.predict_from_neighbors(dist, idx, s=s, group=group,
                                                     species=species)
