"""Input structures: ASE's index syntax wherever a structure file is read, each structure
checked up front with the problem named (non-finite position, over-long periodic cell,
overlapping atoms), and thermalization that keeps a single atom finite."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from ltau_md.core.exceptions import DataError
from ltau_md.core.structures import read_structures, thermalize
from ltau_md.core.validation import MAX_PERIODIC_LENGTH, check_structure


@pytest.fixture
def five(tmp_path):
    frames = []
    for i in range(5):
        a = molecule("H2O")
        a.positions += i  # frame i is shifted by i A: identifies the frame
        frames.append(a)
    ase.io.write(tmp_path / "five.xyz", frames)
    return tmp_path / "five.xyz"


@pytest.mark.parametrize("suffix, expected", [
    ("", [0, 1, 2, 3, 4]), ("@:2", [0, 1]), ("@-1", [4]), ("@::2", [0, 2, 4]), ("@3", [3]),
    ("@1:-1", [1, 2, 3]),
])
def test_ase_index_syntax_selects_the_frames_ase_would(five, suffix, expected):
    frames = read_structures(f"{five}{suffix}")
    shifts = [round(float(a.positions[0, 0] - molecule("H2O").positions[0, 0])) for a in frames]
    assert shifts == expected
    ref = ase.io.read(f"{five}{suffix}") if suffix else ase.io.read(five, ":")
    ref = ref if isinstance(ref, list) else [ref]
    assert [a.positions.tolist() for a in frames] == [a.positions.tolist() for a in ref]


def test_index_syntax_errors_name_the_problem(five, tmp_path):
    with pytest.raises(DataError, match=r"index 7 is out of range"):
        read_structures(f"{five}@7")
    with pytest.raises(DataError, match=r"selects no frames"):
        read_structures(f"{five}@10:")
    with pytest.raises(DataError, match=r"'abc' is not a frame index"):
        read_structures(f"{five}@abc")
    with pytest.raises(DataError, match=r"missing\.xyz does not exist"):
        read_structures(f"{tmp_path / 'missing.xyz'}@:2")
    # a file whose name holds "@" is read as the file it is
    ase.io.write(tmp_path / "a@b.xyz", molecule("H2O"))
    assert len(read_structures(tmp_path / "a@b.xyz")) == 1


def test_non_finite_position_is_refused_naming_the_atom():
    a = molecule("CH4")
    a.positions[3] = [np.nan, 0, 0]
    a.positions[4, 1] = np.inf
    with pytest.raises(DataError, match=r"s: atom 3 \(H\) has a non-finite position "
                       r"\(nan, 0\.0, 0\.0\) \(and 1 more\)"):
        check_structure(a, "s")


def test_over_long_or_degenerate_periodic_cell_is_refused():
    a = bulk("Cu", cubic=True)
    check_structure(a)
    big = a.copy()
    big.cell[2] = [0, 0, 1e6]
    with pytest.raises(DataError, match=r"cell vector c is 1e\+06 A long.*pbc False"):
        check_structure(big)
    big.pbc = [True, True, False]  # vacuum along a non-periodic direction is fine
    check_structure(big)
    edge = a.copy()
    edge.cell[0] = [MAX_PERIODIC_LENGTH, 0, 0]
    check_structure(edge)  # the limit itself is accepted
    flat = Atoms("Cu", pbc=True)
    with pytest.raises(DataError, match="periodic along a but the cell vector a is zero"):
        check_structure(flat)
    nan_cell = a.copy()
    nan_cell.cell[1, 1] = np.nan
    with pytest.raises(DataError, match="the cell is not finite"):
        check_structure(nan_cell)


def test_overlapping_atoms_are_refused():
    a = Atoms("H2", positions=[[0, 0, 0], [0.01, 0, 0]])
    with pytest.raises(DataError, match="atoms 0 and 1 are 0.01 A apart"):
        check_structure(a, "here")


@pytest.mark.parametrize("n", [1, 2, 8])
def test_thermalize_keeps_momenta_finite_and_removes_drift(n):
    a = bulk("Cu", cubic=True).repeat((2, 1, 1))[:n]
    thermalize(a, 300.0, np.random.default_rng(0))
    p = a.get_momenta()
    assert np.isfinite(p).all() and np.abs(p).sum() > 0
    if n > 1:
        np.testing.assert_allclose(p.sum(axis=0), 0.0, atol=1e-10)


def test_thermalize_without_stationary_keeps_the_drawn_momenta():
    """stationary=False: the momenta of ASE's own Maxwell-Boltzmann draw with the same seed,
    drift included."""
    from ase.md.velocitydistribution import thermalize_momenta

    a, ref = bulk("Cu", cubic=True).repeat((2, 1, 1)), bulk("Cu", cubic=True).repeat((2, 1, 1))
    thermalize(a, 300.0, np.random.default_rng(4), stationary=False)
    thermalize_momenta(ref, 300.0, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a.get_momenta(), ref.get_momenta())
    assert np.abs(a.get_momenta().sum(axis=0)).max() > 1e-6  # the drift is still there
