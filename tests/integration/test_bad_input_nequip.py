"""Bad input with a real NequIP model and real ``nequip-train``: a clear error naming the
problem, exit status 2 from the CLI, no output left behind; and the run status of ``md`` with
a real model (exit 3 when the monitor halts it)."""

from __future__ import annotations

import json

import ase.io
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ltau_md.cli import main
from ltau_md.integrations.nequip import toy


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    return err[-1]


def _energies_only(src, dst, drop_forces_of=None):
    out = []
    for i, a in enumerate(ase.io.read(src, ":")):
        b = Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc)
        res = {"energy": a.get_potential_energy()}
        if drop_forces_of is not None and i not in drop_forces_of:
            res["forces"] = a.get_forces()
        b.calc = SinglePointCalculator(b, **res)
        out.append(b)
    ase.io.write(dst, out)
    return dst


# ---------------------------------------------------------------------- nequip-train
def test_energies_only_frames_in_nequip_train_raise_data_error(tiny_run, tmp_path):
    """nequip-train computes force statistics before Lightning starts (before any callback
    hook); the RequireForces transform of tiny_config reports the frame there."""
    bad = _energies_only(tiny_run.train_xyz, tmp_path / "eonly.xyz")
    cfg = toy.write_config(toy.tiny_config(bad, tiny_run.val_xyz, max_epochs=1),
                           tmp_path / "cfg.yaml")
    proc = toy.nequip_train(cfg, tmp_path / "run", threads=1, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ltau_md.core.exceptions.DataError: a frame of the data (" in out
    assert "has no reference 'forces' field" in out
    assert "KeyError" not in out
    assert not (tmp_path / "run" / "ltau_log").exists()


def test_callback_setup_refuses_frames_without_forces_before_training(tiny_run, tmp_path):
    """Without force statistics (fixed model scales, no stats manager) and without the
    transform, the callback's ``setup`` (Lightning's first hook with the data) names the frame
    before any training step, where nequip's loss would fail with a KeyError."""
    bad = _energies_only(tiny_run.train_xyz, tmp_path / "one.xyz", drop_forces_of={3})
    cfg = toy.tiny_config(bad, tiny_run.val_xyz, max_epochs=1)
    data = cfg["data"]
    data["transforms"] = [t for t in data["transforms"] if "RequireForces" not in t["_target_"]]
    del data["stats_manager"]
    cfg["training_module"]["model"].update(avg_num_neighbors=28.0, per_type_energy_shifts=0.2,
                                           per_type_energy_scales=0.8)
    proc = toy.nequip_train(toy.write_config(cfg, tmp_path / "cfg.yaml"), tmp_path / "run",
                            threads=1, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ltau_md.core.exceptions.DataError: training frame 3 has no reference 'forces'" in out
    assert "KeyError" not in out
    assert not list((tmp_path / "run").glob("*.ckpt"))


# ---------------------------------------------------------------------- CLI, real model
def test_fit_k_larger_than_the_training_set(tiny_run, tmp_path, capsys):
    n = sum(len(a) for a in ase.io.read(tiny_run.train_xyz, ":"))
    rc = main(["fit", str(tiny_run.run_dir), "--model", str(tiny_run.checkpoint), "--k",
               str(n + 1), "--out", str(tmp_path / "est"), "--no-progress"])
    assert rc == 2
    assert _err_line(capsys).startswith(f"ltau-md fit: error: --k {n + 1} exceeds the {n} "
                                        "training atoms")
    assert not (tmp_path / "est").exists()


@pytest.mark.parametrize("cmd", ["relax", "md"])
def test_structure_without_atoms_with_a_real_model(tiny_run, tmp_path, capsys, cmd):
    """Once nequip's ``RuntimeError: min(): Expected reduction dim``, exit 1, --out left."""
    ase.io.write(tmp_path / "none.xyz", Atoms())
    rc = main([cmd, str(tmp_path / "none.xyz"), "--model", str(tiny_run.checkpoint),
               "--estimator", str(tiny_run.estimator_dir), "--out", str(tmp_path / "out"),
               "--no-progress"])
    assert rc == 2
    assert "has no atoms" in _err_line(capsys)
    assert not (tmp_path / "out").exists()


def test_md_status_with_a_real_model(tiny_run, tmp_path, capsys):
    """Thresholds at 0 (the lowest allowed) fire on the first step whose max uncertainty is
    above 0: a resample with the EMT oracle fires once and the run completes (exit 0); a stop
    halts the run (exit 3, status "halted")."""
    ase.io.write(tmp_path / "start.xyz", ase.io.read(tiny_run.val_xyz, index=0))
    common = [str(tmp_path / "start.xyz"), "--model", str(tiny_run.checkpoint),
              "--estimator", str(tiny_run.estimator_dir), "--no-progress"]
    assert main(["md", *common, "--steps", "4", "--resample-above", "0", "--oracle", "emt",
                 "--out", str(tmp_path / "md")]) == 0
    s = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert s["status"] == "completed" and s["n_events"]["resample"] == 1
    assert len(ase.io.read(tmp_path / "md" / "labelled.extxyz", index=":")) == 1
    assert main(["md", *common, "--steps", "10", "--stop-above", "0", "--patience", "2",
                 "--out", str(tmp_path / "stop")]) == 3
    s = json.loads((tmp_path / "stop" / "summary.json").read_text())
    assert s["status"] == "halted" and s["stopped"]["step"] == 1 and s["n_observed"] == 2
    assert "MD halted" in capsys.readouterr().out


# ---------------------------------------------------------------------- model files, devices
def test_structure_file_as_model_and_cuda_without_cuda(tiny_run, tmp_path, capsys):
    """An .xyz passed as --model is named as not a NequIP model (no UnpicklingError); --device
    cuda on a torch without CUDA is refused with the reason; nothing is written."""
    import torch

    from ltau_md.core.exceptions import ArtifactError, InvalidParameterError
    from ltau_md.integrations.nequip import NequIPFeatureModel

    with pytest.raises(ArtifactError, match=r"cannot load a NequIP model from .*val.*expected a "
                       r"nequip-train checkpoint \.ckpt or a nequip-package"):
        NequIPFeatureModel.from_file(tiny_run.val_xyz)
    common = ["--estimator", str(tiny_run.estimator_dir), "--no-progress"]
    rc = main(["relax", str(tiny_run.val_xyz), "--model", str(tiny_run.val_xyz), *common,
               "--out", str(tmp_path / "a")])
    assert rc == 2 and "cannot load a NequIP model" in _err_line(capsys)
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="has no CUDA"):
            NequIPFeatureModel.from_file(tiny_run.checkpoint, device="cuda")
        rc = main(["relax", str(tiny_run.val_xyz), "--model", str(tiny_run.checkpoint),
                   *common, "--device", "cuda", "--out", str(tmp_path / "b")])
        assert rc == 2 and "has no CUDA" in _err_line(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---------------------------------------------------------------------- model/estimator pairing
def test_estimator_with_another_model_or_type_map_is_refused(tiny_run, tmp_path, capsys):
    """The estimator of member 0 used with member 1's model (another seed), or through a type
    map other than the one it was fitted with, is refused naming both sides; the package of
    member 0's checkpoint (other file, same weights) is accepted; --allow-mismatch overrides
    with a warning."""
    from ltau_md.core.exceptions import ArtifactError
    from ltau_md.integrations.nequip import load_calculator
    from ltau_md.integrations.nequip.model import NequIPFeatureModel

    other = tiny_run.run_dirs[1] / "last.ckpt"
    ase.io.write(tmp_path / "start.xyz", ase.io.read(tiny_run.val_xyz, index=0))
    common = [str(tmp_path / "start.xyz"), "--estimator", str(tiny_run.estimator_dir),
              "--no-progress", "--steps", "2"]
    assert main(["md", *common, "--model", str(other), "--out", str(tmp_path / "a")]) == 2
    line = _err_line(capsys)
    assert "does not belong to this model" in line and "run1" in line and "run0" in line
    assert "--allow-mismatch" in line and not (tmp_path / "a").exists()
    swapped = "H=O,O=H,Cu=Cu"
    assert main(["md", *common, "--model", str(tiny_run.checkpoint), "--type-map", swapped,
                 "--out", str(tmp_path / "b")]) == 2
    assert "fitted through the type map Cu=Cu,H=H,O=O, not Cu=Cu,H=O,O=H" in _err_line(capsys)
    assert main(["md", *common, "--model", str(other), "--allow-mismatch",
                 "--out", str(tmp_path / "c")]) == 0
    assert "warning: estimator used although it was fitted on the model" in \
        capsys.readouterr().err
    # same weights in another file: a package of the checkpoint
    pkg = tiny_run.package()
    assert NequIPFeatureModel.from_file(pkg).weights_sha256() == \
        NequIPFeatureModel.from_file(tiny_run.checkpoint).weights_sha256()
    load_calculator(pkg, tiny_run.estimator_dir)
    with pytest.raises(ArtifactError, match="allow_mismatch=True"):
        load_calculator(other, tiny_run.estimator_dir)


def test_type_map_leaving_out_an_element_is_named_as_the_cause(tiny_run, tmp_path, capsys):
    ase.io.write(tmp_path / "start.xyz", ase.io.read(tiny_run.val_xyz, index=":"))
    frames = ase.io.read(tmp_path / "start.xyz", ":")
    with_o = next(i for i, a in enumerate(frames) if 8 in a.numbers)
    rc = main(["relax", f"{tmp_path / 'start.xyz'}", "--model", str(tiny_run.checkpoint),
               "--estimator", str(tiny_run.estimator_dir), "--type-map", "H=H,Cu=Cu",
               "--allow-mismatch", "--out", str(tmp_path / "r"), "--no-progress"])
    assert rc == 2
    line = _err_line(capsys)
    assert f"structure {with_o}" in line
    assert "O not known to the NequIP model through the type map H=H,Cu=Cu" in line
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------- structures up front
def test_structures_are_checked_up_front_and_index_syntax_is_read(tiny_run, tmp_path, capsys):
    """A NaN position is refused naming the atom, an over-long periodic cell too (exit 2,
    nothing written); md --frame N starts from frame N, ASE's FILE@N works, a note says which
    frame of several is used; a single atom runs MD with finite positions (ASE's Stationary
    used to make its momenta NaN)."""
    import numpy as np

    frames = ase.io.read(tiny_run.val_xyz, ":")
    ase.io.write(tmp_path / "val.xyz", frames)
    common = ["--model", str(tiny_run.checkpoint), "--estimator", str(tiny_run.estimator_dir),
              "--no-progress", "--steps", "3"]
    bad = frames[1].copy()
    bad.positions[2] = np.nan
    ase.io.write(tmp_path / "bad.xyz", [frames[0], bad])
    assert main(["relax", str(tmp_path / "bad.xyz"), *common, "--out",
                 str(tmp_path / "r")]) == 2
    line = _err_line(capsys)
    assert f"structure 1 of {tmp_path / 'bad.xyz'}: atom 2 (" in line
    assert "non-finite position (nan" in line
    big = frames[0].copy()
    big.cell[2] *= 1e5
    ase.io.write(tmp_path / "big.xyz", big)
    assert main(["md", str(tmp_path / "big.xyz"), *common, "--out", str(tmp_path / "m")]) == 2
    assert "periodic cell vector c is" in _err_line(capsys)
    assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()

    assert main(["md", str(tmp_path / "val.xyz"), *common, "--frame", "3", "--out",
                 str(tmp_path / "f3")]) in (0, 3)
    first = ase.io.read(tmp_path / "f3" / "trajectory.extxyz", index=0)
    np.testing.assert_allclose(first.positions, frames[3].positions, atol=1e-6)
    assert "using frame" not in capsys.readouterr().err
    assert main(["md", f"{tmp_path / 'val.xyz'}@-1", *common, "--out",
                 str(tmp_path / "last")]) in (0, 3)
    first = ase.io.read(tmp_path / "last" / "trajectory.extxyz", index=0)
    np.testing.assert_allclose(first.positions, frames[-1].positions, atol=1e-6)
    assert main(["md", str(tmp_path / "val.xyz"), *common, "--out", str(tmp_path / "f0")]) \
        in (0, 3)
    assert f"holds {len(frames)} frames; using frame 0" in capsys.readouterr().err
    assert main(["md", str(tmp_path / "val.xyz"), *common, "--frame", "99", "--out",
                 str(tmp_path / "f99")]) == 2
    assert f"--frame 99: {tmp_path / 'val.xyz'} holds {len(frames)} frame(s)" in \
        _err_line(capsys)
    assert main(["relax", f"{tmp_path / 'val.xyz'}@:2", *common, "--out",
                 str(tmp_path / "r2")]) == 0
    assert len(json.loads((tmp_path / "r2" / "summary.json").read_text())) == 2

    ase.io.write(tmp_path / "one.xyz", Atoms("Cu", positions=[[0, 0, 0]]))
    assert main(["md", str(tmp_path / "one.xyz"), *common, "--out", str(tmp_path / "one")]) \
        == 0
    s = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert s["status"] == "completed" and s["n_observed"] == 4
    traj = ase.io.read(tmp_path / "one" / "trajectory.extxyz", ":")
    assert all(np.isfinite(a.positions).all() for a in traj)
    assert not np.allclose(traj[-1].positions, traj[0].positions)  # it moved
