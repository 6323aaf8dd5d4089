"""The torch modules of the UQ heads: what each builder puts in place of, or beside, NequIP's
per-atom energy readout, and the output fields they write (units: eV, eV/A)."""

from __future__ import annotations

import copy

import torch
from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin
from nequip.nn.mlp import ScalarMLPFunction

__all__ = [
    "ENERGY_VARIANCE_KEY",
    "EVIDENTIAL_KEY",
    "FORCE_VARIANCE_KEY",
    "HEAD_ENERGIES_KEY",
    "HEAD_FORCES_KEY",
    "HEAD_FORCE_MODES",
    "EvidentialHead",
    "HeadsReadout",
    "ShallowEnsembleEnergy",
    "VarianceHead",
    "evidential_parameters",
]

#: (frames, M) total energy of every head, eV
HEAD_ENERGIES_KEY = "ltau_head_total_energies"
#: (atoms, M, 3) forces of every head, eV/A (conservative: minus the gradient of its energy)
HEAD_FORCES_KEY = "ltau_head_forces"
#: (atoms, 1) predicted variance of each force component, (eV/A)^2 (mean-variance head)
FORCE_VARIANCE_KEY = "ltau_force_variance"
#: (frames, 1) predicted variance of the total energy, eV^2 (mean-variance head)
ENERGY_VARIANCE_KEY = "ltau_total_energy_variance"
#: (atoms, 3) normal-inverse-gamma parameters (nu, alpha, beta) of each atom's force
#: components (evidential head; gamma is the model's force)
EVIDENTIAL_KEY = "ltau_evidential"

#: how a shallow ensemble computes its heads' forces: "batched" (one vectorised backward
#: pass over the M heads), "loop" (M backward passes), "none" (no head forces: energies only)
HEAD_FORCE_MODES = ("batched", "loop", "none")

#: smallest predicted variance, (eV/A)^2 or eV^2: keeps a Gaussian NLL finite
MIN_VARIANCE = 1e-8


class HeadsReadout(GraphModuleMixin, torch.nn.Module):
    """M copies of a trained per-atom energy readout, each perturbed: node features (n, D) ->
    per-atom energies (n, M), before NequIP's per-type scale and shift.

    ``init_noise``: each head's weights are the readout's plus Gaussian noise of this
    standard deviation relative to the RMS of the readout's weights (heads must differ for
    their spread to carry information; the NLL fine-tuning sets how much)."""

    def __init__(self, readout: torch.nn.Module, n_heads: int, init_noise: float):
        super().__init__()
        self.field = readout.field
        self.out_field = readout.out_field
        self._init_irreps(irreps_in=readout.irreps_in, irreps_out=dict(readout.irreps_out))
        base = readout.mlp_module
        heads = []
        for _ in range(n_heads):
            h = copy.deepcopy(base)
            with torch.no_grad():
                for p in h.parameters():
                    p.requires_grad_(True)  # trained even when the copied readout is frozen
                    rms = p.detach().pow(2).mean().sqrt().clamp_min(1e-12)
                    p.add_(torch.randn_like(p) * init_noise * rms)
            heads.append(h)
        self.heads = torch.nn.ModuleList(heads)

    @property
    def n_heads(self) -> int:
        return len(self.heads)

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        x = data[self.field]
        data[self.out_field] = torch.cat([h(x) for h in self.heads], dim=-1)
        return data


class ShallowEnsembleEnergy(GraphModuleMixin, torch.nn.Module):
    """A NequIP energy model whose readout is a :class:`HeadsReadout`: writes the heads'
    total energies (:data:`HEAD_ENERGIES_KEY`), their mean as ``total_energy`` and
    ``per_atom_energy`` (what ``ForceStressOutput`` differentiates, so the model's forces are
    the heads' mean), and each head's forces (:data:`HEAD_FORCES_KEY`) per ``force_mode``.

    Sits inside nequip's ``ForceStressOutput``, where the positions already require
    gradients; the heads' forces are taken with respect to them, keeping the graph for the
    mean's backward (and, in training, for the loss's)."""

    def __init__(self, energy_model: GraphModuleMixin, force_mode: str = "batched"):
        super().__init__()
        if force_mode not in HEAD_FORCE_MODES:
            raise ValueError(f"force_mode must be one of {HEAD_FORCE_MODES}, got {force_mode!r}")
        self.energy_model = energy_model
        self.force_mode = force_mode
        self._init_irreps(irreps_in=energy_model.irreps_in,
                          irreps_out=dict(energy_model.irreps_out))

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        pos = data[AtomicDataDict.POSITIONS_KEY]
        data = self.energy_model(data)
        heads = data[AtomicDataDict.TOTAL_ENERGY_KEY]  # (frames, M)
        data[HEAD_ENERGIES_KEY] = heads
        data[AtomicDataDict.TOTAL_ENERGY_KEY] = heads.mean(dim=-1, keepdim=True)
        data[AtomicDataDict.PER_ATOM_ENERGY_KEY] = data[
            AtomicDataDict.PER_ATOM_ENERGY_KEY].mean(dim=-1, keepdim=True)
        if self.force_mode != "none" and pos.requires_grad:
            data[HEAD_FORCES_KEY] = head_forces(heads, pos, self.force_mode, self.training)
        return data


def head_forces(heads: torch.Tensor, pos: torch.Tensor, mode: str, create_graph: bool
                ) -> torch.Tensor:
    """(n, M, 3) minus the gradient of each column of ``heads`` (frames, M) summed over
    frames with respect to ``pos`` (n, 3); the graph is kept."""
    per_head = heads.sum(dim=0)  # (M,): frames do not share atoms
    m = per_head.shape[0]
    if mode == "batched":
        eye = torch.eye(m, dtype=per_head.dtype, device=per_head.device)
        (g,) = torch.autograd.grad([per_head], [pos], grad_outputs=[eye],
                                   is_grads_batched=True, retain_graph=True,
                                   create_graph=create_graph)
        return -g.transpose(0, 1)
    grads = [torch.autograd.grad([per_head[i]], [pos], retain_graph=True,
                                 create_graph=create_graph)[0] for i in range(m)]
    return -torch.stack(grads, dim=1)


def _scatter_frames(per_atom: torch.Tensor, data: AtomicDataDict.Type) -> torch.Tensor:
    """Sum of ``per_atom`` (n, k) over each frame's atoms: (frames, k)."""
    if AtomicDataDict.BATCH_KEY in data:
        batch = data[AtomicDataDict.BATCH_KEY]
        out = per_atom.new_zeros((AtomicDataDict.num_frames(data), per_atom.shape[1]))
        return out.index_add(0, batch, per_atom)
    return per_atom.sum(dim=0, keepdim=True)


class _FeatureHead(GraphModuleMixin, torch.nn.Module):
    """An MLP (one hidden layer of D SiLU units) on the node features, run after the energy
    model; subclasses turn its ``n_out`` outputs into positive parameters."""

    n_out = 1

    def __init__(self, energy_model: GraphModuleMixin):
        super().__init__()
        self.energy_model = energy_model
        self._init_irreps(irreps_in=energy_model.irreps_in,
                          irreps_out=dict(energy_model.irreps_out))
        d = int(energy_model.irreps_out[AtomicDataDict.NODE_FEATURES_KEY].dim)
        self.head = ScalarMLPFunction(input_dim=d, output_dim=self.n_out,
                                      hidden_layers_depth=1, hidden_layers_width=d,
                                      nonlinearity="silu", bias=True)

    def raw(self, data: AtomicDataDict.Type) -> torch.Tensor:
        x = data[AtomicDataDict.NODE_FEATURES_KEY]
        return self.head(x).to(data[AtomicDataDict.TOTAL_ENERGY_KEY].dtype)


class VarianceHead(_FeatureHead):
    """Mean-variance estimation: per atom, the variance of each force component
    (:data:`FORCE_VARIANCE_KEY`) and a contribution to the total energy's variance, summed
    over the frame's atoms (:data:`ENERGY_VARIANCE_KEY`); both softplus-positive."""

    n_out = 2

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        data = self.energy_model(data)
        var = torch.nn.functional.softplus(self.raw(data)) + MIN_VARIANCE
        data[FORCE_VARIANCE_KEY] = var[:, 1:2]
        data[ENERGY_VARIANCE_KEY] = _scatter_frames(var[:, 0:1], data)
        return data


class EvidentialHead(_FeatureHead):
    """Deep evidential regression (Amini et al. 2020) of the forces: per atom the
    normal-inverse-gamma parameters (nu > 0, alpha > 1, beta > 0) shared by its three force
    components (:data:`EVIDENTIAL_KEY`); the mean gamma is the model's force."""

    n_out = 3

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        data = self.energy_model(data)
        data[EVIDENTIAL_KEY] = evidential_parameters(self.raw(data))
        return data


def evidential_parameters(raw: torch.Tensor) -> torch.Tensor:
    """(n, 3) raw outputs -> (nu, alpha, beta) = (softplus, 1 + softplus, softplus), each
    at least :data:`MIN_VARIANCE` above its bound."""
    sp = torch.nn.functional.softplus(raw) + MIN_VARIANCE
    return torch.cat([sp[:, 0:1], 1.0 + sp[:, 1:2], sp[:, 2:3]], dim=-1)
