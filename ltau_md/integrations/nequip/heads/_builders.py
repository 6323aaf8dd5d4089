"""nequip model builders that add UQ heads to a NequIP model (``_target_`` entries of a
``nequip-train`` config's ``training_module.model``)."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import get_method
from nequip.model.utils import fresh_model_builder_context, model_builder
from nequip.nn import ForceStressOutput, GraphModel

from ltau_md.integrations.nequip.heads._modules import (
    HEAD_FORCE_MODES,
    EvidentialHead,
    HeadsReadout,
    ShallowEnsembleEnergy,
    VarianceHead,
)

__all__ = ["EvidentialModel", "MeanVarianceModel", "ShallowEnsembleModel"]

#: the NequIP module the heads replace or read from (its input: the per-atom features)
READOUT = "per_atom_energy_readout"


def _base_model(model: dict[str, Any], r_max: float, freeze_backbone: bool
                ) -> ForceStressOutput:
    """The force model inside ``model`` (a builder config, e.g. ``nequip.model.NequIPGNNModel``
    or ``nequip.model.ModelFromCheckpoint``), built as a model of its own; its parameters
    frozen when ``freeze_backbone``."""
    if not isinstance(model, dict) or "_target_" not in model:
        raise ValueError("model must be a builder config with a _target_ (e.g. "
                         f"nequip.model.ModelFromCheckpoint), got {model!r}")
    cfg = dict(model)
    builder = get_method(cfg.pop("_target_"))
    with fresh_model_builder_context():
        built = builder(**cfg)
    if isinstance(built, torch.nn.ModuleDict):
        if len(built) != 1:
            raise ValueError(f"model holds {len(built)} models ({list(built)}); UQ heads "
                             "wrap a single model")
        built = next(iter(built.values()))
    if not isinstance(built, GraphModel):
        raise ValueError(f"model built a {type(built).__name__}, not a nequip GraphModel")
    inner_r_max = float(built.metadata.get("r_max", "nan"))
    if inner_r_max != float(r_max):
        raise ValueError(f"r_max {r_max} differs from the wrapped model's {inner_r_max}: give "
                         "the wrapped model's cutoff")
    fso = built.model
    seq = getattr(fso, "func", None)
    if not isinstance(fso, ForceStressOutput) or not hasattr(seq, READOUT):
        raise ValueError(f"the wrapped model is not a NequIP energy model with a {READOUT} "
                         "inside nequip's ForceStressOutput")
    if freeze_backbone:
        for p in fso.parameters():
            p.requires_grad_(False)
    return fso


def _check(n: int, name: str, low: int) -> None:
    if int(n) < low:
        raise ValueError(f"{name} must be >= {low}, got {n}")


@model_builder
def ShallowEnsembleModel(
    model: dict[str, Any],
    r_max: float,
    type_names: list[str],
    n_heads: int = 8,
    init_noise: float = 0.1,
    freeze_backbone: bool = True,
    force_mode: str = "batched",
) -> ForceStressOutput:
    """A shallow ensemble (Kellner & Ceriotti 2024): ``n_heads`` copies of ``model``'s
    per-atom energy readout on its shared backbone; the model's energy and forces are the
    heads' mean, their spread is the uncertainty.

    Train with :class:`~ltau_md.integrations.nequip.heads.ForceNLL` and
    :class:`~ltau_md.integrations.nequip.heads.EnergyNLL` (Gaussian NLL on energies **and**
    forces, Schafer et al. 2025). Fine-tuning protocol: ``model`` is
    ``nequip.model.ModelFromCheckpoint`` of a trained run, ``freeze_backbone`` keeps all its
    weights and only the heads (initialised from its readout, perturbed by ``init_noise``
    relative to the weights' RMS) are trained.

    Parameters
    ----------
    model : builder config of the model to wrap (``_target_`` and its arguments).
    r_max : cutoff radius (A), the wrapped model's.
    type_names : the wrapped model's type names.
    n_heads : M >= 2.
    init_noise : relative perturbation of each head at initialisation (> 0).
    freeze_backbone : train the heads only.
    force_mode : "batched" (one vectorised backward for the M heads' forces), "loop" (M
        backward passes) or "none" (head energies only; no force uncertainty).

    Outputs beside nequip's: ``ltau_head_total_energies`` (frames, M) eV and
    ``ltau_head_forces`` (atoms, M, 3) eV/A.
    """
    _check(n_heads, "n_heads", 2)
    if not init_noise > 0:
        raise ValueError(f"init_noise must be > 0, got {init_noise}")
    if force_mode not in HEAD_FORCE_MODES:
        raise ValueError(f"force_mode must be one of {HEAD_FORCE_MODES}, got {force_mode!r}")
    fso = _base_model(model, r_max, freeze_backbone)
    seq = fso.func
    setattr(seq, READOUT, HeadsReadout(getattr(seq, READOUT), int(n_heads), float(init_noise)))
    return ForceStressOutput(ShallowEnsembleEnergy(seq, force_mode), fso.do_derivatives)


@model_builder
def MeanVarianceModel(
    model: dict[str, Any],
    r_max: float,
    type_names: list[str],
    freeze_backbone: bool = True,
) -> ForceStressOutput:
    """Mean-variance estimation (Nix & Weigend 1994; as compared by Tan et al. 2023): a
    variance head on ``model``'s per-atom features predicts the variance of each atom's
    force components and of the total energy; the mean is ``model`` itself.

    Train with :class:`~ltau_md.integrations.nequip.heads.ForceNLL` and
    :class:`~ltau_md.integrations.nequip.heads.EnergyNLL`; with ``freeze_backbone`` (the
    fine-tuning protocol: ``model`` from a checkpoint) only the head is trained.

    Outputs beside nequip's: ``ltau_force_variance`` (atoms, 1) (eV/A)^2 per component and
    ``ltau_total_energy_variance`` (frames, 1) eV^2.
    """
    fso = _base_model(model, r_max, freeze_backbone)
    return ForceStressOutput(VarianceHead(fso.func), fso.do_derivatives)


@model_builder
def EvidentialModel(
    model: dict[str, Any],
    r_max: float,
    type_names: list[str],
    freeze_backbone: bool = True,
) -> ForceStressOutput:
    """Deep evidential regression of the forces (Amini et al. 2020; as compared by Tan et
    al. 2023): a head on ``model``'s per-atom features predicts the normal-inverse-gamma
    parameters (nu, alpha, beta) of each atom's force components, whose mean is ``model``'s
    force. Train with :class:`~ltau_md.integrations.nequip.heads.EvidentialForceLoss`.

    Output beside nequip's: ``ltau_evidential`` (atoms, 3) = (nu, alpha, beta).
    """
    fso = _base_model(model, r_max, freeze_backbone)
    return ForceStressOutput(EvidentialHead(fso.func), fso.do_derivatives)

