"""Toy EMT data and tiny ``nequip-train`` configs (tests, examples, benchmarks).

The data are small Cu systems labelled with ASE's EMT potential: periodic fcc bulk cells
(random strain, rattled) and Cu(111) slabs with an O or H adsorbate (periodic box with vacuum,
rattled). Every frame carries energy (eV), forces (eV/A) and stress (eV/A^3).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

__all__ = [
    "fit_inprocess",
    "make_emt_frames",
    "write_emt_dataset",
    "tiny_config",
    "write_config",
    "nequip_train",
    "nequip_train_command",
]

#: ModelCheckpoint arguments that rewrite ``last.ckpt`` (atomically) after every epoch, so a
#: killed run can be resumed from it (``save_last`` with ``save_top_k=0`` writes it only when
#: training ends)
CHECKPOINT_EVERY_EPOCH: dict[str, Any] = {"filename": "last", "save_top_k": 1,
                                          "every_n_epochs": 1}

#: adsorption heights (A) near the EMT minimum above the fcc hollow site
_ADS_HEIGHT = {"O": 1.5, "H": 1.75}


def make_emt_frames(n_bulk: int = 16, n_slab: int = 24, *, rattle: float = 0.08,
                    seed: int = 0) -> list[Atoms]:
    """EMT-labelled frames: ``n_bulk`` Cu fcc bulk cells (8 atoms) then ``n_slab`` Cu(111)
    2x2x3 slabs with one adsorbate (O and H alternating, 13 atoms). Positions are rattled by
    a Gaussian of ``rattle`` A; bulk cells get a random +-3 % lattice strain."""
    from ase.build import add_adsorbate, bulk, fcc111
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    raw: list[Atoms] = []
    for _ in range(n_bulk):
        a0 = 3.6 * (1.0 + rng.uniform(-0.03, 0.03))
        atoms = bulk("Cu", "fcc", a=a0, cubic=True).repeat((2, 1, 1))
        atoms.rattle(rattle, seed=int(rng.integers(2**31)))
        raw.append(atoms)
    for i in range(n_slab):
        ads = "O" if i % 2 == 0 else "H"
        slab = fcc111("Cu", size=(2, 2, 3), vacuum=5.0, periodic=True)
        height = _ADS_HEIGHT[ads] + rng.uniform(-0.15, 0.15)
        add_adsorbate(slab, ads, height, "fcc")
        slab.info.pop("adsorbate_info", None)
        slab.pbc = True
        slab.rattle(rattle, seed=int(rng.integers(2**31)))
        raw.append(slab)
    out = []
    for atoms in raw:
        atoms.calc = EMT()
        res = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
               "stress": atoms.get_stress()}
        labelled = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        labelled.calc = SinglePointCalculator(labelled, **res)
        out.append(labelled)
    return out


def nequip_forces(model_file: str | os.PathLike, structures: Sequence[Atoms]) -> list[np.ndarray]:
    """Forces (eV/A) of ``structures`` from nequip's own ASE calculator on a checkpoint or
    package (independent of ltau-md's model wrapper: the reference tests compare with)."""
    from nequip.integrations.ase import NequIPCalculator

    calc = NequIPCalculator._from_saved_model(str(model_file), device="cpu",
                                              chemical_species_to_atom_type_map=True)
    out = []
    for a in structures:
        b = Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc)
        b.calc = calc
        out.append(b.get_forces())
    return out


def write_emt_dataset(directory: str | os.PathLike, *, n_train: int = 32, n_val: int = 8,
                      seed: int = 0) -> tuple[Path, Path]:
    """Write ``train.xyz`` and ``val.xyz`` (extxyz) of EMT frames into ``directory``.

    Frames are shuffled before the split, so both sets mix bulk and slab frames."""
    import ase.io

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n = n_train + n_val
    n_bulk = n * 2 // 5
    frames = make_emt_frames(n_bulk=n_bulk, n_slab=n - n_bulk, seed=seed)
    order = np.random.default_rng(seed + 1).permutation(n)
    frames = [frames[i] for i in order]
    train, val = directory / "train.xyz", directory / "val.xyz"
    ase.io.write(train, frames[:n_train], format="extxyz")
    ase.io.write(val, frames[n_train:], format="extxyz")
    return train, val


def tiny_config(
    train_file: str | os.PathLike,
    val_file: str | os.PathLike,
    *,
    type_names: Sequence[str] = ("H", "O", "Cu"),
    seed: int = 1,
    max_epochs: int = 3,
    r_max: float = 4.5,
    num_features: int = 8,
    num_layers: int = 2,
    l_max: int = 1,
    batch_size: int = 4,
    lr: float = 0.01,
    lr_min: float | None = None,
    ema: bool = True,
    loggers: Sequence[dict[str, Any]] | None = ({"mode": "eval"},),
    extra_callbacks: Sequence[dict[str, Any]] = (),
    trainer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete ``nequip-train`` config (as a dict) for a tiny NequIP on ASE-readable files.

    ``loggers``: keyword arguments of one :class:`~ltau_md.integrations.nequip.LTAUErrorLogger` each
    (default: one in ``eval`` mode writing to ``${hydra:runtime.output_dir}/ltau_log``).
    Checkpoints: ``last.ckpt`` in the hydra run dir, rewritten after every epoch
    (:data:`CHECKPOINT_EVERY_EPOCH`). Frames without forces are refused by
    :class:`~ltau_md.integrations.nequip.transforms.RequireForces`, the first data transform.
    ``trainer`` entries override the ``lightning.Trainer`` arguments. ``lr_min``: cosine
    decay of the learning rate from ``lr`` to ``lr_min`` over ``max_epochs`` (None: constant).
    """
    type_names = list(type_names)
    callbacks: list[dict[str, Any]] = [
        {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
         "dirpath": "${hydra:runtime.output_dir}", **CHECKPOINT_EVERY_EPOCH},
    ]
    for kw in loggers or ():
        callbacks.append({"_target_": "ltau_md.integrations.nequip.LTAUErrorLogger", **kw})
    callbacks.extend(extra_callbacks)
    trainer_cfg: dict[str, Any] = {
        "_target_": "lightning.Trainer",
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": max_epochs,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "num_sanity_val_steps": 0,
        "callbacks": callbacks,
    }
    trainer_cfg.update(trainer or {})
    module: dict[str, Any] = {
        "_target_": f"nequip.train.{'EMALightningModule' if ema else 'NequIPLightningModule'}",
        "loss": {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True,
                 "coeffs": {"total_energy": 1.0, "forces": 1.0}},
        "val_metrics": {"_target_": "nequip.train.EnergyForceMetrics",
                        "coeffs": {"total_energy_mae": 1.0, "forces_mae": 1.0}},
        "optimizer": {"_target_": "torch.optim.Adam", "lr": lr},
        "model": {
            "_target_": "nequip.model.NequIPGNNModel",
            "seed": seed,
            "model_dtype": "float32",
            "type_names": type_names,
            "r_max": r_max,
            "l_max": l_max,
            "parity": False,
            "num_layers": num_layers,
            "num_features": num_features,
            "radial_mlp_depth": 1,
            "radial_mlp_width": 16,
            "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
            "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
            "per_type_energy_scales": "${training_data_stats:forces_rms}",
        },
    }
    if lr_min is not None:
        module["lr_scheduler"] = {
            "scheduler": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
                          "T_max": max_epochs, "eta_min": lr_min},
            "interval": "epoch", "frequency": 1}
    if ema:
        module["ema_decay"] = 0.9
    return {
        "run": ["train"],
        "seed": seed,
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": seed,
            "train_file_path": str(Path(train_file).resolve()),
            "val_file_path": str(Path(val_file).resolve()),
            "transforms": [
                {"_target_": "ltau_md.integrations.nequip.transforms.RequireForces"},
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                 "model_type_names": type_names},
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": r_max},
            ],
            "train_dataloader": {"_target_": "torch.utils.data.DataLoader",
                                 "batch_size": batch_size, "shuffle": True},
            "val_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": 16},
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager",
                              "type_names": type_names},
        },
        "trainer": trainer_cfg,
        "training_module": module,
        "global_options": {"allow_tf32": False},
    }


def write_config(config: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a config dict as YAML (``${...}`` interpolations are kept verbatim)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def nequip_train_command(config_path: str | os.PathLike, run_dir: str | os.PathLike,
                         overrides: Sequence[str] = (), *, threads: int | None = None,
                         ) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` of a ``nequip-train`` run of ``config_path`` with hydra run dir
    ``run_dir`` (see :func:`nequip_train`; for callers that start the process themselves)."""
    config_path = Path(config_path).resolve()
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    exe = Path(sys.executable).with_name("nequip-train")
    cmd = [str(exe) if exe.exists() else "nequip-train", "-cp", str(config_path.parent),
           "-cn", config_path.stem, f"hydra.run.dir={Path(run_dir).resolve()}", *overrides]
    return cmd, env


def nequip_train(config_path: str | os.PathLike, run_dir: str | os.PathLike,
                 overrides: Sequence[str] = (), *, threads: int | None = None,
                 timeout: float | None = 600, check: bool = True,
                 ) -> subprocess.CompletedProcess:
    """Run ``nequip-train`` on ``config_path`` with hydra run dir ``run_dir``.

    The repository holding this ``ltau_md`` is put on ``PYTHONPATH`` so the callback's
    ``_target_`` resolves in the child process. ``threads`` sets ``OMP_NUM_THREADS``. Raises
    RuntimeError with the output tail if the run fails and ``check`` is set."""
    cmd, env = nequip_train_command(config_path, run_dir, overrides, threads=threads)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        raise RuntimeError(f"nequip-train failed (exit {proc.returncode}):\n{tail}")
    return proc


def fit_inprocess(
    train_file: str | os.PathLike,
    val_file: str | os.PathLike,
    root: str | os.PathLike,
    callbacks: Sequence[Any] = (),
    *,
    type_names: Sequence[str] = ("H", "O", "Cu"),
    max_epochs: int = 2,
    lr: float = 0.01,
    batch_size: int = 4,
    num_features: int = 8,
    num_layers: int = 2,
    r_max: float = 4.5,
    seed: int = 3,
    ckpt_path: str | os.PathLike | None = None,
    checkpoint: bool = True,
    threads: int | None = 1,
) -> tuple[Any, Any]:
    """Train a tiny NequIP in this process with nequip's ``ASEDataModule`` and
    ``EMALightningModule`` and a plain ``lightning.Trainer`` (what ``nequip-train`` builds from
    YAML, without hydra; data statistics are fixed numbers). ``last.ckpt`` goes to ``root``
    after every epoch when ``checkpoint``. ``threads`` limits torch threads during the fit
    (restored after).
    Returns ``(trainer, module)``."""
    import lightning
    import torch
    from nequip.data.datamodule import ASEDataModule
    from nequip.train import EMALightningModule
    from nequip.utils import get_current_code_versions
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)
    type_names = list(type_names)
    dm = ASEDataModule(
        seed=1, train_file_path=str(train_file), val_file_path=str(val_file),
        transforms=[
            {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
             "model_type_names": type_names},
            {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": r_max},
        ],
        train_dataloader={"_target_": "torch.utils.data.DataLoader", "batch_size": batch_size,
                          "shuffle": True},
        val_dataloader={"_target_": "torch.utils.data.DataLoader", "batch_size": 16},
    )
    module = EMALightningModule(
        ema_decay=0.9,
        model={"_target_": "nequip.model.NequIPGNNModel", "seed": seed,
               "model_dtype": "float32", "type_names": type_names, "r_max": r_max,
               "l_max": 1, "parity": False, "num_layers": num_layers,
               "num_features": num_features, "radial_mlp_depth": 1, "radial_mlp_width": 16,
               "avg_num_neighbors": 28.0, "per_type_energy_shifts": 0.2,
               "per_type_energy_scales": 0.8},
        num_datasets=dm.num_datasets,
        optimizer={"_target_": "torch.optim.Adam", "lr": lr},
        loss={"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True,
              "coeffs": {"total_energy": 1.0, "forces": 1.0}},
        val_metrics={"_target_": "nequip.train.EnergyForceMetrics",
                     "coeffs": {"total_energy_mae": 1.0, "forces_mae": 1.0}},
        # what nequip-train stores, so that the checkpoint loads for inference
        info_dict={"versions": get_current_code_versions(verbose=False),
                   "training_module": {"_target_": "nequip.train.EMALightningModule"}},
    )
    cbs = list(callbacks)
    if checkpoint:
        cbs.append(lightning.pytorch.callbacks.ModelCheckpoint(
            dirpath=root, **CHECKPOINT_EVERY_EPOCH))
    trainer = lightning.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        inference_mode=False, default_root_dir=root, callbacks=cbs,
        enable_checkpointing=checkpoint,
    )
    n_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    finally:
        torch.set_num_threads(n_threads)
    return trainer, module
