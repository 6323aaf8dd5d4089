"""LTAUErrorLogger: eval/train modes, resume, DDP, bad data.

Some tests drive nequip's datamodule and EMALightningModule in-process with a plain
``lightning.Trainer`` (what ``nequip-train`` builds from YAML, minus hydra) to reach the
callback object; the YAML path itself is exercised by the ``tiny_run`` fixture, the resume test
and the DDP test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.exceptions import ArtifactError, DataError, LTAUError
from ltau_md.integrations.nequip import LTAUErrorLogger, toy

TYPE_NAMES = ["H", "O", "Cu"]


def _recompute_errors(model_file: Path, structures: list[Atoms]) -> np.ndarray:
    """|F_ref - F| per atom with nequip's own ASE calculator (independent of ltau_md)."""
    forces = toy.nequip_forces(model_file, structures)
    return np.concatenate([np.linalg.norm(a.get_forces() - f, axis=1)
                           for a, f in zip(structures, forces, strict=True)])


def _fit_inprocess(train_xyz, val_xyz, root: Path, callbacks, **kw):
    """Tiny NequIP trained in this process (one torch thread); ``root/last.ckpt``."""
    return toy.fit_inprocess(train_xyz, val_xyz, root, callbacks, **kw)


# ---------------------------------------------------------------------- eval mode (default)
def test_eval_log_equals_recomputation_with_saved_weights(tiny_run):
    """Default mode: the last logged epoch = errors of the deployed (EMA) weights saved in
    last.ckpt, recomputed by nequip's ASE calculator; earlier epochs differ (training moved)."""
    frames = ase.io.read(tiny_run.train_xyz, ":")
    ref = _recompute_errors(tiny_run.checkpoint, frames)
    lg = ErrorLog.open(tiny_run.log_dir)
    last = lg.epochs(0)[-1]
    np.testing.assert_allclose(lg.read_epoch(last, 0), ref, atol=2e-5, rtol=1e-5)
    assert np.abs(lg.read_epoch(0, 0) - ref).max() > 1e-3
    # frames.traj reproduces the training file exactly (order, positions, forces)
    stored = ase.io.read(tiny_run.log_dir / "frames.traj", ":")
    assert len(stored) == len(frames)
    for a, b in zip(stored, frames, strict=True):
        assert np.array_equal(a.numbers, b.numbers)
        assert np.array_equal(a.positions, b.positions)
        assert np.array_equal(a.get_forces(), b.get_forces())


def test_train_mode_log_from_yaml_is_complete(tiny_run):
    lt, le = ErrorLog.open(tiny_run.train_log_dir), ErrorLog.open(tiny_run.log_dir)
    assert lt.fingerprint == le.fingerprint and lt.n_atoms == le.n_atoms
    assert lt.epochs(0) == list(range(tiny_run.max_epochs))
    for e in lt.epochs(0):
        err = np.asarray(lt.read_epoch(e, 0))
        assert np.all(np.isfinite(err)) and err.min() >= 0
    # raw weights before each step (train) vs EMA weights after the epoch (eval): different
    assert not np.allclose(lt.read_epoch(0, 0), le.read_epoch(0, 0))


# ---------------------------------------------------------------------- train mode mapping
def test_train_mode_maps_shuffled_batches_to_atoms(tiny_run, tmp_path):
    """With lr = 0 the weights never change, so the errors recorded from shuffled training
    batches must equal the ordered eval pass atom by atom; each atom is visited exactly once
    per epoch."""
    ev = LTAUErrorLogger(out_dir=tmp_path / "eval", mode="eval", log_components=True,
                         cache_graphs=True, batch_size=5)
    tr = LTAUErrorLogger(out_dir=tmp_path / "train", mode="train", log_components=True)
    _fit_inprocess(tiny_run.train_xyz, tiny_run.val_xyz, tmp_path, [ev, tr], max_epochs=2,
                   lr=0.0, batch_size=3)
    le, lt = ErrorLog.open(tmp_path / "eval"), ErrorLog.open(tmp_path / "train")
    assert le.epochs(0) == lt.epochs(0) == [0, 1]
    assert np.array_equal(tr.last_visits, np.ones(lt.n_atoms, dtype=np.int64))
    for e in (0, 1):
        np.testing.assert_allclose(lt.read_epoch(e), le.read_epoch(e), atol=1e-5)
        comp = np.asarray(lt.read_components(e))
        np.testing.assert_allclose(np.linalg.norm(comp, axis=1), lt.read_epoch(e), atol=1e-5)
    ref = _recompute_errors(tmp_path / "last.ckpt", ase.io.read(tiny_run.train_xyz, ":"))
    np.testing.assert_allclose(le.read_epoch(1), ref, atol=2e-5, rtol=1e-5)


# ---------------------------------------------------------------------- resume
def test_resume_with_nequip_train_continues_log(tiny_run, tmp_path):
    run = tmp_path / "run0"
    shutil.copytree(tiny_run.run_dir, run)
    before = ErrorLog.open(run / "ltau_log")
    old = [np.array(before.read_epoch(e)) for e in before.epochs(0)]
    n = tiny_run.max_epochs
    toy.nequip_train(tiny_run.config, run,
                     [f"++ckpt_path={run / 'last.ckpt'}", f"trainer.max_epochs={n + 1}"])
    for name in ("ltau_log", "ltau_log_train"):
        lg = ErrorLog.open(run / name)
        assert lg.epochs(0) == list(range(n + 1)), name
    lg = ErrorLog.open(run / "ltau_log")
    for e in range(n):
        np.testing.assert_array_equal(lg.read_epoch(e), old[e])
    # Lightning's ModelCheckpoint versions the file (last-v1.ckpt) when the run dir moved
    newest = max(run.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    ref = _recompute_errors(newest, ase.io.read(tiny_run.train_xyz, ":"))
    np.testing.assert_allclose(lg.read_epoch(n), ref, atol=2e-5, rtol=1e-5)


def test_resume_fills_one_missing_epoch_and_refuses_gaps(tiny_run, tmp_path):
    cb = LTAUErrorLogger(out_dir=tmp_path / "log")
    _fit_inprocess(tiny_run.train_xyz, tiny_run.val_xyz, tmp_path, [cb], max_epochs=2)
    lg = ErrorLog.open(tmp_path / "log")
    lost = np.array(lg.read_epoch(1))
    # a crash between checkpointing and logging epoch 1: the epoch file is missing
    (tmp_path / "log" / "member_000" / "epoch_000001.npy").unlink()
    ckpt = tmp_path / "last.ckpt"
    resumed = tmp_path / "resumed.ckpt"
    shutil.copy(ckpt, resumed)
    _fit_inprocess(tiny_run.train_xyz, tiny_run.val_xyz, tmp_path,
                   [LTAUErrorLogger(out_dir=tmp_path / "log")], max_epochs=3, ckpt_path=resumed)
    lg = ErrorLog.open(tmp_path / "log")
    assert lg.epochs(0) == [0, 1, 2]
    np.testing.assert_allclose(lg.read_epoch(1), lost, atol=1e-6)
    # resuming into an empty log would leave epochs 0..2 missing
    with pytest.raises(LTAUError, match="gap"):
        _fit_inprocess(tiny_run.train_xyz, tiny_run.val_xyz, tmp_path,
                       [LTAUErrorLogger(out_dir=tmp_path / "fresh")], max_epochs=4,
                       ckpt_path=resumed)


# ---------------------------------------------------------------------- bad data
def test_bad_data_and_foreign_log_raise(tiny_run, tmp_path):
    frames = ase.io.read(tiny_run.train_xyz, ":")
    stripped = []
    for i, a in enumerate(frames[:8]):
        b = Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc)
        res = {"energy": a.get_potential_energy()}
        if i != 5:
            res["forces"] = a.get_forces()
        b.calc = SinglePointCalculator(b, **res)
        stripped.append(b)
    bad = tmp_path / "no_forces.xyz"
    ase.io.write(bad, stripped)
    with pytest.raises(DataError, match=r"frame 5 has no reference 'forces'"):
        _fit_inprocess(bad, tiny_run.val_xyz, tmp_path, [LTAUErrorLogger(out_dir=tmp_path / "l")])
    with pytest.raises(ValueError, match="mode"):
        LTAUErrorLogger(mode="fast")
    # an out_dir holding the log of another training set is refused before training
    foreign = ErrorLog.create(tmp_path / "foreign", species=[29, 29], frame_offsets=[0, 2],
                              ref_force_norm=[1.0, 1.0])
    with pytest.raises(ArtifactError, match="another dataset"):
        _fit_inprocess(tiny_run.train_xyz, tiny_run.val_xyz, tmp_path,
                       [LTAUErrorLogger(out_dir=foreign.path)])


# ---------------------------------------------------------------------- DDP
def test_ddp_two_cpu_processes_log_every_atom_once(tiny_run, tmp_path):
    """nequip-train with DDP (2 CPU processes, gloo) and lr = 0: both modes must log every
    training atom of every epoch with the value a single process computes from the saved
    weights (frames are sharded / shuffled across ranks and gathered on rank 0)."""
    cfg = toy.tiny_config(tiny_run.train_xyz, tiny_run.val_xyz, lr=0.0, max_epochs=2,
                          loggers=[{"mode": "eval"},
                                   {"mode": "train",
                                    "out_dir": "${hydra:runtime.output_dir}/ltau_log_train"}],
                          trainer={"strategy": "ddp", "devices": 2})
    config = toy.write_config(cfg, tmp_path / "ddp.yaml")
    run = tmp_path / "run"
    toy.nequip_train(config, run, threads=1)
    assert (run / "train_ddp_process_1.log").exists()  # really two processes
    ref = _recompute_errors(run / "last.ckpt", ase.io.read(tiny_run.train_xyz, ":"))
    single = ErrorLog.open(tiny_run.log_dir)
    for name in ("ltau_log", "ltau_log_train"):
        lg = ErrorLog.open(run / name)
        assert lg.fingerprint == single.fingerprint  # same atoms, same order as 1 process
        assert lg.epochs(0) == [0, 1], name
        for e in (0, 1):
            np.testing.assert_allclose(lg.read_epoch(e), ref, atol=2e-5, rtol=1e-5)


def test_tiny_config_cosine_schedule_reaches_lr_min_through_nequip(tmp_path):
    """``lr_min`` becomes a scheduler that nequip's own ``configure_optimizers`` builds: the
    learning rate decays from ``lr`` to ``lr_min`` over ``max_epochs`` (cosine)."""
    from types import SimpleNamespace

    import torch
    from nequip.train import NequIPLightningModule

    epochs, lr, lr_min = 6, 0.01, 1e-4
    cfg = toy.tiny_config(tmp_path / "t.xyz", tmp_path / "v.xyz", max_epochs=epochs, lr=lr,
                          lr_min=lr_min)
    mod = cfg["training_module"]
    fake = SimpleNamespace(optimizer_config=mod["optimizer"],
                           lr_scheduler_config=mod["lr_scheduler"], model=torch.nn.Linear(2, 2))
    built = NequIPLightningModule.configure_optimizers(fake)
    opt, sched = built["optimizer"], built["lr_scheduler"]["scheduler"]
    assert built["lr_scheduler"]["interval"] == "epoch"
    seen = []
    for _ in range(epochs):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [lr_min + (lr - lr_min) * (1 + np.cos(np.pi * t / epochs)) / 2
                for t in range(epochs)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_min)
    assert "lr_scheduler" not in toy.tiny_config(tmp_path / "t.xyz", tmp_path / "v.xyz")[
        "training_module"]
