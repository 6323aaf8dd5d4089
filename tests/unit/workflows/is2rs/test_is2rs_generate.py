"""IS2RS benchmark generator: determinism, OC20 tags/constraints, extxyz round trip, EMT
reference relaxations, split definitions, and the input contract of load_systems."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.geometry import get_distances
from ase.io import write

from ltau_md.core.exceptions import DataError
from ltau_md.workflows.is2rs.data import fixed_mask, load_systems
from ltau_md.workflows.is2rs.generate import (
    ID_ADSORBATES,
    OOD_ADSORBATES,
    OOD_PAIRS,
    GeneratorConfig,
    adsorbate_fragments,
    generate_benchmark,
    generate_system,
)

SPLITS = ("train", "val_id", "val_ood_ads", "val_ood_cat", "val_ood_both")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("is2rs") / "bench"
    manifest = generate_benchmark(out, seed=11, n_train=2, n_val=1, progress=False)
    return out, manifest


def test_generate_system_is_deterministic():
    a_ini, a_rel, a_traj = generate_system(5, "val_id", 3)
    b_ini, b_rel, b_traj = generate_system(5, "val_id", 3)
    np.testing.assert_array_equal(a_ini.positions, b_ini.positions)
    np.testing.assert_array_equal(a_rel.positions, b_rel.positions)
    assert a_ini.info == b_ini.info and len(a_traj) == len(b_traj)
    c_ini, _, _ = generate_system(6, "val_id", 3)
    assert c_ini.get_chemical_formula() != a_ini.get_chemical_formula() or not np.allclose(
        c_ini.positions, a_ini.positions
    )


def test_benchmark_files_identical_for_same_seed(bench, tmp_path):
    out, manifest = bench
    again = generate_benchmark(tmp_path / "again", seed=11, n_train=2, n_val=1, progress=False)
    assert again["files"] == manifest["files"]  # sha256 of every extxyz file
    assert json.loads((out / "manifest.json").read_text())["files"] == manifest["files"]
    with pytest.raises(FileExistsError):
        generate_benchmark(out, seed=11, n_train=1, n_val=1, progress=False)


def test_tags_constraints_and_reference_relaxation(bench):
    out, _ = bench
    systems = load_systems(out)
    assert sorted({s.split for s in systems}) == sorted(SPLITS)
    assert len(systems) == 2 + 4
    for s in systems:
        for atoms in (s.initial, s.relaxed):
            tags = atoms.get_tags()
            assert set(np.unique(tags)) == {0, 1, 2}
            # extxyz round trip keeps FixAtoms, exactly on the tag-0 (subsurface) atoms
            assert any(isinstance(c, FixAtoms) for c in atoms.constraints)
            np.testing.assert_array_equal(fixed_mask(atoms), tags == 0)
        # fixed atoms did not move during the reference relaxation
        fixed = s.initial.get_tags() == 0
        np.testing.assert_allclose(s.initial.positions[fixed], s.relaxed.positions[fixed],
                                   atol=1e-6)
        # the relaxed target is an EMT minimum: free-atom forces below fmax (0.05 eV/A)
        rel = s.relaxed.copy()
        rel.calc = EMT()
        f = rel.get_forces()
        assert np.linalg.norm(f[~fixed], axis=1).max() < 0.05 + 1e-6
        assert s.info["sid"] == s.sid


def test_split_definitions(bench):
    out, manifest = bench
    systems = load_systems(out)
    ood_pairs = {"-".join(sorted(p)) for p in OOD_PAIRS}
    for s in systems:
        ads = s.info["adsorbate"]
        elements = s.info["elements"]
        if s.split in ("train", "val_id", "val_ood_cat"):
            assert ads in ID_ADSORBATES
        else:
            assert ads in OOD_ADSORBATES
        if s.split in ("val_ood_cat", "val_ood_both"):
            assert elements in ood_pairs
            assert s.info["facet"] == "fcc110"  # the held-out facet
        else:
            assert elements not in ood_pairs
            assert s.info["facet"] in ("fcc111", "fcc100")
    assert manifest["ood_facets"] == ["fcc110"]
    frames = manifest["splits"]["train"]["n_frames"]
    assert 2 <= frames <= 2 * 6
    assert set(ID_ADSORBATES).isdisjoint(OOD_ADSORBATES)


def test_adsorbate_fragments_hand_case():
    from ase import Atoms

    def co(d):  # CO above a Cu atom, C-O distance d (A); covalent radii C 0.76, O 0.66
        a = Atoms("CuCO", positions=[[0, 0, 0], [0, 0, 2.0], [0, 0, 2.0 + d]], tags=[1, 2, 2],
                  cell=[10, 10, 20], pbc=[True, True, False])
        return a
    assert adsorbate_fragments(co(1.15)) == 1
    assert adsorbate_fragments(co(1.25 * 1.42 - 0.01)) == 1
    assert adsorbate_fragments(co(1.25 * 1.42 + 0.01)) == 2
    assert adsorbate_fragments(co(1.8), bond_scale=1.3) == 1
    assert adsorbate_fragments(co(1.15)[:1]) == 0  # no adsorbate


def test_desorbed_means_no_adsorbate_atom_near_the_slab():
    """OC20's desorption: the adsorbate is gone when none of its atoms is near a slab atom;
    an upright CH3 whose H atoms stand more than the distance above the surface is bound."""
    from ase import Atoms
    from ase.build import fcc111

    from ltau_md.workflows.is2rs._geometry import desorbed

    cfg = GeneratorConfig()
    slab = fcc111("Pt", size=(2, 2, 3), vacuum=8.0)
    slab.set_tags((slab.get_tags() == 1).astype(int))  # OC20's: 1 surface, 0 below
    top = slab.positions[slab.get_tags() == 1][0]

    def ch3(lift):  # C on top of a Pt atom, the H atoms 1.09 A from C, pointing up
        h = [[1.03 * np.cos(a), 1.03 * np.sin(a), 0.36] for a in (0, 2.09, 4.19)]
        pos = np.array([[0, 0, 0], *h]) + top + [0, 0, 2.05 + lift]
        return slab + Atoms("CH3", positions=pos, tags=[2] * 4)

    bound = ch3(0.6)  # the H atoms > 3 A from every Pt atom, the C 2.65 A from one
    _, d = get_distances(bound.positions[-3:], bound.positions[:-4], cell=bound.cell, pbc=True)
    assert d.min() > cfg.desorption_distance
    assert not desorbed(bound, cfg)
    assert desorbed(ch3(1.5), cfg)  # the C 3.55 A away: nothing within 3 A
    assert not desorbed(slab, cfg)  # no adsorbate


def test_generated_adsorbates_stay_in_one_piece(bench):
    out, _ = bench
    for s in load_systems(out):
        assert adsorbate_fragments(s.relaxed) == adsorbate_fragments(s.initial) == 1
    # without the rejection EMT lets this system's CH2 fall apart (measured): the filter works
    cfg = GeneratorConfig(reject_dissociated=False, id_adsorbates=("CH2", "O"))
    kept = GeneratorConfig(id_adsorbates=("CH2", "O"))
    broken = [i for i in range(6)
              if adsorbate_fragments(generate_system(3, "val_id", i, cfg)[1]) > 1]
    assert broken
    for i in broken[:2]:
        ini, rel, _ = generate_system(3, "val_id", i, kept)
        assert ini.info["attempt"] > 0 and adsorbate_fragments(rel) == 1


def test_ood_facets_must_be_facets_and_leave_one_for_training():
    with pytest.raises(DataError, match="ood facet 'fcc211'"):
        GeneratorConfig(ood_facets=("fcc211",))
    with pytest.raises(DataError, match="every facet"):
        GeneratorConfig(facets=("fcc110",), ood_facets=("fcc110",))
    assert GeneratorConfig(ood_facets=()).id_facets == ("fcc111", "fcc100", "fcc110")


def test_load_single_file_with_pos_relaxed_and_restore_fixatoms(bench, tmp_path):
    out, _ = bench
    systems = load_systems(out, splits=["val_id"])
    atoms = systems[0].initial.copy()
    atoms.set_constraint()  # no FixAtoms: must be restored from tags
    atoms.arrays["pos_relaxed"] = systems[0].relaxed.positions.copy()
    path = tmp_path / "oc20.extxyz"
    write(path, [atoms])
    [loaded] = load_systems(path)
    np.testing.assert_array_equal(fixed_mask(loaded.initial), atoms.get_tags() == 0)
    np.testing.assert_allclose(loaded.relaxed.positions, systems[0].relaxed.positions, atol=1e-7)
    assert loaded.sid == systems[0].sid


def test_load_errors(bench, tmp_path):
    out, _ = bench
    s = load_systems(out, splits=["val_id"])[0]
    no_tags = s.initial.copy()
    no_tags.set_tags(0)
    no_tags.arrays["pos_relaxed"] = s.relaxed.positions
    write(tmp_path / "bad.extxyz", [no_tags])
    with pytest.raises(DataError, match="tag 2"):
        load_systems(tmp_path / "bad.extxyz")
    write(tmp_path / "nopos.extxyz", [s.initial])
    with pytest.raises(DataError, match="pos_relaxed"):
        load_systems(tmp_path / "nopos.extxyz")
    with pytest.raises(DataError, match="does not exist"):
        load_systems(tmp_path / "missing")
    with pytest.raises(DataError, match="not in"):
        load_systems(out, splits=["test_ood"])


_SMALL = dict(metals=("Cu", "Pt"), facets=("fcc111", "fcc100"), ood_facets=(),
              id_adsorbates=("H", "O"), ood_adsorbates=("N",), ood_pairs=(),
              frames_per_system=2, val_frames_per_system=1)


def test_the_reference_is_the_given_calculator(tmp_path):
    """A reference other than EMT sets the lattice constants, the relaxed targets (its own
    minima) and the training frames' labels."""
    from ltau_md.testing import StretchedEMT
    from ltau_md.workflows.is2rs.generate import lattice_constant

    ref = "ltau_md.testing:StretchedEMT"
    assert lattice_constant("Cu", ref) == pytest.approx(lattice_constant("Cu") / 1.03,
                                                        rel=1e-5)
    cfg = GeneratorConfig(reference=ref, ref_optimizer="FIRE", ref_steps=1000, **_SMALL)
    manifest = generate_benchmark(tmp_path / "b", seed=2, n_train=2, n_val=0, cfg=cfg,
                                  splits=("train",), progress=False, cache=False)
    assert manifest["reference"] == f"{ref} + ase.optimize.FIRE"
    sysm = load_systems(tmp_path / "b")
    for s in sysm:
        free = s.relaxed.get_tags() != 0
        for calc, below in ((StretchedEMT(), True), (EMT(), False)):
            a = s.relaxed.copy()
            a.calc = calc
            fmax = np.linalg.norm(a.get_forces()[free], axis=1).max()
            assert (fmax < 0.05 + 1e-6) == below
    from ase.io import read

    for fr in read(tmp_path / "b" / "train" / "frames.extxyz", ":"):
        a = fr.copy()
        a.calc = StretchedEMT()
        assert fr.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(fr.calc.results["forces"], a.get_forces(apply_constraint=False),
                                   atol=1e-5)
    with pytest.raises(DataError, match="import path"):
        GeneratorConfig(reference="EMT")
    # the fcc metals beyond EMT's (the real-DFT split's Ir, Rh) need another reference
    with pytest.raises(DataError, match="'Ir' not supported with reference ase.calculators"):
        GeneratorConfig(metals=("Cu", "Ir"))
    assert GeneratorConfig(metals=("Cu", "Ir"), ood_pairs=(), reference=ref).metals == (
        "Cu", "Ir")


def test_generation_is_cached_per_system_and_resumes(tmp_path, monkeypatch):
    """A generation stopped after its first system continues from the cache; a larger
    rerun reuses the cached systems; the files are byte-identical to an uncached run's."""
    from ltau_md.workflows.is2rs import generate as gen

    cfg = GeneratorConfig(**_SMALL)
    cache = tmp_path / "cache"
    real, calls = gen.generate_system, []

    def dies_after_one(seed, split, index, c=None):
        if calls:
            raise KeyboardInterrupt  # as a kill: the first system is cached, nothing else
        calls.append((split, index))
        return real(seed, split, index, c)

    monkeypatch.setattr(gen, "generate_system", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        generate_benchmark(tmp_path / "a", seed=4, n_train=2, n_val=1, cfg=cfg,
                           splits=("train", "val_id"), progress=False, cache_dir=cache)
    assert not (tmp_path / "a").exists()
    (key,) = [p for p in cache.iterdir()]
    assert sorted(p.name for p in key.glob("*.extxyz")) == ["train-00000.extxyz"]
    first = (key / "train-00000.extxyz").stat().st_mtime_ns
    again = []
    monkeypatch.setattr(gen, "generate_system",
                        lambda *a: again.append(a[1:3]) or real(*a))
    m = generate_benchmark(tmp_path / "a", seed=4, n_train=2, n_val=1, cfg=cfg,
                           splits=("train", "val_id"), progress=False, cache_dir=cache)
    assert again == [("train", 1), ("val_id", 0)]  # the cached system is not redone
    assert (key / "train-00000.extxyz").stat().st_mtime_ns == first
    assert m["splits"]["train"]["reference_calls"] >= m["splits"]["train"]["attempts"] >= 2
    # the cost: one system from the cache, the CPU of the ones generated now (manifest only)
    assert m["splits"]["train"]["from_cache"] == 1 and m["splits"]["val_id"]["from_cache"] == 0
    assert m["splits"]["train"]["generation_cpu_s"] > 0
    fresh = generate_benchmark(tmp_path / "b", seed=4, n_train=2, n_val=1, cfg=cfg,
                               splits=("train", "val_id"), progress=False, cache=False)
    assert fresh["files"] == m["files"]
    # another seed or config: another key, nothing reused
    generate_benchmark(tmp_path / "c", seed=5, n_train=1, n_val=0, cfg=cfg,
                       splits=("train",), progress=False, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2


def test_the_cache_serves_runs_that_keep_other_frame_counts(tmp_path):
    """The frames kept per system are picked after a system is generated, so a run with
    other frame counts reuses the cached systems (also from a cache written under a key that
    held the counts), keeps its own number of frames, and a cache of another seed stays
    unused."""
    import dataclasses
    import json

    from ase.io import read

    cache = tmp_path / "cache"
    cfg2 = GeneratorConfig(**_SMALL)
    cfg3 = dataclasses.replace(cfg2, frames_per_system=3, val_frames_per_system=2)
    kw = dict(seed=4, n_train=1, n_val=1, splits=("train", "val_id"), progress=False,
              cache_dir=cache)
    a = generate_benchmark(tmp_path / "a", cfg=cfg2, **kw)
    b = generate_benchmark(tmp_path / "b", cfg=cfg3, **kw)
    assert [b["splits"][s]["from_cache"] for s in ("train", "val_id")] == [1, 1]
    assert len(list(cache.iterdir())) == 1
    assert (a["splits"]["train"]["n_frames"], b["splits"]["train"]["n_frames"]) == (2, 3)
    assert (a["splits"]["val_id"]["n_frames"], b["splits"]["val_id"]["n_frames"]) == (1, 2)
    assert a["files"]["train/relaxed.extxyz"] == b["files"]["train/relaxed.extxyz"]
    # a cache written before: its key held the frame counts (another folder name)
    (key,) = cache.iterdir()
    old = json.loads((key / "key.json").read_text())
    old["config"].update(frames_per_system=2, val_frames_per_system=1)
    legacy = key.rename(cache / "0123456789abcdef")
    (legacy / "key.json").write_text(json.dumps(old, sort_keys=True))
    c = generate_benchmark(tmp_path / "c", cfg=cfg3, **kw)
    assert [c["splits"][s]["from_cache"] for s in ("train", "val_id")] == [1, 1]
    assert c["files"] == b["files"]
    assert read(tmp_path / "c" / "train" / "frames.extxyz", ":")[0].info == read(
        tmp_path / "b" / "train" / "frames.extxyz", ":")[0].info
    # another seed's cache is not taken for this one's
    d = generate_benchmark(tmp_path / "d", cfg=cfg3, **{**kw, "seed": 5, "n_val": 0,
                                                        "splits": ("train",)})
    assert d["splits"]["train"]["from_cache"] == 0
