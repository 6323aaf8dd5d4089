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
_RUN_DIR = "${hydra:runtime.output_dir}"


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
    logger on in eval mode (added if absent); checkpoints and a logger's ``save_dir`` go to
    the run directory whatever paths ``config`` named, and error loggers writing elsewhere
    are left out; with ``train_file``/``val_file`` the data come from
    those files (replacing a ``split_dataset``)."""
    cfg = copy.deepcopy(config)
    module = cfg["training_module"]
    module["model"] = model
    module.setdefault("optimizer", {"_target_": "torch.optim.Adam"})["lr"] = float(lr)
    if "ema_decay" in module:
        module["ema_decay"] = FINETUNE_EMA_DECAY
    trainer = cfg["trainer"]
    trainer["max_epochs"] = int(max_epochs)
    from ltau_md.integrations.nequip.toy import CHECKPOINT_EVERY_EPOCH

    # every output of the run inside its own directory, whatever paths the original named:
    # checkpoints written there, error logs writing elsewhere left out
    callbacks = []
    for c in trainer.get("callbacks") or []:
        target = str(c.get("_target_", ""))
        if target.endswith("ModelCheckpoint"):
            c = {**c, "dirpath": _RUN_DIR}
        elif target == _LOGGER and not str(c.get("out_dir", _RUN_DIR)).startswith(_RUN_DIR):
            continue
        callbacks.append(c)
    if not any(str(c.get("_target_", "")).endswith("ModelCheckpoint")
               and c.get("filename") == "last" for c in callbacks):
        callbacks.insert(0, {"_target_": _CHECKPOINT, "dirpath": _RUN_DIR,
                             **CHECKPOINT_EVERY_EPOCH})
    if not any(c.get("_target_") == _LOGGER and c.get("mode", "eval") == "eval"
               for c in callbacks):
        callbacks.append({"_target_": _LOGGER, "mode": "eval",
                          "out_dir": f"{_RUN_DIR}/ltau_log"})
    trainer["callbacks"] = callbacks
    logger = trainer.get("logger")
    for entry in (logger if isinstance(logger, list) else [logger]):
        if isinstance(entry, dict) and "save_dir" in entry:
            entry["save_dir"] = _RUN_DIR
    if train_file is not None or val_file is not None:
        data = cfg["data"]
        data.pop("split_dataset", None)
        if train_file is not None:
            data["train_file_path"] = str(Path(train_file).resolve())
        if val_file is not None:
            data["val_file_path"] = str(Path(val_file).resolve())
    return cfg
