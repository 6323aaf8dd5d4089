"""The real-DFT split's reader on a small file of the Xu-Kitchin layout made here (the real
data stay outside the repository): OC20 tags by layer, FixAtoms, energies, displaced
initial structures, a split that load_systems reads, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.calculators.calculator import Calculator, all_changes

from ltau_md.core.exceptions import DataError
from ltau_md.workflows.is2rs.data import load_systems
from ltau_md.workflows.is2rs.xu_kitchin import displaced_initial, read_xu_kitchin, write_split


def _entry(atoms):
    return {"symbols": atoms.get_chemical_symbols(), "cell": atoms.cell.tolist(),
            "pos": atoms.positions.tolist()}


@pytest.fixture
def data(tmp_path):
    clean = fcc111("Cu", size=(2, 2, 4), vacuum=6.0)
    o_fcc = clean.copy()
    add_adsorbate(o_fcc, "O", 1.2, "fcc")
    h_top = clean.copy()
    add_adsorbate(h_top, "H", 1.5, "ontop")
    f_hcp = clean.copy()
    add_adsorbate(f_hcp, "F", 1.4, "hcp")
    structures = {"Cu": {"O": {"fcc": {"0.25": _entry(o_fcc), "0.0": _entry(clean)}},
                         "H": {"ontop": {"0.25": _entry(h_top), "0.0": _entry(clean)}},
                         "F": {"hcp": {"0.25": _entry(f_hcp)}}}}
    energies = {"Cu": {"O": {"fcc": {"0.25": -4.5, "0.0": 0.0}},
                       "H": {"ontop": {"0.25": -2.25}}, "F": {"hcp": {"0.25": -3.0}}}}
    (tmp_path / "structures.json").write_text(json.dumps(structures))
    (tmp_path / "energies.json").write_text(json.dumps(energies))
    return tmp_path


def test_tags_constraints_and_energies(data):
    systems = read_xu_kitchin(data, coverages=("0.0", "0.25"))
    assert [a.info["sid"] for a in systems] == ["Cu-F-hcp-0.25", "Cu-clean", "Cu-H-ontop-0.25",
                                                "Cu-O-fcc-0.25"]  # one clean slab per metal
    for a in systems:
        tags = a.get_tags()
        z = a.positions[:, 2]
        metal = tags < 2
        # the two lowest of the four metal layers are fixed, by height
        assert (tags[metal] == 0).sum() == (tags[metal] == 1).sum() == 8
        assert z[tags == 0].max() < z[tags == 1].min()
        np.testing.assert_array_equal(a.constraints[0].index, np.flatnonzero(tags == 0))
        assert a.info["n_adsorbate"] == (0 if a.info["adsorbate"] is None else 1)
    assert systems[2].info["dft_adsorption_energy"] == -2.25
    assert systems[3].info["dft_adsorption_energy"] == -4.5
    assert np.isnan(systems[1].info["dft_adsorption_energy"])  # the clean slab
    assert systems[0].info["dft_adsorption_energy"] == -3.0
    assert [a.info["sid"] for a in read_xu_kitchin(data, adsorbates=("O",))] == [
        "Cu-O-fcc-0.25"]


def test_displaced_initial_moves_the_adsorbate_only(data):
    a = read_xu_kitchin(data)[2]
    b = displaced_initial(a, np.random.default_rng(0))
    d = b.positions - a.positions
    ads = a.get_tags() == 2
    assert np.abs(d[~ads]).max() == 0
    lateral, lift = np.linalg.norm(d[ads][0, :2]), d[ads][0, 2]
    assert 0.5 <= lateral <= 1.0 and 0.2 <= lift <= 0.6


def test_the_split_is_an_is2rs_benchmark_folder(data, tmp_path):
    out = tmp_path / "split"
    assert write_split(data, out, seed=3) == 3
    systems = load_systems(out)
    assert [s.split for s in systems] == ["val_dft"] * 3
    # fluorine's name survives extxyz, which reads a bare F as False
    assert [s.info["adsorbate"] for s in systems] == ["F", "H", "O"]
    assert systems[0].relaxed.info["adsorbate"] == "F"
    ref = read_xu_kitchin(data)
    for s, r in zip(systems, ref, strict=True):
        np.testing.assert_allclose(s.relaxed.positions, r.positions, atol=1e-6)
        assert s.relaxed.info["dft_adsorption_energy"] == r.info["dft_adsorption_energy"]
        assert np.abs(s.initial.positions - s.relaxed.positions).max() > 0.2
    with pytest.raises(FileExistsError):
        write_split(data, out)


def test_bad_input_is_named(data, tmp_path):
    with pytest.raises(DataError, match="structures.json does not exist"):
        read_xu_kitchin(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "structures.json").write_text(json.dumps({"Cu": {"O": {"fcc": {
        "0.25": {"symbols": ["Cu"]}}}}}))
    (tmp_path / "bad" / "energies.json").write_text("{}")
    with pytest.raises(DataError, match="not the Xu-Kitchin layout"):
        read_xu_kitchin(tmp_path / "bad")


def test_a_universal_reference_missing_its_package_is_one_line(monkeypatch):
    import sys

    from ltau_md.workflows.is2rs import universal
    from ltau_md.workflows.is2rs.reference import load_reference

    monkeypatch.setitem(sys.modules, "sevenn.calculator", None)  # as if not installed
    with pytest.raises(DataError, match=r"needs the .sevenn. package.*\[sevennet\]"):
        universal.sevennet0()
    with pytest.raises(DataError, match="'sevenn'"):
        load_reference("ltau_md.workflows.is2rs.universal:sevennet0")
    monkeypatch.setitem(sys.modules, "chgnet.model.dynamics", None)
    with pytest.raises(DataError, match=r"needs the 'chgnet' package.*\[universal\]"):
        universal.chgnet()


class _Float32Torch(Calculator):
    """A torch calculator like the universal potentials: float32 weights, input tensors in
    torch's default dtype. E = sum_i w . r_i (eV), F_i = -w (eV/A)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import torch

        super().calculate(atoms, properties, system_changes)
        w = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float32)
        x = torch.tensor(self.atoms.positions.tolist())  # torch's default dtype
        self.results = {"energy": float((x @ w).sum()),
                        "forces": -np.tile(w.double().numpy(), (len(self.atoms), 1))}


def test_a_universal_reference_runs_in_float32_beside_a_float64_nequip_process():
    import torch
    from ase import Atoms

    from ltau_md.workflows.is2rs.universal import Float32Guard

    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.0, 2.0, 3.0]])
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # as nequip leaves it
    try:
        atoms.calc = _Float32Torch()
        with pytest.raises(RuntimeError, match="dtype"):
            atoms.get_potential_energy()
        atoms.calc = Float32Guard(_Float32Torch())
        assert atoms.get_potential_energy() == pytest.approx(0.1 * 1 - 0.2 * 2 + 0.3 * 3,
                                                             rel=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), [[-0.1, 0.2, -0.3]] * 2, rtol=1e-6)
        assert torch.get_default_dtype() == torch.float64  # restored
    finally:
        torch.set_default_dtype(old)
