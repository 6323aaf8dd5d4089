"""Loss terms of the UQ heads, as nequip metrics: entries of a ``MetricsManager`` with
``field: null`` (they read several output fields of the model at once)."""

from __future__ import annotations

import math

import torch
from nequip.data import AtomicDataDict
from torchmetrics import Metric

from ltau_md.integrations.nequip.heads._modules import (
    ENERGY_VARIANCE_KEY,
    EVIDENTIAL_KEY,
    FORCE_VARIANCE_KEY,
    HEAD_ENERGIES_KEY,
    HEAD_FORCES_KEY,
    MIN_VARIANCE,
)

__all__ = ["EnergyNLL", "EvidentialForceLoss", "ForceNLL", "gaussian_nll", "nig_nll"]

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_nll(y: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Elementwise negative log-likelihood of ``y`` under N(mean, var)."""
    return 0.5 * (_LOG_2PI + torch.log(var) + (y - mean) ** 2 / var)


def nig_nll(y: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, alpha: torch.Tensor,
            beta: torch.Tensor) -> torch.Tensor:
    """Elementwise negative log-likelihood of ``y`` under the normal-inverse-gamma evidential
    distribution (Amini et al. 2020, eq. 8): a Student-t with 2 alpha degrees of freedom,
    location gamma and scale^2 beta (1 + nu) / (nu alpha)."""
    omega = 2.0 * beta * (1.0 + nu)
    return (0.5 * torch.log(math.pi / nu) - alpha * torch.log(omega)
            + (alpha + 0.5) * torch.log(nu * (y - gamma) ** 2 + omega)
            + torch.lgamma(alpha) - torch.lgamma(alpha + 0.5))


class _MeanLoss(Metric):
    """Mean of an elementwise loss over every element of every batch seen."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64),
                       dist_reduce_fx="sum")

    def elementwise(self, preds: AtomicDataDict.Type, target: AtomicDataDict.Type
                    ) -> torch.Tensor:
        raise NotImplementedError

    def update(self, preds: AtomicDataDict.Type, target: AtomicDataDict.Type) -> None:
        loss = self.elementwise(preds, target)
        self.total = self.total + loss.to(torch.float64).sum()
        self.count = self.count + loss.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


def _missing(name: str, keys: str) -> KeyError:
    return KeyError(f"{name} needs the model output {keys}: use it with the matching builder "
                    "of ltau_md.integrations.nequip.heads")


class ForceNLL(_MeanLoss):
    """Gaussian negative log-likelihood of the reference force components, per component,
    averaged (nats). Mean: the model's forces; variance: the variance over a shallow
    ensemble's heads (population, as ``force_std``) or a mean-variance head's prediction.

    ``isotropic`` (default): one variance per atom for its three components, the heads'
    variance averaged over x, y, z, which is the Gaussian the signal (``force_std``-like,
    sqrt of the summed variance) stands for. Per-component variances (False) let the
    likelihood be set by each atom's least spread direction: fine-tuned on acetylacetone
    with them, the heads' spread came out 1.4x too wide for the errors (miscalibration area
    0.19 on the validation frames, 0.06 isotropic; benchmarks/acac_heads.py settings)."""

    def __init__(self, isotropic: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.isotropic = bool(isotropic)

    def elementwise(self, preds, target):
        y = target[AtomicDataDict.FORCE_KEY]
        if HEAD_FORCES_KEY in preds:
            f = preds[HEAD_FORCES_KEY]  # (n, M, 3)
            mean, var = f.mean(dim=1), f.var(dim=1, unbiased=False)
            if self.isotropic:
                var = var.mean(dim=-1, keepdim=True).expand_as(var)
        elif FORCE_VARIANCE_KEY in preds:
            mean = preds[AtomicDataDict.FORCE_KEY]
            var = preds[FORCE_VARIANCE_KEY].expand_as(mean)
        else:
            raise _missing("ForceNLL", f"{HEAD_FORCES_KEY} or {FORCE_VARIANCE_KEY}")
        return gaussian_nll(y.to(mean.dtype), mean, var + MIN_VARIANCE)

    def __str__(self) -> str:
        return "force_nll"


class EnergyNLL(_MeanLoss):
    """Gaussian negative log-likelihood of the reference energy per atom (eV/atom), per
    frame, averaged (nats). Variance: over a shallow ensemble's heads or a mean-variance
    head's prediction, divided by the atom count squared."""

    def elementwise(self, preds, target):
        y = target[AtomicDataDict.TOTAL_ENERGY_KEY].view(-1)
        n = target[AtomicDataDict.NUM_NODES_KEY].view(-1)  # atoms per frame
        if HEAD_ENERGIES_KEY in preds:
            e = preds[HEAD_ENERGIES_KEY]
            mean, var = e.mean(dim=1), e.var(dim=1, unbiased=False)
        elif ENERGY_VARIANCE_KEY in preds:
            mean = preds[AtomicDataDict.TOTAL_ENERGY_KEY].view(-1)
            var = preds[ENERGY_VARIANCE_KEY].view(-1)
        else:
            raise _missing("EnergyNLL", f"{HEAD_ENERGIES_KEY} or {ENERGY_VARIANCE_KEY}")
        n = n.to(mean.dtype)
        return gaussian_nll(y.to(mean.dtype) / n, mean / n, var / n**2 + MIN_VARIANCE)

    def __str__(self) -> str:
        return "energy_nll"


class EvidentialForceLoss(_MeanLoss):
    """Deep evidential regression loss of the force components (Amini et al. 2020): the
    normal-inverse-gamma NLL plus ``coeff`` times the evidence regulariser
    |F_ref - F| (2 nu + alpha), per component, averaged."""

    def __init__(self, coeff: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        if not coeff >= 0:
            raise ValueError(f"coeff must be >= 0, got {coeff}")
        self.coeff = float(coeff)

    def elementwise(self, preds, target):
        if EVIDENTIAL_KEY not in preds:
            raise _missing("EvidentialForceLoss", EVIDENTIAL_KEY)
        gamma = preds[AtomicDataDict.FORCE_KEY]
        y = target[AtomicDataDict.FORCE_KEY].to(gamma.dtype)
        nu, alpha, beta = (preds[EVIDENTIAL_KEY][:, i:i + 1].expand_as(gamma)
                           for i in range(3))
        reg = (y - gamma).abs() * (2.0 * nu + alpha)
        return nig_nll(y, gamma, nu, alpha, beta) + self.coeff * reg

    def __str__(self) -> str:
        return "evidential_force_loss"
