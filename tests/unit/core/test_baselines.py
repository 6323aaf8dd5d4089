"""Baselines against hand computations: the ensemble force spread of EnsembleCalculator equals
numpy's std over the members' forces, the element baseline equals the per-element mean of the
training errors, the latent distance is the mean k-NN distance."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from ltau_md.core.baselines import EnsembleCalculator, element_error, force_std, latent_distance
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import InvalidParameterError, SpeciesError
from ltau_md.core.model import ModelOutput
from ltau_md.testing import EMTFeatureModel


class PerturbedEMT(EMTFeatureModel):
    """EMT with forces scaled and shifted by a smooth position-dependent field: a second
    'member' that disagrees with the first by a known amount."""

    def __init__(self, scale: float, shift: float, **kw):
        super().__init__(**kw)
        self.scale, self.shift = scale, shift

    def evaluate(self, atoms, stress=False) -> ModelOutput:
        out = super().evaluate(atoms, stress)
        out.forces = out.forces * self.scale + self.shift * np.sin(atoms.positions)
        out.energy = out.energy + self.shift
        return out


def _atoms(seed=0):
    a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    a.rattle(0.05, seed=seed)
    return a


def _estimator(tmp_path, elements=("H", "Cu"), n_frames=6, seed=0):
    model = EMTFeatureModel(elements=elements)
    frames = []
    for i in range(n_frames):
        a = _atoms(seed + i)
        if "H" in elements:
            a[0].symbol = "H"
            a[1].symbol = "H"
        frames.append(a)
    feats = np.concatenate([model.evaluate(a).features for a in frames])
    z = np.concatenate([a.numbers for a in frames])
    off = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
    log = ErrorLog.create(tmp_path / "log", species=z, frame_offsets=off,
                          ref_force_norm=np.ones(z.size))
    rng = np.random.default_rng(seed)
    scale = np.where(z == 1, 0.3, 0.05)
    for _ in range(5):
        log.append(rng.gamma(2.0, 0.5, z.size) * scale)
    return model, LTAUEstimator(k=4, index="flat").fit(feats, log)


def test_force_std_equals_numpy_std_over_members():
    members = [EMTFeatureModel(elements=("Cu",)), PerturbedEMT(1.1, 0.05, elements=("Cu",)),
               PerturbedEMT(0.9, -0.03, elements=("Cu",))]
    atoms = _atoms()
    atoms.calc = EnsembleCalculator(members)
    f = np.stack([m.evaluate(atoms).forces for m in members])
    want = np.sqrt((np.std(f, axis=0) ** 2).sum(axis=1))
    np.testing.assert_allclose(atoms.calc.get_property("force_std", atoms), want, rtol=1e-12)
    np.testing.assert_allclose(force_std(f), want, rtol=1e-12)
    assert atoms.calc.get_property("force_std:max", atoms) == pytest.approx(want.max())
    # energy and forces are member 0's (the deployed model)
    np.testing.assert_allclose(atoms.get_forces(), f[0], rtol=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(members[0].evaluate(atoms).energy)
    energies = [m.evaluate(atoms).energy for m in members]
    assert atoms.calc.get_property("energy_std", atoms) == pytest.approx(np.std(energies))
    for key in atoms.calc.results:  # every key it returns is declared
        assert key in EnsembleCalculator.implemented_properties or key == "finite"


def test_ensemble_calculator_with_estimator_adds_ltau_results(tmp_path):
    model, est = _estimator(tmp_path, elements=("Cu",))
    other = PerturbedEMT(1.05, 0.02, elements=("Cu",))
    atoms = _atoms(7)
    atoms.calc = EnsembleCalculator([model, other], est)
    out = model.evaluate(atoms)
    pred = est.predict(out.features, species=atoms.numbers)
    np.testing.assert_allclose(atoms.calc.get_property("uncertainty", atoms), pred.uncertainty,
                               rtol=1e-6)
    np.testing.assert_allclose(atoms.calc.get_property("novelty", atoms), pred.novelty,
                               rtol=1e-6)
    want = force_std([out.forces, other.evaluate(atoms).forces])
    np.testing.assert_allclose(atoms.calc.get_property("force_std", atoms), want, rtol=1e-12)
    with pytest.raises(InvalidParameterError):
        EnsembleCalculator([model])


def test_ensemble_calculator_non_finite_positions_do_not_raise():
    members = [EMTFeatureModel(elements=("Cu",)), PerturbedEMT(1.1, 0.0, elements=("Cu",))]
    atoms = _atoms()
    atoms.calc = EnsembleCalculator(members)
    atoms.positions[3, 0] = np.nan
    assert np.isnan(atoms.get_forces()).all()
    assert not atoms.calc.results["finite"]
    assert np.isinf(atoms.calc.results["force_std:max"])


def test_element_error_equals_hand_computation(tmp_path):
    _, est = _estimator(tmp_path)
    z = np.array([29, 1, 29, 1, 1])
    species = np.asarray(est.summary_.species)
    mae = {zz: est.train_error_[species == zz].mean() for zz in (1, 29)}
    np.testing.assert_allclose(element_error(est, z), [mae[int(x)] for x in z], rtol=1e-6)
    assert mae[1] > mae[29]  # H was logged with larger errors
    with pytest.raises(SpeciesError):
        element_error(est, np.array([8]))


def test_latent_distance_is_mean_knn_distance(tmp_path):
    model, est = _estimator(tmp_path, elements=("Cu",))
    feats = model.evaluate(_atoms(11)).features
    pred = est.predict(feats)
    x = est.training_descriptors().astype(np.float64)
    d = np.sqrt(((feats[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1))
    want = np.sort(d, axis=1)[:, :est.k].mean(1)
    np.testing.assert_allclose(latent_distance(pred), want, rtol=1e-4)


def test_monitor_watches_the_ensemble_force_std(tmp_path):
    """UQMonitor + Threshold(signal="force_std") on an EnsembleCalculator, as with LTAU."""
    from ase.optimize import BFGS

    from ltau_md.core.observers import Threshold, UQMonitor

    members = [EMTFeatureModel(elements=("Cu",)), PerturbedEMT(1.2, 0.1, elements=("Cu",))]
    atoms = _atoms(3)
    atoms.calc = EnsembleCalculator(members)
    opt = BFGS(atoms, logfile=None)
    want = force_std([m.evaluate(atoms).forces for m in members]).max()
    mon = UQMonitor(opt, [Threshold("stop", above=0.5 * want, signal="force_std")],
                    out_dir=tmp_path / "run")
    opt.attach(mon, interval=1)
    mon.run(steps=20)
    assert mon.status == "halted" and mon.stopped.step == 0
    assert mon.stopped.value == pytest.approx(want)
    assert "force_std" in mon.stopped.reason
