"""Novelty references: how far a query atom lies from the training atoms, relative to the
in-domain scale, and how unusual that is among the training atoms' own leave-one-out values.

A query atom with mean distance d to its k nearest training atoms has novelty d / d_ref:
``"element"`` divides by the median leave-one-out k-NN distance of the training atoms of its
element, ``"local"`` by the mean leave-one-out distance of its k neighbours themselves. Both are
about 1 for typical in-domain atoms.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NOVELTY_KINDS", "NoveltyReference"]

NOVELTY_KINDS = ("element", "local")


class NoveltyReference:
    """The fitted in-domain reference of novelty.

    Parameters
    ----------
    kind : {"element", "local"}
        How distances are made scale-free (module docstring).
    knn_distance : (N,) array
        Each training atom's mean distance to its k nearest other training atoms (descriptor
        units).
    species : (N,) int array
        Atomic numbers of the training atoms.
    train_novelty : (N,) array, optional
        The training atoms' leave-one-out novelty; computed from ``neighbors`` if not given.
    neighbors : (N, k) int array, optional
        The training atoms' leave-one-out neighbours (needed without ``train_novelty``).

    Attributes
    ----------
    scale : dict[int, float]
        {Z: median leave-one-out distance of the element's training atoms}.
    """

    def __init__(self, kind: str, knn_distance: np.ndarray, species: np.ndarray,
                 train_novelty: np.ndarray | None = None,
                 neighbors: np.ndarray | None = None):
        self.kind = kind
        self.knn_distance = np.asarray(knn_distance, dtype=np.float32)
        self.species = np.asarray(species)
        sp = self.species
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
