"""Helpers of :mod:`ltau_md.testing` that benchmarks build on."""

from __future__ import annotations

import numpy as np

from ltau_md.testing import clean_slab, surface_alloy_slab


def _sorted(a):
    key = np.lexsort(np.round(a.positions, 6).T[::-1])
    return a.positions[key], a.numbers[key], a.get_tags()[key]


def test_surface_alloy_tiles_so_a_bigger_cell_is_the_same_surface():
    """The 8x8 cell is the 2x2 cell repeated 4x4 times (atoms, elements, tags): a bigger
    slab of the same surface, one Au in four top-layer atoms, only the top layer free."""
    small, big = surface_alloy_slab((2, 2, 3)), surface_alloy_slab((8, 8, 3))
    tiled = small.repeat((4, 4, 1))
    np.testing.assert_allclose(big.cell, tiled.cell, atol=1e-9)
    for got, want in zip(_sorted(big), _sorted(tiled), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-9)
    top = big.get_tags() == 1
    assert (big.numbers[top] == 79).sum() * 4 == top.sum() and (big.numbers[~top] == 29).all()
    fixed = big.constraints[0].get_indices()
    assert set(fixed) == set(np.flatnonzero(~top))
    # the clean slab is the same surface, every atom Cu, the same atoms free
    clean = clean_slab((8, 8, 3))
    np.testing.assert_allclose(clean.positions, big.positions, atol=1e-12)
    assert (clean.numbers == 29).all() and (clean.get_tags() == big.get_tags()).all()
    assert set(clean.constraints[0].get_indices()) == set(fixed)
