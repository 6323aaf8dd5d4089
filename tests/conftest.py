"""Shared fixtures.

``tiny_run`` (session scope): EMT toy data, two tiny NequIP ensemble members trained with real
``nequip-train`` (the LTAU error-logging callback enabled from YAML), and an LTAU estimator
fitted from both. Use it for anything that needs a real trained NequIP model.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class TinyRun:
    """Artifacts of the tiny NequIP runs (all paths absolute).

    train_xyz / val_xyz: EMT extxyz (species H, O, Cu; energy, forces, stress).
    run_dir: member 0's nequip-train run dir (the deployed model); run_dirs: both members.
    checkpoint: ``run_dir/last.ckpt`` (EMA weights are used when loaded for inference).
    log_dir: member 0's error log (mode "eval"); log_dirs: both members' eval logs;
    train_log_dir: member 0's second log written in mode "train" in the same run.
    estimator_dir: LTAUEstimator fitted from both members (k=10), indexed by member 0's
    descriptors. max_epochs: epochs per member (= logged epochs).
    """

    root: Path
    train_xyz: Path
    val_xyz: Path
    config: Path
    run_dir: Path
    run_dirs: tuple[Path, ...]
    checkpoint: Path
    log_dir: Path
    log_dirs: tuple[Path, ...]
    train_log_dir: Path
    estimator_dir: Path
    max_epochs: int
    species: tuple[int, ...] = (1, 8, 29)

    @property
    def model_path(self) -> Path:
        return self.checkpoint

    def package(self) -> Path:
        """``nequip-package`` of the checkpoint (built on first call, ~10 s)."""
        out = self.root / "model.nequip.zip"
        if not out.exists():
            exe = Path(sys.executable).with_name("nequip-package")
            tmp = self.root / "building.nequip.zip"
            proc = subprocess.run(
                [str(exe) if exe.exists() else "nequip-package", "build",
                 str(self.checkpoint), str(tmp)],
                capture_output=True, text=True, timeout=600,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"nequip-package failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
            tmp.rename(out)
        return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    from ltau_md.integrations.nequip import fit_from_runs, toy

    root = tmp_path_factory.mktemp("tiny_run")
    train, val = toy.write_emt_dataset(root / "data", n_train=32, n_val=8, seed=0)
    max_epochs = 3
    configs, runs = [], []
    for member, seed in enumerate((1, 2)):
        loggers = [{"mode": "eval", "member": member}]
        if member == 0:
            loggers.append({"mode": "train",
                            "out_dir": "${hydra:runtime.output_dir}/ltau_log_train"})
        cfg = toy.tiny_config(train, val, seed=seed, max_epochs=max_epochs, loggers=loggers)
        configs.append(toy.write_config(cfg, root / f"member{member}.yaml"))
        runs.append(root / f"run{member}")
    # both members train concurrently, one thread each
    with ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(toy.nequip_train, c, r, threads=1)
                for c, r in zip(configs, runs, strict=True)]
        for f in futs:
            f.result()
    est_dir = root / "estimator"
    fit_from_runs(runs, runs[0] / "last.ckpt", est_dir, k=10, progress=False)
    shutil.rmtree(root / "outputs", ignore_errors=True)
    return TinyRun(
        root=root, train_xyz=train, val_xyz=val, config=configs[0], run_dir=runs[0],
        run_dirs=tuple(runs), checkpoint=runs[0] / "last.ckpt", log_dir=runs[0] / "ltau_log",
        log_dirs=tuple(r / "ltau_log" for r in runs),
        train_log_dir=runs[0] / "ltau_log_train", estimator_dir=est_dir,
        max_epochs=max_epochs,
    )
