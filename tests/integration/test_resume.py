"""A ``nequip-train`` run killed with SIGKILL resumes from its ``last.ckpt`` (written after
every epoch by the example configs and ``toy.tiny_config``), and the error log ends with every
epoch exactly once: no gap, no duplicate, the checkpointed epochs logged before the kill
unchanged. About 35 s on 2 cores (two nequip-train start-ups)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import yaml

from ltau_md.core.errorlog import ErrorLog
from ltau_md.integrations.nequip import toy

ROOT = Path(__file__).resolve().parents[2]
MAX_EPOCHS = 6


def _epoch_files(log_dir: Path) -> list[str]:
    return sorted(p.name for p in (log_dir / "member_000").iterdir())


def test_example_configs_checkpoint_every_epoch_and_show_progress():
    for name in ("nequip_emt.yaml", "nequip_acac.yaml"):
        cfg = yaml.safe_load((ROOT / "examples" / name).read_text())
        ckpt = [c for c in cfg["trainer"]["callbacks"]
                if c["_target_"].endswith("ModelCheckpoint")]
        assert len(ckpt) == 1, name
        assert {k: ckpt[0].get(k) for k in toy.CHECKPOINT_EVERY_EPOCH} \
            == toy.CHECKPOINT_EVERY_EPOCH, name
        assert not ckpt[0].get("save_last"), name  # not needed: the file is named last
        assert cfg["trainer"]["enable_progress_bar"] is True, name
        assert (cfg["data"]["transforms"][0]["_target_"]
                == "ltau_md.integrations.nequip.transforms.RequireForces")
        # members differ in `seed` only: the data split keeps its own seed, so `seed=2`
        # trains on the same frames (ltau-md fit refuses logs of different training sets)
        assert cfg["data"]["seed"] == "${data_seed}" and "data_seed" in cfg, name
        assert cfg["data_dir"] == "???", name  # must be given (absolute, hydra moves cwd)


def test_sigkill_then_resume_leaves_no_gap_or_duplicate(tmp_path):
    import torch

    train, val = toy.write_emt_dataset(tmp_path / "data", n_train=16, n_val=4, seed=0)
    cfg = toy.write_config(toy.tiny_config(train, val, max_epochs=MAX_EPOCHS),
                           tmp_path / "cfg.yaml")
    run = tmp_path / "run"
    log_dir = run / "ltau_log"
    cmd, env = toy.nequip_train_command(cfg, run, threads=1)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        # Lightning runs checkpoint callbacks last: epoch e is logged, then checkpointed, so
        # once epoch 2 is logged the checkpoint of epoch 1 (at least) is on disk
        while not (log_dir / "member_000" / "epoch_000002.npy").exists():
            assert proc.poll() is None, f"nequip-train ended:\n{proc.stderr.read()[-4000:]}"
            assert time.monotonic() < deadline, "no epoch 2 within 300 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    ckpt = run / "last.ckpt"
    assert ckpt.is_file(), "no last.ckpt after a killed run: it would not be resumable"
    killed_at = torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]
    assert 1 <= killed_at < MAX_EPOCHS - 1
    before = ErrorLog.open(log_dir)
    logged = before.epochs(0)
    assert logged[:3] == [0, 1, 2] and logged == list(range(len(logged)))
    # epochs up to the checkpoint are kept; later ones (logged, not checkpointed) are re-run
    old = {e: np.array(before.read_epoch(e)) for e in logged if e <= killed_at}
    assert list(old) == list(range(killed_at + 1))

    toy.nequip_train(cfg, run, [f"++ckpt_path={ckpt}"], threads=1)

    after = ErrorLog.open(log_dir)
    assert after.epochs(0) == list(range(MAX_EPOCHS))
    # one file per epoch, nothing else (no duplicate, no leftover temporary file)
    assert _epoch_files(log_dir) == [f"epoch_{e:06d}.npy" for e in range(MAX_EPOCHS)]
    for e, errors in old.items():  # epochs finished before the kill are kept as they were
        np.testing.assert_array_equal(after.read_epoch(e), errors)
    final = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert final["epoch"] == MAX_EPOCHS - 1
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["last.ckpt"]
