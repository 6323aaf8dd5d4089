"""OC20 adsorbates from a fairchem-data-oc style pickle / wheel: orientation, split, errors,
and their use by the generator and the CLI (a hand-made pickle of the same layout)."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest
from ase import Atoms
from scipy.spatial.distance import pdist

from ltau_md.cli import main
from ltau_md.core.exceptions import DataError
from ltau_md.workflows.is2rs.adsorbates import (
    PKL_IN_WHEEL,
    oc20_adsorbates,
    oc20_generator_settings,
    oc20_split,
    orient,
)
from ltau_md.workflows.is2rs.generate import GeneratorConfig, generate_system

CH2OH = Atoms("CHHOH", positions=[[0.1, 0.2, 0.3], [1.1, 0.2, 0.3], [-0.3, 1.1, 0.3],
                                   [-0.2, -0.5, 1.5], [0.4, -0.6, 2.3]])
C2H4 = Atoms("CCHHHH", positions=[[0, 0, 0], [1.33, 0, 0], [-0.6, 0.9, 0], [-0.6, -0.9, 0],
                                  [1.9, 0.9, 0], [1.9, -0.9, 0]])


def _table():
    return {0: (Atoms("O", positions=[[0.5, 0.5, 0.5]]), "*O", np.array([0]), "r0"),
            1: (CH2OH, "*CH2OH", np.array([0]), "r1"),
            2: (C2H4, "*CH2*CH2", np.array([0, 1]), "r2")}


@pytest.fixture
def pkl(tmp_path):
    path = tmp_path / "adsorbates.pkl"
    path.write_bytes(pickle.dumps(_table()))
    return path


def test_orient_puts_binding_atom_at_origin_and_fragment_up():
    sym, geom = orient(list(CH2OH.get_chemical_symbols()), CH2OH.positions, [0])
    g = np.array(geom)
    assert sym == "CHHOH"
    np.testing.assert_allclose(g[0], 0.0, atol=1e-12)
    centroid = g[1:].mean(axis=0)
    np.testing.assert_allclose(centroid[:2], 0.0, atol=1e-12)
    assert centroid[2] > 0
    np.testing.assert_allclose(pdist(g), pdist(CH2OH.positions), atol=1e-12)  # rigid
    # bidentate: the two binding atoms first, their midpoint at the origin
    sym, geom = orient(list(C2H4.get_chemical_symbols()), C2H4.positions, [0, 1])
    g = np.array(geom)
    assert sym == "CCHHHH"
    np.testing.assert_allclose((g[0] + g[1]) / 2, 0.0, atol=1e-12)
    with pytest.raises(DataError, match="out of range"):
        orient(["O"], np.zeros((1, 3)), [3])


def test_read_from_pkl_and_wheel_and_split(pkl, tmp_path):
    table = oc20_adsorbates(pkl)
    assert sorted(table) == ["*CH2*CH2", "*CH2OH", "*O"]
    wheel = tmp_path / "fairchem_data_oc-1.0.2-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(PKL_IN_WHEEL, pkl.read_bytes())
    assert oc20_adsorbates(wheel) == table
    assert oc20_split(table) == (("*CH2OH", "*O"), ("*CH2*CH2",))
    assert oc20_generator_settings(wheel) == {"extra_adsorbates": table,
                                              "id_adsorbates": ("*CH2OH", "*O"),
                                              "ood_adsorbates": ("*CH2*CH2",)}


def test_bad_sources_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        oc20_adsorbates(tmp_path / "missing.whl")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable"):
        oc20_adsorbates(junk)
    empty_wheel = tmp_path / "x.whl"
    with zipfile.ZipFile(empty_wheel, "w") as z:
        z.writestr("other.txt", "x")
    with pytest.raises(DataError, match="wheel has no"):
        oc20_adsorbates(empty_wheel)
    cu = tmp_path / "cu.pkl"
    cu.write_bytes(pickle.dumps({0: (Atoms("Cu"), "*Cu", [0], "")}))
    with pytest.raises(DataError, match=r"\['Cu'\]"):
        oc20_adsorbates(cu)
    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match="expected a non-empty dict"):
        oc20_adsorbates(wrong)


def test_generator_places_oc20_adsorbate_rigidly(pkl):
    table = oc20_adsorbates(pkl)
    cfg = GeneratorConfig(metals=("Cu",), ood_pairs=(), extra_adsorbates=table,
                          reject_dissociated=False,
                          id_adsorbates=("*CH2OH",),
                          ood_adsorbates=("*CH2*CH2",))
    initial, _, _ = generate_system(0, "val_id", 0, cfg)
    ads = initial[initial.get_tags() == 2]
    assert initial.info["adsorbate"] == "*CH2OH"
    assert ads.get_chemical_formula() == CH2OH.get_chemical_formula()
    np.testing.assert_allclose(pdist(ads.positions), pdist(np.array(table["*CH2OH"][1])),
                               atol=1e-9)
    with pytest.raises(DataError, match="unknown"):
        GeneratorConfig(id_adsorbates=("*CH2OH",))  # not in the table without the extras


def test_cli_generate_with_oc20_adsorbates(pkl, tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["is2rs-generate", "--out", str(out), "--n-train", "1", "--n-val", "1",
               "--splits", "train", "val_ood_ads", "--oc20-adsorbates", str(pkl),
               "--keep-dissociated", "--no-progress"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["id_adsorbates"] == ["*CH2OH", "*O"]
    assert manifest["splits"]["val_ood_ads"]["adsorbates"] == ["*CH2*CH2"]
    assert manifest["config"]["reject_dissociated"] is False
    assert main(["is2rs-generate", "--out", str(tmp_path / "b2"), "--oc20-adsorbates",
                 str(tmp_path / "nope.pkl")]) == 2
    assert "nope.pkl: no such file" in capsys.readouterr().err
