"""IS2RS metrics against hand-computed cases: minimum-image RMSD and OC20 ADwT."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from ltau_md.core.exceptions import DataError
from ltau_md.workflows.is2rs.metrics import (
    OC20_ADWT_THRESHOLDS,
    adwt,
    free_atom_distances,
    min_image_displacements,
    rmsd,
)


def _slab(positions, tags, cell=(10.0, 10.0, 20.0)) -> Atoms:
    return Atoms(
        "Cu" * len(positions), positions=positions, tags=tags, cell=cell, pbc=(True, True, False)
    )


def test_periodic_wrap_in_x_and_not_in_z():
    ref = _slab([[0.1, 5.0, 5.0], [5.0, 9.95, 5.0], [5.0, 5.0, 1.0]], [1, 2, 2])
    pred = ref.copy()
    pred.positions = [[9.9, 5.0, 5.0], [5.0, 0.05, 5.0], [5.0, 5.0, 19.0]]
    d = free_atom_distances(pred, ref)
    # x: 9.9 -> 0.1 across the boundary is 0.2; y: 0.05 vs 9.95 is 0.1; z is not periodic: 18
    np.testing.assert_allclose(d, [0.2, 0.1, 18.0], atol=1e-12)
    assert rmsd(pred, ref) == pytest.approx(np.sqrt((0.04 + 0.01 + 324.0) / 3), abs=1e-12)


def test_skewed_hexagonal_cell_minimum_image():
    # fcc111-like 60-degree cell: a1 - a2 + (0.1, 0, 0) is an image of (0.1, 0, 0)
    a = 5.0
    cell = np.array([[a, 0, 0], [a / 2, a * np.sqrt(3) / 2, 0], [0, 0, 20.0]])
    ref = _slab([[1.0, 1.0, 5.0]], [2], cell=cell)
    pred = ref.copy()
    pred.positions = ref.positions + cell[0] - cell[1] + np.array([0.1, 0.0, 0.0])
    np.testing.assert_allclose(free_atom_distances(pred, ref), [0.1], atol=1e-12)
    v = min_image_displacements(pred.positions, ref.positions, cell, (True, True, False))
    np.testing.assert_allclose(v, [[0.1, 0.0, 0.0]], atol=1e-12)


def test_rmsd_counts_only_free_atoms():
    ref = _slab([[1.0, 1.0, 1.0], [2.0, 2.0, 3.0], [3.0, 3.0, 5.0]], [0, 1, 2])
    pred = ref.copy()
    pred.positions = ref.positions + [[3.0, 0, 0], [0.3, 0, 0], [0, 0.4, 0]]
    # fixed atom (tag 0) ignored: sqrt((0.3^2 + 0.4^2) / 2)
    assert rmsd(pred, ref) == pytest.approx(np.sqrt(0.125), abs=1e-12)


def test_free_atoms_come_from_the_fixed_mask_then_the_tags():
    """As fairchem's evaluation: the atoms FixAtoms holds are fixed whatever their tags; tags
    decide only without FixAtoms, or when given explicitly."""
    from ase.constraints import FixAtoms

    ref = _slab([[1.0, 1.0, 1.0], [2.0, 2.0, 3.0], [3.0, 3.0, 5.0]], [0, 1, 2])
    ref.set_constraint(FixAtoms(indices=[0, 1]))  # the tag-1 atom is fixed too
    pred = ref.copy()
    pred.positions = ref.positions + [[3.0, 0, 0], [0.3, 0, 0], [0, 0.4, 0]]
    assert rmsd(pred, ref) == pytest.approx(0.4, abs=1e-12)  # the adsorbate only
    assert rmsd(pred, ref, free_tags=(1, 2)) == pytest.approx(np.sqrt(0.125), abs=1e-12)
    ref.set_constraint(FixAtoms(indices=[0, 1, 2]))
    with pytest.raises(DataError, match="every atom .* is fixed"):
        rmsd(pred, ref)


def test_rmsd_rejects_mismatched_structures_and_missing_tags():
    ref = _slab([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], [1, 2])
    with pytest.raises(DataError, match="not the same atoms"):
        rmsd(ref[:1], ref)
    with pytest.raises(DataError, match="OC20 tags"):
        rmsd(ref, _slab([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], [0, 0]))


def test_adwt_hand_computed():
    assert len(OC20_ADWT_THRESHOLDS) == 490
    assert OC20_ADWT_THRESHOLDS[0] == pytest.approx(0.01)
    assert OC20_ADWT_THRESHOLDS[-1] == pytest.approx(0.499)
    # below every threshold: 490; 0.1005 < t for t = 0.101..0.499: 399; 0.3005: 199; 1.0: 0
    assert adwt([0.005, 0.1005, 0.3005, 1.0]) == pytest.approx(1088 / 1960, abs=1e-12)
    # a failed (NaN) structure counts as outside every threshold
    assert adwt([0.005, np.nan]) == pytest.approx(0.5)
    assert np.isnan(adwt([]))
