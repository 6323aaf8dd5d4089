"""NequIPFeatureModel and descriptor extraction against nequip's own ASE calculator."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ltau_md.core.exceptions import ArtifactError, DataError, SpeciesError
from ltau_md.core.model import FeatureModel
from ltau_md.integrations.nequip import NequIPFeatureModel, descriptors_for_dataset


@pytest.fixture(scope="module")
def model(tiny_run):
    return NequIPFeatureModel.from_file(tiny_run.checkpoint)


@pytest.fixture(scope="module")
def nequip_calc(tiny_run):
    from nequip.integrations.ase import NequIPCalculator

    return NequIPCalculator._from_saved_model(str(tiny_run.checkpoint), device="cpu",
                                              chemical_species_to_atom_type_map=True)


def _cluster() -> Atoms:
    """A non-periodic Cu4O cluster (no cell)."""
    return Atoms("Cu4O", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5],
                                    [1.2, 1.1, 1.3]])


def test_protocol_and_metadata(model):
    assert isinstance(model, FeatureModel)
    assert model.species == [1, 8, 29]
    assert model.type_names == ["H", "O", "Cu"]
    assert model.r_max == pytest.approx(4.5)
    assert model.feature_dim == 8  # num_features of the tiny model's last (scalar) layer


def test_matches_nequip_ase_calculator(model, nequip_calc, tiny_run):
    structures = ase.io.read(tiny_run.val_xyz, ":")[:4] + [_cluster()]
    for atoms in structures:
        periodic = bool(atoms.pbc.all())
        ref = atoms.copy()
        ref.calc = nequip_calc
        out = model.evaluate(atoms, stress=True)
        np.testing.assert_allclose(out.forces, ref.get_forces(), atol=1e-6)
        assert out.energy == pytest.approx(ref.get_potential_energy(), abs=1e-5)
        assert out.forces.shape == (len(atoms), 3)
        assert out.features.shape == (len(atoms), 8) and out.features.dtype == np.float32
        if periodic:
            np.testing.assert_allclose(out.stress, ref.get_stress(), atol=1e-7)
        else:
            assert out.stress is None
        assert model.evaluate(atoms).stress is None  # stress only on request


def test_features_are_the_readout_input(model, tiny_run):
    """The hooked tensor equals the node_features the model outputs, is rotation invariant and
    does not depend on batching."""
    atoms = _cluster()
    out, feats = model.forward([atoms])
    np.testing.assert_array_equal(feats.numpy(), out["node_features"].detach().numpy())
    rot = atoms.copy()
    rot.rotate(37, "x", center="COM")
    rot.rotate(-71, "z", center="COM")
    np.testing.assert_allclose(model.evaluate(rot).features, model.evaluate(atoms).features,
                               atol=1e-5)
    frames = ase.io.read(tiny_run.train_xyz, ":12")
    batched = descriptors_for_dataset(model, frames, batch_size=5, progress=False)
    single = np.concatenate([model.evaluate(a).features for a in frames])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_features_only_pass_equals_the_full_forward_and_skips_the_rest(model, tiny_run,
                                                                      monkeypatch):
    """``features`` gives the full forward pass's features bit for bit, with no autograd graph
    and without running the readout; the full forward works as before afterwards."""
    frames = ase.io.read(tiny_run.train_xyz, ":6") + [_cluster()]
    out, full = model.forward(frames)
    calls = []
    readout = model._readout
    monkeypatch.setattr(readout, "forward", lambda *a, **k: calls.append(1) or None)
    only = model.features(frames)
    assert calls == [] and not only.requires_grad
    np.testing.assert_array_equal(only.numpy(), full.numpy())
    monkeypatch.undo()
    again = model.evaluate(frames[0])
    np.testing.assert_allclose(again.forces, out["forces"][:len(frames[0])].detach().numpy(),
                               atol=1e-6)


def test_frame_batches_cap_structures_and_atoms():
    from ltau_md.core.model import frame_batches

    sizes = [15] * 20 + [108, 108, 300, 5]
    frames = [Atoms(f"H{n}", positions=np.zeros((n, 3))) for n in sizes]
    batches = list(frame_batches(frames, batch_size=16, max_atoms=256))
    # 16 molecules (240 atoms), then 4 more + one cell (168), one cell, the 300-atom cell
    # alone, the last 5 atoms
    assert [(b.start, b.stop) for b in batches] == [(0, 16), (16, 21), (21, 22), (22, 23),
                                                    (23, 24)]
    assert [s.stop - s.start for s in frame_batches(frames, batch_size=3)][:2] == [3, 3]


def test_unknown_element_and_bad_inputs(model, tiny_run):
    with pytest.raises(SpeciesError, match="Au"):
        model.evaluate(Atoms("CuAu", positions=[[0, 0, 0], [2.5, 0, 0]]))
    frames = ase.io.read(tiny_run.train_xyz, ":")
    with pytest.raises(SpeciesError, match="structure 1: .*Pt"):
        descriptors_for_dataset(model, [frames[0], Atoms("Pt")], progress=False)
    with pytest.raises(ArtifactError, match="does not exist"):
        NequIPFeatureModel.from_file(tiny_run.root / "nope.ckpt")
    no_forces = [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in frames]
    with pytest.raises(DataError, match="forces"):
        descriptors_for_dataset(model, no_forces, fingerprint="0" * 32, progress=False)
    # forces present but one frame perturbed: fingerprint mismatch
    bad = [a.copy() for a in frames]
    for a, src in zip(bad, frames, strict=True):
        a.calc = SinglePointCalculator(a, forces=src.get_forces())
    bad[3].positions[0, 0] += 0.01
    from ltau_md.core.errorlog import ErrorLog

    fp = ErrorLog.open(tiny_run.log_dir).fingerprint
    assert descriptors_for_dataset(model, frames, fingerprint=fp, progress=False).shape[0] > 0
    with pytest.raises(ArtifactError, match="fingerprint"):
        descriptors_for_dataset(model, bad, fingerprint=fp, progress=False)


def test_package_file_gives_same_outputs(model, tiny_run):
    pkg = NequIPFeatureModel.from_file(tiny_run.package())
    atoms = ase.io.read(tiny_run.val_xyz, 0)
    a, b = model.evaluate(atoms, stress=True), pkg.evaluate(atoms, stress=True)
    np.testing.assert_allclose(b.forces, a.forces, atol=1e-6)
    np.testing.assert_allclose(b.features, a.features, atol=1e-6)
    assert b.energy == pytest.approx(a.energy, abs=1e-5)


def test_descriptors_from_nequip_dataset_match_file(model, tiny_run):
    from nequip.data.dataset import ASEDataset

    ds = ASEDataset(file_path=str(tiny_run.train_xyz))
    a = descriptors_for_dataset(model, ds, batch_size=8, progress=False)
    b = descriptors_for_dataset(model, tiny_run.log_dir / "frames.traj", batch_size=8,
                                progress=False)
    np.testing.assert_array_equal(a, b)


def test_api_check_battery(model):
    """ltau_md.testing.check_feature_model: the battery any FeatureModel must pass (float32
    model: tolerances for summation order)."""
    from ltau_md.testing import check_feature_model

    check_feature_model(model, rtol=1e-4, atol=1e-4)
