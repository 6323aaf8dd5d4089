"""IS2RS reference-based targets against independent references: EMT relaxations of O on
Cu(111) at known sites (fcc, hcp, top), displacement modulo the surface cell on translated
copies, bootstrap intervals covering known population values, and the reference calculator
named by an import path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from ase.optimize import BFGS
from scipy.stats import norm

from ltau_md.core.exceptions import DataError, LTAUError
from ltau_md.core.metrics import bootstrap_ci
from ltau_md.workflows.is2rs.data import System, prepare_structure
from ltau_md.workflows.is2rs.metrics import (
    classify_basin,
    free_atom_distances,
    substrate_translations,
    symmetric_free_atom_distances,
)
from ltau_md.workflows.is2rs.reference import DEFAULT_REFERENCE, check_reference, load_reference
from ltau_md.workflows.is2rs.runner import RelaxSettings, relax_system


def _o_on_cu111(site: str, relax: bool = True, offset=(0.0, 0.0)):
    """O on a 2x2x3 Cu(111) slab at ``site`` (OC20 tags: bottom layer 0, top two 1, O 2),
    relaxed with EMT + BFGS (fmax 0.01 eV/A). Returns (atoms, EMT energy in eV)."""
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    layer = slab.get_tags()
    add_adsorbate(slab, "O", 1.3, site, offset=offset)
    slab.set_tags([*np.where(layer <= 2, 1, 0), 2])
    atoms = prepare_structure(slab, site)
    if not relax:
        return atoms, math.nan
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    e = float(atoms.get_potential_energy())
    atoms.calc = None
    return atoms, e


@pytest.fixture(scope="module")
def sites():
    return {s: _o_on_cu111(s) for s in ("fcc", "hcp", "ontop")}


def test_displacement_modulo_surface_cell_is_zero_for_translated_copies(sites):
    fcc, _ = sites["fcc"]
    a_prim = fcc.cell[0] / 2  # one surface-cell vector of the 2x2 supercell
    shifted = fcc.copy()
    shifted.positions += a_prim
    shifted.wrap()
    # per-atom minimum image sees every free atom move by |a_prim| ...
    np.testing.assert_allclose(free_atom_distances(shifted, fcc), np.linalg.norm(a_prim),
                               atol=1e-9)
    # ... modulo the substrate's translations the copy is the same structure
    np.testing.assert_allclose(symmetric_free_atom_distances(shifted, fcc), 0.0, atol=1e-9)
    # a whole supercell vector is already removed by the minimum image
    cell_shift = fcc.copy()
    cell_shift.positions[-1] += fcc.cell[1]
    np.testing.assert_allclose(free_atom_distances(cell_shift, fcc), 0.0, atol=1e-9)
    assert len(substrate_translations(fcc)) == 4  # the 2x2 surface-cell translations


def test_no_symmetry_is_assumed_on_an_alloy_substrate(sites):
    fcc, _ = sites["fcc"]
    alloy = fcc.copy()
    bottom = np.flatnonzero(alloy.get_tags() == 0)
    alloy.symbols[bottom[0]] = "Au"  # breaks the translational symmetry of the substrate
    assert len(substrate_translations(alloy)) == 1
    shifted = alloy.copy()
    shifted.positions += alloy.cell[0] / 2
    assert symmetric_free_atom_distances(shifted, alloy).max() > 1.0


def test_basin_classification_on_known_o_cu111_sites(sites):
    (fcc, e_fcc), (hcp, e_hcp), (top, e_top) = sites["fcc"], sites["hcp"], sites["ontop"]
    # EMT: fcc and hcp are (nearly) degenerate, top is higher (independent relaxations)
    assert abs(e_hcp - e_fcc) < 0.02 and e_top > e_fcc + 0.1
    fcc_copy = fcc.copy()
    fcc_copy.positions += fcc.cell[0] / 2  # a symmetry-equivalent fcc site
    fcc_copy.wrap()
    assert classify_basin(fcc_copy, e_fcc, fcc, e_fcc) == "same"
    assert classify_basin(hcp, e_hcp, fcc, e_fcc) == "degenerate"
    assert classify_basin(top, e_top, fcc, e_fcc) == "higher"
    assert classify_basin(fcc, e_fcc, top, e_top) == "lower"


def test_relax_system_scores_end_point_with_the_reference(sites):
    (fcc, e_fcc), (top, e_top) = sites["fcc"], sites["ontop"]
    settings = RelaxSettings(fmax=0.01, steps=300, trajectory_errors=True)
    # the "model" (EMT itself) relaxes O placed on top: it stays on top (a higher minimum)
    start, _ = _o_on_cu111("ontop", relax=False)
    r = relax_system(System("top", "val_id", start, fcc), EMT(), settings)
    assert r["basin"] == "higher" and r["reference_source"] == "given"
    assert r["energy_above_min"] == pytest.approx(e_top - e_fcc, abs=5e-3)
    # IS2RE: the model's end-point energy against the reference energy of the given minimum
    assert r["is2re_error"] == pytest.approx(e_top - e_fcc, abs=5e-3)
    assert r["ref_fmax_at_end"] < 0.011  # the model is the reference: forces below threshold
    assert r["force_error:max/max"] == pytest.approx(0.0, abs=1e-9)  # model == reference: no error
    assert r["force_mae"] == pytest.approx(0.0, abs=1e-9)
    assert r["n_ads"] == 1
    # the given "reference minimum" is the top site; the model end point re-relaxes into the
    # fcc site, which is lower: it becomes the reference and the end point sits in it
    start, _ = _o_on_cu111("fcc", relax=False, offset=(0.05, 0.05))
    r = relax_system(System("fcc", "val_id", start, top), EMT(), settings)
    assert r["basin"] == "lower" and r["reference_source"] == "ml_rerelaxed"
    assert r["is2re_error"] == pytest.approx(e_fcc - e_top, abs=5e-3)
    assert r["ref_energy_min"] == pytest.approx(e_fcc, abs=5e-3)
    assert r["energy_above_min"] == pytest.approx(0.0, abs=5e-3)
    assert r["rmsd_min_sym"] < 0.05 and r["ads_displacement_min_sym"] < 0.05
    assert r["mean_distance_min_sym"] <= r["rmsd_min_sym"] + 1e-12
    assert r["ads_displacement"] > 1.4  # O is a whole fcc-top distance from the given site


def test_bootstrap_intervals_cover_known_values():
    rng = np.random.default_rng(0)
    rho = 0.6
    spearman_true = 6 / np.pi * np.arcsin(rho / 2)  # bivariate normal
    auroc_true = float(norm.cdf(1 / np.sqrt(2)))  # N(1, 1) positives vs N(0, 1) negatives
    cover_s = cover_a = 0
    n_rep = 40
    for i in range(n_rep):
        z = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=150)
        lo, hi = bootstrap_ci("spearman", z[:, 0], z[:, 1], n_boot=400, seed=i)
        cover_s += lo <= spearman_true <= hi
        lab = rng.random(150) < 0.4
        score = rng.normal(size=150) + lab
        lo, hi = bootstrap_ci("auroc", score, lab, n_boot=400, seed=i)
        cover_a += lo <= auroc_true <= hi
    assert cover_s >= 0.85 * n_rep and cover_a >= 0.85 * n_rep
    # and the interval has the expected width (about +-0.07 for this AUROC at n = 150)
    assert 0.08 < hi - lo < 0.3
    with pytest.raises(DataError, match="metric"):
        bootstrap_ci("pearson", [1, 2, 3], [1, 2, 3])
    assert all(math.isnan(v) for v in bootstrap_ci("spearman", [1, 2], [1, 2]))


def test_reference_calculator_import_path():
    assert isinstance(load_reference(DEFAULT_REFERENCE), EMT)
    assert isinstance(load_reference("ase.calculators.emt:EMT"), EMT)
    for bad, match in (
        ("ase.calculators.emt.EMT", "import path 'package.module:Name'"),
        ("ase.calculators.nothere:EMT", "cannot import module 'ase.calculators.nothere'"),
        ("ase.calculators.emt:NoSuch", "has no attribute 'NoSuch'"),
        ("math:pi", "not a class or a callable"),
        ("builtins:dict", "not an ASE Calculator"),
    ):
        with pytest.raises(DataError, match=match):
            load_reference(bad)
    assert check_reference(DEFAULT_REFERENCE) == DEFAULT_REFERENCE
    with pytest.raises(LTAUError, match="cannot import module"):
        RelaxSettings(reference="no_such_package.calc:Calc")
    assert RelaxSettings(reference=None).reference is None


def test_error_stride_evaluates_every_kth_step_and_the_last():
    from ltau_md.testing import StretchedEMT
    from ltau_md.workflows.is2rs._relax import _StepObserver
    from ltau_md.workflows.is2rs._results import FERR

    atoms, _ = _o_on_cu111("ontop", relax=False)
    atoms.calc = StretchedEMT()  # the "model"; the reference is EMT
    free = np.ones(len(atoms), bool)
    ads = atoms.get_tags() == 2
    obs = _StepObserver(atoms, free, ads, EMT(), stride=3)
    rng = np.random.default_rng(0)
    expected = []
    for _ in range(6):  # steps 0..5: 0 and 3 evaluated, 5 (the last) added by finish()
        atoms.positions[-1] += rng.normal(0, 0.05, 3)
        atoms.get_forces()
        ref = atoms.copy()
        ref.calc = EMT()
        expected.append(np.linalg.norm(ref.get_forces() - atoms.get_forces(), axis=1).max())
        obs()
    obs.finish()
    got = np.array(obs.cols[FERR])
    assert np.isnan(got[[1, 2, 4]]).all()
    np.testing.assert_allclose(got[[0, 3, 5]], np.array(expected)[[0, 3, 5]], rtol=1e-12)
    assert obs.wall_s > 0


def test_relaxation_with_an_error_stride_keeps_initial_and_final_errors():
    from ltau_md.testing import StretchedEMT

    start, _ = _o_on_cu111("ontop", relax=False)
    fcc, _ = _o_on_cu111("fcc", relax=False)
    system = System("top", "val_id", start, fcc)
    every = relax_system(system, StretchedEMT(), RelaxSettings(fmax=0.05, steps=60))
    sparse = relax_system(system, StretchedEMT(), RelaxSettings(fmax=0.05, steps=60,
                                                                error_stride=5))
    assert every["n_steps"] == sparse["n_steps"] > 5  # the same model trajectory
    for stat in ("initial", "final"):
        key = f"force_error:max/{stat}"
        assert sparse[key] == pytest.approx(every[key], rel=1e-12) and every[key] > 0.01
    assert sparse["force_error:max/max"] <= every["force_error:max/max"] + 1e-12
    assert 0 < sparse["trajectory_reference_s"] < every["trajectory_reference_s"]
