"""The fine-tuning protocol as a config: a user's ``nequip-train`` config turned into one that
trains UQ heads on a trained checkpoint."""

from __future__ import annotations

import os
from typing import Any

from ltau_md.integrations.nequip.finetune import derive_config

__all__ = ["HEAD_METHODS", "finetune_config", "head_loss", "head_model"]

_PKG = "ltau_md.integrations.nequip.heads"

#: method name (its signal's name in :data:`~ltau_md.core.model.MODEL_SIGNALS`) -> (model
#: builder, loss metrics) of the heads
HEAD_METHODS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "shallow_ensemble": (f"{_PKG}.ShallowEnsembleModel",
                         (("energy_nll", f"{_PKG}.EnergyNLL"), ("force_nll", f"{_PKG}.ForceNLL"))),
    "mve": (f"{_PKG}.MeanVarianceModel",
            (("energy_nll", f"{_PKG}.EnergyNLL"), ("force_nll", f"{_PKG}.ForceNLL"))),
    "evidential": (f"{_PKG}.EvidentialModel",
                   (("evidential_force_loss", f"{_PKG}.EvidentialForceLoss"),)),
}

def _method(method: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    if method not in HEAD_METHODS:
        raise ValueError(f"unknown head method {method!r}; known: {sorted(HEAD_METHODS)}")
    return HEAD_METHODS[method]


def head_loss(method: str) -> dict[str, Any]:
    """The ``MetricsManager`` config of ``method``'s loss (every term weighted 1), with the
    force MAE monitored (no weight)."""
    metrics = [{"name": name, "metric": {"_target_": target}, "coeff": 1.0}
               for name, target in _method(method)[1]]
    metrics.append({"name": "forces_mae", "field": "forces",
                    "metric": {"_target_": "nequip.train.MeanAbsoluteError"}})
    return {"_target_": "nequip.train.MetricsManager", "metrics": metrics}


def head_model(method: str, checkpoint: str | os.PathLike, *, seed: Any, model_dtype: Any,
               type_names: Any, r_max: Any, **options: Any) -> dict[str, Any]:
    """The model config of ``method``'s heads on the model of ``checkpoint`` (its backbone
    frozen); ``options`` go to the builder (e.g. ``n_heads``)."""
    return {"_target_": _method(method)[0], "seed": seed, "model_dtype": model_dtype,
            "type_names": type_names, "r_max": r_max, **options,
            "model": {"_target_": "nequip.model.ModelFromCheckpoint",
                      "checkpoint_path": str(checkpoint)}}


def finetune_config(config: dict[str, Any], checkpoint: str | os.PathLike, method: str, *,
                    max_epochs: int, lr: float, **options: Any) -> dict[str, Any]:
    """``config`` (a ``nequip-train`` config dict, e.g. the one that trained ``checkpoint``)
    made to fine-tune ``method``'s heads on ``checkpoint``: the model becomes
    :func:`head_model` (backbone frozen; ``options`` to the builder; seed, dtype, type names
    and cutoff taken from the original model entry), loss and validation metrics the
    method's (:func:`head_loss`: the validation NLL drives the scheduler), the rest as
    :func:`~ltau_md.integrations.nequip.finetune.derive_config` makes it (``max_epochs`` at
    ``lr``, short EMA, checkpoint every epoch, the LTAU error logger). ``config`` is not
    modified."""
    old = config["training_module"]["model"]
    missing = [k for k in ("seed", "model_dtype", "type_names", "r_max") if k not in old]
    if missing:
        raise ValueError(f"the config's training_module.model lacks {missing}: give them "
                         "(the trained model's values)")
    model = head_model(method, checkpoint, seed=old["seed"], model_dtype=old["model_dtype"],
                       type_names=old["type_names"], r_max=old["r_max"], **options)
    cfg = derive_config(config, model, max_epochs=max_epochs, lr=lr)
    cfg["training_module"]["loss"] = head_loss(method)
    cfg["training_module"]["val_metrics"] = head_loss(method)
    return cfg
