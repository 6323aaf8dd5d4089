"""IS2RS structure metrics: RMSD of free atoms and OC20's ADwT.

Distances use the minimum-image convention along the periodic directions of the cell (x and y
of a slab), so an atom that crossed a periodic boundary during relaxation is not counted as
having moved a whole cell length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.geometry import find_mic

from ..exceptions import DataError

OC20_ADWT_THRESHOLDS: np.ndarray = np.arange(0.01, 0.5, 0.001)
"""OC20 ADwT distance thresholds (A): 0.01, 0.011, ..., 0.499 (490 values)."""

FREE_TAGS: tuple[int, ...] = (1, 2)
"""OC20 tags of the atoms that move: 1 surface, 2 adsorbate (0 = fixed subsurface)."""


def min_image_displacements(
    positions: np.ndarray, reference: np.ndarray, cell: np.ndarray, pbc: Sequence[bool]
) -> np.ndarray:
    """Per-atom displacement vectors (n, 3) in A from ``reference`` to ``positions``, each
    reduced to its shortest periodic image along the directions where ``pbc`` is True.

    Uses :func:`ase.geometry.find_mic`, which searches neighbouring images and is therefore
    exact for skewed cells (e.g. the 60-degree fcc111 surface cell) as well.
    """
    positions = np.asarray(positions, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if positions.shape != reference.shape or positions.ndim != 2 or positions.shape[1] != 3:
        raise DataError(
            f"positions {positions.shape} and reference {reference.shape} must both be (n, 3)"
        )
    d = positions - reference
    pbc = np.asarray(pbc, dtype=bool)
    if not pbc.any() or len(d) == 0:
        return d
    vectors, _ = find_mic(d, np.asarray(cell, dtype=float), pbc)
    return vectors


def free_mask(atoms: Atoms, free_tags: Sequence[int] = FREE_TAGS) -> np.ndarray:
    """Boolean mask of the atoms whose tag is in ``free_tags`` (OC20: surface + adsorbate)."""
    mask = np.isin(atoms.get_tags(), list(free_tags))
    if not mask.any():
        raise DataError(
            f"no atom of {atoms.get_chemical_formula()} has a tag in {tuple(free_tags)}; IS2RS "
            "structures need OC20 tags (0 fixed subsurface, 1 surface, 2 adsorbate)"
        )
    return mask


def _check_pair(pred: Atoms, ref: Atoms) -> None:
    if len(pred) != len(ref) or (pred.numbers != ref.numbers).any():
        raise DataError(
            f"predicted {pred.get_chemical_formula()} ({len(pred)} atoms) and reference "
            f"{ref.get_chemical_formula()} ({len(ref)} atoms) are not the same atoms in order"
        )


def free_atom_distances(
    pred: Atoms, ref: Atoms, free_tags: Sequence[int] = FREE_TAGS
) -> np.ndarray:
    """Minimum-image distances (A) between predicted and reference positions of the free
    atoms (tags in ``free_tags``); cell and pbc are taken from ``ref``."""
    _check_pair(pred, ref)
    mask = free_mask(ref, free_tags)
    d = min_image_displacements(
        pred.positions[mask], ref.positions[mask], ref.cell.array, ref.pbc
    )
    return np.linalg.norm(d, axis=1)


def rmsd(pred: Atoms, ref: Atoms, free_tags: Sequence[int] = FREE_TAGS) -> float:
    """Root-mean-square deviation (A) of the free atoms, minimum image in periodic
    directions: sqrt(mean_i |r_i,pred - r_i,ref|^2)."""
    d = free_atom_distances(pred, ref, free_tags)
    return float(np.sqrt(np.mean(d**2)))


def adwt(
    mean_distances: Sequence[float] | np.ndarray,
    thresholds: np.ndarray = OC20_ADWT_THRESHOLDS,
) -> float:
    """OC20 Average Distance within Threshold (ADwT), in [0, 1].

    ``mean_distances[j]`` is structure j's mean per-atom minimum-image distance (A) between
    the predicted and the reference relaxed positions of its free (non-fixed) atoms. For each
    threshold t, DwT(t) = fraction of structures with mean distance < t (strict); ADwT is the
    mean of DwT over the thresholds ``np.arange(0.01, 0.5, 0.001)``.

    This is the definition of the OC20 paper (Chanussot et al., "Open Catalyst 2020 (OC20)
    Dataset and Community Challenges", ACS Catal. 11, 6059 (2021), IS2RS metrics) as
    implemented in the reference evaluator, fairchem/ocpmodels ``modules/evaluator.py``
    ``average_distance_within_threshold`` (per-system ``np.mean(np.linalg.norm(min_diff(...)))``
    over atoms with ``fixed == 0``, success counted with ``<`` for each threshold,
    divided by n_structures * n_thresholds). Non-finite distances count as failures.
    """
    md = np.asarray(mean_distances, dtype=float).ravel()
    if md.size == 0:
        return float("nan")
    md = np.where(np.isfinite(md), md, np.inf)
    t = np.asarray(thresholds, dtype=float).ravel()
    return float((md[:, None] < t[None, :]).mean())
