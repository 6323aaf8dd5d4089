"""Per-atom uncertainty signals (eV/A) from the output fields of a model with UQ heads."""

from __future__ import annotations

import torch

from ltau_md.integrations.nequip.heads._modules import (
    EVIDENTIAL_KEY,
    FORCE_VARIANCE_KEY,
    HEAD_FORCES_KEY,
)

__all__ = ["output_signals"]


def output_signals(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The per-atom signals (n,) of the heads present in ``out``, by their names in
    :data:`~ltau_md.core.model.MODEL_SIGNALS`; each the square root of a predicted force
    variance summed over x, y, z (eV/A), as the ensemble's ``force_std``:

    - ``shallow_ensemble``: the variance over the heads' forces (population);
    - ``mve``: three times the predicted variance of a component;
    - ``evidential``: the epistemic variance beta / (nu (alpha - 1)) of each component,
      times three.
    """
    sig: dict[str, torch.Tensor] = {}
    if HEAD_FORCES_KEY in out:
        f = out[HEAD_FORCES_KEY].detach()
        sig["shallow_ensemble"] = f.var(dim=1, unbiased=False).sum(dim=-1).sqrt()
    if FORCE_VARIANCE_KEY in out:
        sig["mve"] = (3.0 * out[FORCE_VARIANCE_KEY].detach().view(-1)).sqrt()
    if EVIDENTIAL_KEY in out:
        nu, alpha, beta = out[EVIDENTIAL_KEY].detach().unbind(dim=-1)
        sig["evidential"] = (3.0 * beta / (nu * (alpha - 1.0))).sqrt()
    return sig
