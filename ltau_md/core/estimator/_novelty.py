"""Novelty references: how far a query atom lies from the training atoms, relative to the
in-domain scale, and how unusual that is among the training atoms' own leave-one-out values.

A query atom with mean distance d to its k nearest training atoms has novelty d / d_ref:
``"element"`` divides by the median leave-one-out k-NN distance of the training atoms of its
element, ``"local"`` by the mean leave-one-out distance of its k neighbours themselves. Both are
about 1 for typical in-domain atoms.

The reference needs the leave-one-out k-NN distances of training atoms: of all of them for
``"local"`` (every neighbour's own distance is read) and up to :data:`LOO_FULL_MAX_ATOMS` atoms
for ``"element"``; above that ``"element"`` uses a seeded sample stratified by element
(:func:`loo_sample`), since a median and a p-value distribution need thousands of atoms, not
millions, and a leave-one-out search of every atom was ~40-90 % of a large fit. The sample is
larger for approximate indexes, whose p-values decide which atoms are searched again.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LOO_FULL_MAX_ATOMS", "LOO_MIN_PER_ELEMENT", "LOO_SAMPLE_ATOMS",
           "LOO_SAMPLE_ATOMS_FLAT", "NOVELTY_KINDS", "NoveltyReference", "loo_sample",
           "loo_sample_size"]

NOVELTY_KINDS = ("element", "local")
#: up to this many training atoms every one gets a leave-one-out search ("element" novelty)
LOO_FULL_MAX_ATOMS = 20_000
#: above it, about this many atoms, drawn in proportion to their elements' shares, for an
#: approximate index (HNSW, IVF-PQ): the p-value below ``confirm_pvalue`` that sends an atom
#: to the broad re-search needs the in-domain 1 % tail; benchmarks/bench_reference.py data at
#: 1e5 atoms: 4096 atoms put that tail at novelty 4.3 (all atoms: 2.0) and the p99
#: confidence error along a trajectory at 0.10, 16384 atoms at 2.6 and 0.0075 (all: 0.0075)
LOO_SAMPLE_ATOMS = 16384
#: ... and for an exact (flat) index, whose search costs O(N) per atom and needs no
#: re-search (4096 atoms at 4e5 training atoms: 2.9 s of CPU)
LOO_SAMPLE_ATOMS_FLAT = 4096
#: ... but at least this many of each element (all of an element with fewer): p-values of a
#: rare element resolve 1/(1 + 1024), well below the 0.01 of ``confirm_pvalue``
LOO_MIN_PER_ELEMENT = 1024


def loo_sample_size(index_kind: str) -> int:
    """Atoms of the leave-one-out sample for an index of ``index_kind``."""
    return LOO_SAMPLE_ATOMS_FLAT if index_kind == "flat" else LOO_SAMPLE_ATOMS


def loo_sample(species: np.ndarray, kind: str = "element", index_kind: str = "hnsw"
               ) -> np.ndarray | None:
    """Sorted rows of the training atoms that get a leave-one-out search, or None for all of
    them (``kind`` "local" novelty, or at most :data:`LOO_FULL_MAX_ATOMS` atoms): about
    :func:`loo_sample_size` atoms. Seeded: the same atoms for the same ``species`` (N,)."""
    species = np.asarray(species)
    size = loo_sample_size(index_kind)
    n = species.shape[0]
    if kind == "local" or n <= LOO_FULL_MAX_ATOMS:
        return None
    rng = np.random.default_rng(0)
    rows = []
    for z in np.unique(species):
        members = np.flatnonzero(species == z)
        want = max(LOO_MIN_PER_ELEMENT, round(size * members.size / n))
        rows.append(members if want >= members.size
                    else rng.choice(members, want, replace=False))
    return np.sort(np.concatenate(rows))


class NoveltyReference:
    """The fitted in-domain reference of novelty.

    Parameters
    ----------
    kind : {"element", "local"}
        How distances are made scale-free (module docstring).
    knn_distance : (n,) array
        Mean distance of each atom of ``rows`` to its k nearest other training atoms
        (descriptor units).
    species : (N,) int array
        Atomic numbers of all N training atoms.
    train_novelty : (n,) array, optional
        The leave-one-out novelty of the atoms of ``rows``; computed from ``neighbors`` if
        not given.
    neighbors : (n, k) int array, optional
        Their leave-one-out neighbours (needed without ``train_novelty``).
    rows : (n,) int array or None
        The training atoms these values belong to (:func:`loo_sample`); None: all N.

    Attributes
    ----------
    scale : dict[int, float]
        {Z: median leave-one-out distance of the element's training atoms (of ``rows``)}.
    """

    def __init__(self, kind: str, knn_distance: np.ndarray, species: np.ndarray,
                 train_novelty: np.ndarray | None = None,
                 neighbors: np.ndarray | None = None,
                 rows: np.ndarray | None = None):
        self.kind = kind
        self.knn_distance = np.asarray(knn_distance, dtype=np.float32)
        self.species = np.asarray(species)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        if self.rows is not None and kind == "local":
            raise ValueError('"local" novelty needs every training atom\'s leave-one-out '
                             "distance, not a sample")
        sp = self.species if self.rows is None else self.species[self.rows]
        if sp.shape != self.knn_distance.shape:
            raise ValueError(f"{self.knn_distance.shape[0]} leave-one-out distances for "
                             f"{sp.shape[0]} atoms")
        self.floor = max(float(np.median(self.knn_distance)) * 1e-6, 1e-12)
        self.scale = {int(z): max(float(np.median(self.knn_distance[sp == z])), self.floor)
                      for z in np.unique(sp)}
        self._table = np.zeros(max(self.scale) + 1)  # atomic number -> d_Z
        for z, v in self.scale.items():
            self._table[z] = v
        if train_novelty is None:
            if neighbors is None:
                raise ValueError("pass train_novelty or the leave-one-out neighbors")
            train_novelty = self.relative(self.knn_distance, neighbors, sp)
        self.train_novelty = np.asarray(train_novelty, dtype=np.float64)
        self._sorted = {int(z): np.sort(self.train_novelty[sp == z]) for z in np.unique(sp)}

    def relative(self, mean_dist: np.ndarray, indices: np.ndarray, species: np.ndarray
                 ) -> np.ndarray:
        """Novelty (n,) of atoms with mean k-NN distance ``mean_dist`` (n,), neighbours
        ``indices`` (n, k) and atomic numbers ``species`` (n,)."""
        if self.kind == "local":
            denom = self.knn_distance[indices].mean(axis=1)
        else:
            species = np.asarray(species, dtype=np.int64)
            known = (species >= 0) & (species < self._table.size)
            denom = np.where(known, self._table[np.where(known, species, 0)], 0.0)
        return (np.asarray(mean_dist, np.float64)
                / np.maximum(denom, self.floor)).astype(np.float64)

    def pvalue(self, novelty: np.ndarray, species: np.ndarray) -> np.ndarray:
        """(1 + #training atoms of the element with leave-one-out novelty >= the atom's) /
        (1 + #training atoms of the element); 0 for an element outside the training set."""
        species = np.asarray(species, dtype=np.int64)
        pval = np.ones_like(novelty)
        for z in np.unique(species):
            ref = self._sorted.get(int(z))
            m = species == z
            if ref is None:  # an element outside the training set: as novel as can be
                pval[m] = 0.0
                continue
            n_ge = ref.size - np.searchsorted(ref, novelty[m], side="left")
            pval[m] = (1.0 + n_ge) / (1.0 + ref.size)
        return pval
