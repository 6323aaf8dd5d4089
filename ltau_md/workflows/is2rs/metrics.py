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

from ltau_md.core.exceptions import DataError

__all__ = [
    "ADSORBATE_TAG",
    "BASIN_OUTCOMES",
    "FREE_TAGS",
    "OC20_ADWT_THRESHOLDS",
    "EWT_THRESHOLD",
    "OC20_FBT_THRESHOLDS",
    "OC20_TAGS",
    "adwt",
    "ewt",
    "afbt",
    "classify_basin",
    "fbt",
    "free_atom_distances",
    "free_mask",
    "min_image_displacements",
    "rmsd",
    "substrate_translations",
    "symmetric_free_atom_distances",
]

OC20_ADWT_THRESHOLDS: np.ndarray = np.arange(0.01, 0.5, 0.001)
"""OC20 ADwT distance thresholds (A): 0.01, 0.011, ..., 0.499 (490 values)."""

OC20_TAGS: tuple[int, ...] = (0, 1, 2)
"""Every OC20 tag: 0 fixed subsurface, 1 surface, 2 adsorbate (the selection "all atoms")."""
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


def free_mask(atoms: Atoms, free_tags: Sequence[int] | None = None) -> np.ndarray:
    """Boolean mask of the atoms that move: with ``free_tags`` None, those not held by a
    :class:`~ase.constraints.FixAtoms` (the fixed mask, as fairchem's evaluation takes them),
    or without one the atoms whose tag is in :data:`FREE_TAGS` (OC20: surface + adsorbate);
    else the atoms whose tag is in ``free_tags``."""
    from ase.constraints import FixAtoms

    if free_tags is None and any(isinstance(c, FixAtoms) for c in atoms.constraints):
        from ltau_md.core.structures import free_atoms

        mask = free_atoms(atoms)
        if not mask.any():
            raise DataError(f"every atom of {atoms.get_chemical_formula()} is fixed (FixAtoms)")
        return mask
    tags = FREE_TAGS if free_tags is None else tuple(free_tags)
    mask = np.isin(atoms.get_tags(), list(tags))
    if not mask.any():
        raise DataError(
            f"no atom of {atoms.get_chemical_formula()} has a tag in {tags}; IS2RS "
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
    pred: Atoms, ref: Atoms, free_tags: Sequence[int] | None = None
) -> np.ndarray:
    """Minimum-image distances (A) between predicted and reference positions of the free
    atoms of ``ref`` (:func:`free_mask`); cell and pbc are taken from ``ref``."""
    _check_pair(pred, ref)
    mask = free_mask(ref, free_tags)
    d = min_image_displacements(
        pred.positions[mask], ref.positions[mask], ref.cell.array, ref.pbc
    )
    return np.linalg.norm(d, axis=1)


def rmsd(pred: Atoms, ref: Atoms, free_tags: Sequence[int] | None = None) -> float:
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


ADSORBATE_TAG = 2
"""OC20 tag of adsorbate atoms."""


def substrate_translations(ref: Atoms, tol: float = 0.2) -> np.ndarray:
    """In-plane translations (k, 3) in A that map the fixed (tag 0) substrate onto itself.

    Candidates are the vectors from one fixed atom to every fixed atom of the same element in
    its layer (|dz| < ``tol``); a candidate is kept when every fixed atom, shifted by it, lands
    within ``tol`` (minimum image) on a fixed atom of the same element. The zero translation
    is always first. A pure-metal 2x2 slab gives its 4 surface-cell translations, a random
    alloy usually only zero, so alloy sites are never called equivalent by mistake. Without
    tag-0 atoms only zero is returned.
    """
    tags = ref.get_tags()
    fixed = np.flatnonzero(tags == 0)
    zero = np.zeros((1, 3))
    if fixed.size == 0 or not np.asarray(ref.pbc)[:2].any():
        return zero
    pos = ref.positions[fixed]
    nums = ref.numbers[fixed]
    cell, pbc = ref.cell.array, ref.pbc
    cands = pos[nums == nums[0]] - pos[0]
    cands = cands[np.abs(cands[:, 2]) < tol]
    cands[:, 2] = 0.0
    keep = [np.zeros(3)]
    same = nums[:, None] == nums[None, :]
    for t in cands:
        if np.linalg.norm(t) < tol:
            continue
        diff = (pos[:, None, :] + t - pos[None, :, :]).reshape(-1, 3)
        _, dist = find_mic(diff, cell, pbc)
        dist = np.where(same, dist.reshape(len(pos), len(pos)), np.inf)
        if (dist.min(axis=1) < tol).all():
            keep.append(t)
    return np.array(keep)


def _matched_distances(pred: np.ndarray, ref: np.ndarray, numbers: np.ndarray,
                       cell: np.ndarray, pbc) -> np.ndarray:
    """Minimum-image distances after pairing each ``ref`` atom with a ``pred`` atom of the same
    element (optimal assignment): identical atoms may swap places."""
    from scipy.optimize import linear_sum_assignment

    out = np.empty(len(ref))
    for z in np.unique(numbers):
        idx = np.flatnonzero(numbers == z)
        if idx.size == 1:
            d = min_image_displacements(pred[idx], ref[idx], cell, pbc)
            out[idx] = np.linalg.norm(d, axis=1)
            continue
        diff = (pred[idx][None, :, :] - ref[idx][:, None, :]).reshape(-1, 3)
        _, dist = find_mic(diff, cell, pbc)
        dist = dist.reshape(idx.size, idx.size)
        rows, cols = linear_sum_assignment(dist**2)
        out[idx[rows]] = dist[rows, cols]
    return out


def symmetric_free_atom_distances(
    pred: Atoms, ref: Atoms, tol: float = 0.2, free_tags: Sequence[int] | None = None
) -> np.ndarray:
    """Free-atom distances (A, in ``ref``'s order) modulo the symmetry of the substrate.

    For each in-plane translation that maps the fixed substrate onto itself
    (:func:`substrate_translations`), the whole predicted structure is shifted by it and every
    free atom (:func:`free_mask`) is paired with a predicted free atom of the same element
    and tag (optimal
    assignment, minimum image); the translation with the smallest sum of squared distances
    wins. Equals :func:`free_atom_distances` up to same-element swaps on a substrate without
    symmetry, and is 0 for a copy translated by a surface-cell vector of a pure-metal slab.
    Rotations and mirror images are not tried.
    """
    _check_pair(pred, ref)
    if not (np.isfinite(pred.positions).all() and np.isfinite(ref.positions).all()):
        return np.full(int(free_mask(ref, free_tags).sum()), np.nan)
    mask = free_mask(ref, free_tags)
    tags = ref.get_tags()
    cell, pbc = ref.cell.array, ref.pbc
    best: np.ndarray | None = None
    for t in substrate_translations(ref, tol):
        shifted = pred.positions + t
        d = np.empty(len(ref))
        for tag in np.unique(tags[mask]):
            sel = np.flatnonzero((tags == tag) & mask)
            if sel.size:
                d[sel] = _matched_distances(shifted[sel], ref.positions[sel], ref.numbers[sel],
                                            cell, pbc)
        d = d[mask]
        if best is None or np.sum(d**2) < np.sum(best**2):
            best = d
    assert best is not None
    return best


BASIN_OUTCOMES: tuple[str, ...] = ("same", "lower", "higher", "degenerate")
"""Where the reference re-relaxation of a model end point lands, relative to the reference
minimum: the same minimum (same structure modulo substrate symmetry), a lower or a higher
energy minimum, or a different structure within the energy tolerance."""


def classify_basin(
    rerelaxed: Atoms, e_rerelaxed: float, ref: Atoms, e_ref: float,
    *, dist_tol: float = 0.25, energy_tol: float = 0.02,
) -> str:
    """Basin outcome (one of :data:`BASIN_OUTCOMES`) of a structure re-relaxed with the
    reference calculator (energy ``e_rerelaxed``, eV) against the reference minimum ``ref``
    (energy ``e_ref``, eV): "same" when every free atom is within ``dist_tol`` A of the
    reference (modulo substrate symmetry, :func:`symmetric_free_atom_distances`), else
    "lower" / "higher" when the energy differs by more than ``energy_tol`` eV, else
    "degenerate"."""
    d = symmetric_free_atom_distances(rerelaxed, ref)
    if np.isfinite(d).all() and d.max() < dist_tol:
        return "same"
    if not (np.isfinite(e_rerelaxed) and np.isfinite(e_ref)):
        return "higher"
    if e_rerelaxed < e_ref - energy_tol:
        return "lower"
    if e_rerelaxed > e_ref + energy_tol:
        return "higher"
    return "degenerate"


EWT_THRESHOLD = 0.02
"""OC20's IS2RE energy-within-threshold: |E_model - E_ref| below 0.02 eV."""


def ewt(errors: Sequence[float] | np.ndarray, threshold: float = EWT_THRESHOLD) -> float:
    """OC20's EwT: the share of structures whose energy error (eV) is below ``threshold`` in
    magnitude; a missing (NaN) error counts as outside."""
    e = np.asarray(errors, dtype=float)
    if e.size == 0:
        return float("nan")
    return float(np.mean(np.abs(np.where(np.isfinite(e), e, np.inf)) < threshold))


OC20_FBT_THRESHOLDS: np.ndarray = np.arange(0.01, 0.4, 0.001)
"""Force thresholds (eV/A) of an AFbT-style average: 0.01, 0.011, ..., 0.399."""


def fbt(ref_fmax: Sequence[float] | np.ndarray, threshold: float = 0.05) -> float:
    """Forces below threshold (OC20 FbT): share of model end points whose reference max
    force over free atoms (eV/A) is below ``threshold``; non-finite values fail."""
    f = np.asarray(ref_fmax, dtype=float).ravel()
    if f.size == 0:
        return float("nan")
    return float((np.where(np.isfinite(f), f, np.inf) < threshold).mean())


def afbt(ref_fmax: Sequence[float] | np.ndarray,
         thresholds: np.ndarray = OC20_FBT_THRESHOLDS) -> float:
    """FbT averaged over ``thresholds`` (eV/A), in [0, 1] (as ADwT averages DwT)."""
    f = np.asarray(ref_fmax, dtype=float).ravel()
    if f.size == 0:
        return float("nan")
    f = np.where(np.isfinite(f), f, np.inf)
    return float((f[:, None] < np.asarray(thresholds, dtype=float)[None, :]).mean())
