"""k-nearest training atoms of query atoms: the search, the broad re-search of atoms that look
novel (an approximate index's misses), and novelty from the neighbours found."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from ltau_md.core.estimator._index import (
    IndexSettings,
    broad_search,
    check_descriptors,
    configure_search,
    leave_one_out_search,
    search,
)
from ltau_md.core.estimator._novelty import NoveltyReference
from ltau_md.core.exceptions import DataError, DescriptorError
from ltau_md.core.validation import check_is_fitted

__all__ = ["CONFIRM_MAX_ATOMS", "NeighborsMixin"]

#: at most this many atoms per call get the broad re-search (the most novel-looking first): a
#: miss is rare (about 1 in 200 atoms on clustered data), while a structure far outside the
#: training domain makes every atom look novel, and re-searching all would cost ~0.25 ms per
#: atom at 4e5 training atoms for no change of the verdict
CONFIRM_MAX_ATOMS = 16


class NeighborsMixin:
    """``kneighbors``, ``confirm_novel``, ``confirm_novel_rows``, ``novelty_of`` and
    ``leave_one_out_novelty`` of :class:`~ltau_md.core.estimator.LTAUEstimator` (fitted
    ``index_``, ``index_kind_``, ``dim_``, ``n_train_``, ``train_species_``, parameters ``k``,
    ``confirm_pvalue``; ``training_descriptors`` of the latent-signals mixin)."""

    index_: faiss.Index
    index_kind_: str
    dim_: int
    n_train_: int
    train_species_: np.ndarray
    k: int
    confirm_pvalue: float
    _novelty: NoveltyReference

    def novelty_of(self, distances: np.ndarray, indices: np.ndarray,
                   species: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(novelty (n,), p-value (n,)) of query atoms from their k-NN ``distances`` and
        ``indices`` (n, k). ``species`` (n,) defaults to the element of each atom's nearest
        training atom. The p-value is (1 + #training atoms of the element with leave-one-out
        novelty >= the atom's) / (1 + #training atoms of the element)."""
        check_is_fitted(self)
        return self._novelty_rows(distances, self._check_indices(indices), species)

    def leave_one_out_novelty(self, rows: np.ndarray, descriptors: np.ndarray | None = None
                              ) -> np.ndarray:
        """Leave-one-out novelty (n,) of the training atoms ``rows`` (n,): each searched
        against the other training atoms. ``descriptors``: all N training descriptors (the
        rows ``fit`` indexed); None reads them from a flat or HNSW index (an IVF-PQ index
        stores compressed codes only: pass them)."""
        check_is_fitted(self)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_train_):
            raise DataError(f"rows must lie in [0, {self.n_train_}) (the training atoms)")
        if descriptors is None:
            descriptors = self.training_descriptors()
            if descriptors is None:
                raise DataError(f"the {self.index_kind_} index does not hold the training "
                                "descriptors exactly: pass descriptors=")
        x = np.asarray(descriptors)
        if x.shape != (self.n_train_, self.dim_):
            raise DescriptorError(f"descriptors have shape {x.shape}, the estimator was "
                                  f"fitted on ({self.n_train_}, {self.dim_})")
        settings = IndexSettings(self)
        dist, nbrs = leave_one_out_search(self.index_, self.index_kind_, x, settings, rows)
        configure_search(self.index_, self.index_kind_, settings)
        return self._novelty.relative(dist, nbrs, self.train_species_[rows])

    def _novelty_rows(self, distances: np.ndarray, indices: np.ndarray,
                      species: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`novelty_of` for checked ``indices``."""
        if species is None:
            species = self.train_species_[indices[:, 0]]
        species = np.asarray(species, dtype=np.int64)
        nov = self._novelty.relative(np.asarray(distances).mean(axis=1), indices, species)
        return nov, self._novelty.pvalue(nov, species)

    def _check_indices(self, indices: Any) -> np.ndarray:
        """``indices`` as an (n, k) int array of training-atom rows, else DataError."""
        idx = np.asarray(indices)
        if idx.ndim != 2 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise DataError(f"neighbour indices must be an (n, k) int array, got shape "
                            f"{idx.shape} of {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_train_):
            bad = np.flatnonzero(((idx < 0) | (idx >= self.n_train_)).any(axis=1))[:10]
            raise DataError(f"neighbour indices must lie in [0, {self.n_train_}) (the training "
                            f"atoms); rows {bad.tolist()} do not")
        return idx

    def kneighbors(self, descriptors: np.ndarray, species: np.ndarray | None = None, *,
                   confirm: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(distances (n,k), indices (n,k)) of the k nearest training atoms; distances are
        Euclidean in descriptor units. With ``confirm`` (and ``confirm_pvalue`` > 0), atoms
        that look novel are searched again broadly (:meth:`confirm_novel`)."""
        check_is_fitted(self)
        x = check_descriptors(descriptors, self.dim_)
        configure_search(self.index_, self.index_kind_, IndexSettings(self))
        dist, idx = search(self.index_, x, int(self.k))
        if confirm:
            dist, idx = self.confirm_novel(x, dist, idx, species)
        return dist, idx

    def confirm_novel(self, descriptors: np.ndarray, distances: np.ndarray, indices: np.ndarray,
                      species: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Search again, broadly, the atoms whose novelty p-value is below ``confirm_pvalue``
        and keep whichever neighbour set is closer. An approximate index (HNSW, IVF-PQ) now
        and then lands an atom in the wrong region of descriptor space; its neighbours are
        then far away and it looks novel. HNSW: efSearch max(128, 8k); IVF-PQ: 8x nprobe (at
        most all lists); at most :data:`CONFIRM_MAX_ATOMS` atoms, the most novel first. An
        exact (flat) index needs no confirmation."""
        return self.confirm_novel_rows(descriptors, distances, indices, species)[:2]

    def confirm_novel_rows(self, descriptors: np.ndarray, distances: np.ndarray,
                           indices: np.ndarray, species: np.ndarray | None = None,
                           skip: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`confirm_novel`, leaving out the atoms ``skip`` (bool (n,), e.g. searched
        broadly at an earlier step of a trajectory); also returns the rows searched again."""
        none = np.empty(0, dtype=np.int64)
        if self.index_kind_ == "flat" or not self.confirm_pvalue:
            return distances, indices, none
        nov, pval = self.novelty_of(distances, indices, species)
        wanted = pval < self.confirm_pvalue
        if skip is not None:
            wanted &= ~skip
        rows = np.flatnonzero(wanted)
        if rows.size == 0:
            return distances, indices, none
        if rows.size > CONFIRM_MAX_ATOMS:
            rows = rows[np.argsort(-nov[rows], kind="stable")[:CONFIRM_MAX_ATOMS]]
        x = check_descriptors(descriptors, self.dim_)[rows]
        d, idx = broad_search(self.index_, self.index_kind_, x, int(self.k))
        better = (idx >= 0).all(axis=1) & (d.mean(axis=1) < distances[rows].mean(axis=1))
        if better.any():
            distances, indices = distances.copy(), indices.copy()
            distances[rows[better]], indices[rows[better]] = d[better], idx[better]
        return distances, indices, rows
