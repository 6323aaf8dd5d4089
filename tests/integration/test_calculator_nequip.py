"""LTAUCalculator on a real tiny NequIP model, and the relax / md command lines."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write

from ltau_md.cli import main
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import SpeciesError
from ltau_md.integrations.nequip import NequIPFeatureModel, load_calculator


def test_one_forward_pass_and_uncertainty_equals_estimator(tiny_run):
    calc = load_calculator(model=tiny_run.checkpoint, estimator=tiny_run.estimator_dir)
    calls = []
    calc.model.model.register_forward_hook(lambda *a: calls.append(1))
    frames = read(tiny_run.val_xyz, index=":")
    periodic = next(a for a in frames if a.pbc.all())
    atoms = periodic.copy()
    atoms.calc = calc
    f = atoms.get_forces()
    st = atoms.get_stress()
    unc = atoms.calc.get_property("uncertainty")
    perr = atoms.calc.get_property("predicted_error")
    assert len(calls) == 1  # energy, forces, stress and descriptors from one forward pass
    # independent route: the model alone, then the saved estimator
    fm = NequIPFeatureModel.from_file(tiny_run.checkpoint)
    out = fm.evaluate(periodic, stress=True)
    est = LTAUEstimator.load(tiny_run.estimator_dir)
    pred = est.predict(out.features)
    np.testing.assert_allclose(f, out.forces, atol=1e-5)
    np.testing.assert_allclose(st, out.stress, atol=1e-6)
    np.testing.assert_allclose(unc, pred.uncertainty, atol=1e-6)
    np.testing.assert_allclose(perr, pred.predicted_error, rtol=1e-5)
    assert np.all((unc >= 0) & (unc <= 1))


def test_unknown_element_is_named_before_the_first_step(tiny_run):
    calc = load_calculator(model=tiny_run.checkpoint, estimator=tiny_run.estimator_dir)
    atoms = bulk("Au", cubic=True)
    atoms.calc = calc
    with pytest.raises(SpeciesError, match="Au"):
        atoms.get_forces()


def test_cli_relax_and_md(tiny_run, tmp_path):
    frames = read(tiny_run.val_xyz, index=":")[:2]
    write(tmp_path / "start.xyz", frames)
    common = ["--model", str(tiny_run.checkpoint), "--estimator", str(tiny_run.estimator_dir),
              "--no-progress"]
    assert main(["relax", str(tmp_path / "start.xyz"), *common, "--steps", "5",
                 "--out", str(tmp_path / "relax")]) == 0
    rows = json.loads((tmp_path / "relax" / "summary.json").read_text())
    assert len(rows) == 2
    for i, r in enumerate(rows):
        s = json.loads((tmp_path / "relax" / f"{i:04d}" / "summary.json").read_text())
        assert r["max"] == s["max"] and r["n_observed"] == s["n_observed"] <= 6
    # md that resamples every excursion above 0 with the EMT oracle, then one that stops
    assert main(["md", str(tmp_path / "start.xyz"), *common, "--steps", "4",
                 "--resample-above", "0", "--oracle", "emt",
                 "--out", str(tmp_path / "md")]) == 0
    lab = read(tmp_path / "md" / "labelled.extxyz", index=":")
    cand = read(tmp_path / "md" / "candidates.extxyz", index=":")
    assert len(lab) == len(cand) == 1  # fires once, then stays disarmed above the threshold
    ref = cand[0].copy()
    ref.calc = EMT()
    np.testing.assert_allclose(lab[0].get_forces(), ref.get_forces(), atol=1e-5)
    assert main(["md", str(tmp_path / "start.xyz"), *common, "--steps", "10",
                 "--stop-above", "0", "--patience", "2", "--out", str(tmp_path / "stop")]) == 3
    s = json.loads((tmp_path / "stop" / "summary.json").read_text())
    assert s["stopped"]["step"] == 1 and s["n_observed"] == 2
    # bad input: a missing file is a clear error, not a traceback
    assert main(["relax", str(tmp_path / "nope.xyz"), *common, "--out", str(tmp_path / "x")]) == 2
