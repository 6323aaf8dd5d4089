"""Fine-tuning configs derived from a user's ``nequip-train`` config: the same run (data
transforms, loaders, callbacks, optimizer, trainer), another model entry, new data files,
fewer epochs. Used by the UQ heads (:func:`ltau_md.integrations.nequip.heads.finetune_config`)
and the active-learning loop (:mod:`ltau_md.workflows.learn`)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ltau_md.core.exceptions import DataError

__all__ = ["FINETUNE_EMA_DECAY", "derive_config", "from_checkpoint", "read_config"]

#: EMA decay of a fine-tuning run: a few hundred optimizer steps need a short average
FINETUNE_EMA_DECAY = 0.99

_LOGGER = "ltau_md.integrations.nequip.LTAUErrorLogger"
_CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"


def from_checkpoint(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The model entry that builds the model of a nequip-train ``checkpoint``."""
    return {"_target_": "nequip.model.ModelFromCheckpoint",
            "checkpoint_path": str(Path(checkpoint).resolve())}


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """A ``nequip-train`` config as a dict (e.g. a run's ``.hydra/config.yaml``), its
    ``${...}`` interpolations kept for nequip-train to resolve."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"nequip-train config {path} does not exist")
    cfg = yaml.safe_load(path.read_text())
    if not isinstance(cfg, dict) or not isinstance(cfg.get("training_module"), dict) \
            or not isinstance(cfg.get("trainer"), dict) or not isinstance(cfg.get("data"), dict):
        raise DataError(f"{path} is not a nequip-train config (it needs data, trainer and "
                        "training_module sections)")
    return cfg


def derive_config(config: dict[str, Any], model: dict[str, Any], *, max_epochs: int,
                  lr: float, train_file: str | os.PathLike | None = None,
                  val_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """``config`` (not modified) with ``model`` as ``training_module.model``, ``max_epochs``
    epochs at learning rate ``lr``, EMA decay :data:`FINETUNE_EMA_DECAY` where it has EMA,
    ``last.ckpt`` written after every epoch (so a killed run resumes) and the LTAU error
    logger on (added in eval mode if absent); with ``train_file``/``val_file`` the data come
    from those files (replacing a ``split_dataset``)."""
    cfg = copy.deepcopy(config)
    module = cfg["training_module"]
    module["model"] = model
    module.setdefault("optimizer", {"_target_": "torch.optim.Adam"})["lr"] = float(lr)
    if "ema_decay" in module:
        module["ema_decay"] = FINETUNE_EMA_DECAY
    trainer = cfg["trainer"]
    trainer["max_epochs"] = int(max_epochs)
    callbacks = trainer.setdefault("callbacks", [])
    if not any(str(c.get("_target_", "")).endswith("ModelCheckpoint") for c in callbacks):
        from ltau_md.integrations.nequip.toy import CHECKPOINT_EVERY_EPOCH

        callbacks.insert(0, {"_target_": _CHECKPOINT, "dirpath": "${hydra:runtime.output_dir}",
                             **CHECKPOINT_EVERY_EPOCH})
    if not any(c.get("_target_") == _LOGGER for c in callbacks):
        callbacks.append({"_target_": _LOGGER, "mode": "eval",
                          "out_dir": "${hydra:runtime.output_dir}/ltau_log"})
    if train_file is not None or val_file is not None:
        data = cfg["data"]
        data.pop("split_dataset", None)
        if train_file is not None:
            data["train_file_path"] = str(Path(train_file).resolve())
        if val_file is not None:
            data["val_file_path"] = str(Path(val_file).resolve())
    return cfg
