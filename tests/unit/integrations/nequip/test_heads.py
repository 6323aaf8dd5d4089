"""UQ heads (ltau_md.integrations.nequip.heads) against hand-computed cases and brute force:
losses against scipy's densities, evidential moments against sampling, head forces against
finite differences, the spread of fixed heads against its closed form, and the calculator's
per-atom signal against a loop over single-head models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.build import molecule
from scipy import stats

from ltau_md.core.baselines import force_std
from ltau_md.core.calculator import LTAUCalculator
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.integrations.nequip import NequIPFeatureModel
from ltau_md.integrations.nequip import heads as H

TYPES = ["H", "C", "O"]
INNER = {"_target_": "nequip.model.NequIPGNNModel", "r_max": 4.0, "num_layers": 2, "l_max": 1,
         "parity": False, "num_features": 8, "radial_mlp_depth": 1, "radial_mlp_width": 16,
         "avg_num_neighbors": 5.0, "per_type_energy_shifts": -1.0,
         "per_type_energy_scales": {"H": 0.7, "C": 1.3, "O": 0.9}}


@pytest.fixture(autouse=True)
def _state():
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)


def build(builder, dtype="float64", **kw):
    return builder(model=dict(INNER), seed=3, model_dtype=dtype, type_names=TYPES, r_max=4.0,
                   **kw).eval()


def fm(model) -> NequIPFeatureModel:
    return NequIPFeatureModel(model)


def batch(model, atoms):
    return fm(model)._batch([atoms])


def atoms():
    a = molecule("CH3CH2OH")
    a.rattle(0.05, seed=1)
    return a


# ------------------------------------------------------------------------------ losses
def test_gaussian_nll_is_minus_the_normal_log_density():
    rng = np.random.default_rng(0)
    y, mu, var = rng.normal(size=50), rng.normal(size=50), rng.uniform(0.01, 2, 50)
    got = H.gaussian_nll(*(torch.tensor(v) for v in (y, mu, var))).numpy()
    np.testing.assert_allclose(got, -stats.norm.logpdf(y, mu, np.sqrt(var)), rtol=1e-12)


def test_nig_nll_is_minus_the_student_t_log_density():
    rng = np.random.default_rng(1)
    y, g = rng.normal(size=40), rng.normal(size=40)
    nu, alpha, beta = rng.uniform(0.1, 3, 40), rng.uniform(1.1, 5, 40), rng.uniform(0.1, 2, 40)
    got = H.nig_nll(*(torch.tensor(v) for v in (y, g, nu, alpha, beta))).numpy()
    scale = np.sqrt(beta * (1 + nu) / (nu * alpha))
    np.testing.assert_allclose(got, -stats.t.logpdf(y, 2 * alpha, g, scale), rtol=1e-10)


@pytest.mark.parametrize("isotropic", [True, False])
def test_force_nll_of_heads_matches_numpy(isotropic):
    rng = np.random.default_rng(2)
    f = rng.normal(size=(6, 4, 3))
    y = rng.normal(size=(6, 3))
    got = H.ForceNLL(isotropic=isotropic)({H.HEAD_FORCES_KEY: torch.tensor(f)},
                                          {"forces": torch.tensor(y)})
    var = f.var(1)  # (atoms, 3) over the heads
    if isotropic:  # one variance per atom: the mean over x, y, z
        var = np.repeat(var.mean(1, keepdims=True), 3, axis=1)
    want = -stats.norm.logpdf(y, f.mean(1), np.sqrt(var + 1e-8)).mean()
    assert float(got) == pytest.approx(want, rel=1e-10)


def test_energy_nll_is_per_atom_and_accumulates_over_batches():
    rng = np.random.default_rng(3)
    metric = H.EnergyNLL()
    ys, means, sds = [], [], []
    for n_atoms in ([3, 5], [4]):
        n = np.array(n_atoms, dtype=float)
        mean, var = rng.normal(size=n.size) * 10, rng.uniform(0.1, 1, n.size)
        y = mean + rng.normal(size=n.size)
        metric.update({"total_energy": torch.tensor(mean)[:, None],
                       H.ENERGY_VARIANCE_KEY: torch.tensor(var)[:, None]},
                      {"total_energy": torch.tensor(y)[:, None],
                       "num_atoms": torch.tensor(n_atoms)})
        ys += list(y / n)
        means += list(mean / n)
        sds += list(np.sqrt(var / n**2 + 1e-8))
    want = -stats.norm.logpdf(ys, means, sds).mean()
    assert float(metric.compute()) == pytest.approx(want, rel=1e-10)


def test_losses_name_the_output_they_miss():
    with pytest.raises(KeyError, match="ltau_head_forces or ltau_force_variance"):
        H.ForceNLL()({"forces": torch.zeros(2, 3)}, {"forces": torch.zeros(2, 3)})
    with pytest.raises(KeyError, match="ltau_evidential"):
        H.EvidentialForceLoss()({"forces": torch.zeros(2, 3)}, {"forces": torch.zeros(2, 3)})


# ------------------------------------------------------------------------------ evidential
def test_evidential_signal_is_the_epistemic_std_of_the_nig():
    """sqrt(3 Var[mu]) of the normal-inverse-gamma, against the moments of samples from it."""
    nu, alpha, beta = 2.0, 3.5, 0.8
    out = {H.EVIDENTIAL_KEY: torch.tensor([[nu, alpha, beta]], dtype=torch.float64)}
    rng = np.random.default_rng(4)
    sigma2 = stats.invgamma.rvs(alpha, scale=beta, size=400_000, random_state=rng)
    mu = rng.normal(0.0, np.sqrt(sigma2 / nu))
    assert sigma2.mean() == pytest.approx(beta / (alpha - 1), rel=0.02)  # aleatoric E[s^2]
    got = float(H.output_signals(out)["evidential"][0])
    assert got == pytest.approx(np.sqrt(3 * mu.var()), rel=0.02)


# ------------------------------------------------------------------------------ models
def test_head_forces_are_minus_the_gradient_of_head_energies():
    model = build(H.ShallowEnsembleModel, n_heads=3)
    a = atoms()
    out = model(batch(model, a))
    f = out[H.HEAD_FORCES_KEY].detach().numpy()
    h, num = 1e-5, np.zeros_like(f)
    for i in range(len(a)):
        for c in range(3):
            e = []
            for s in (h, -h):
                b = a.copy()
                b.positions[i, c] += s
                e.append(model(batch(model, b))[H.HEAD_ENERGIES_KEY].detach().numpy()[0])
            num[i, :, c] = -(e[0] - e[1]) / (2 * h)
    np.testing.assert_allclose(f, num, atol=1e-6)
    # the model's forces and energy are the heads' mean
    np.testing.assert_allclose(out["forces"].detach().numpy(), f.mean(1), atol=1e-10)
    assert float(out["total_energy"].detach()) == pytest.approx(
        float(out[H.HEAD_ENERGIES_KEY].detach().mean()), abs=1e-10)


def test_batched_and_loop_head_forces_agree():
    a = atoms()
    got = {}
    for mode in ("batched", "loop"):
        model = build(H.ShallowEnsembleModel, n_heads=4, force_mode=mode)
        got[mode] = model(batch(model, a))[H.HEAD_FORCES_KEY].detach().numpy()
    np.testing.assert_allclose(got["batched"], got["loop"], atol=1e-12)


def test_two_fixed_heads_give_the_known_spread():
    """Linear readout, heads w and 3w: head 2's forces are 3x head 1's, the mean 2x, so the
    spread sqrt(sum_c var) = |F1| = |F_mean| / 2 for every atom."""
    model = build(H.ShallowEnsembleModel, n_heads=2)
    readout = model.model.func.energy_model.per_atom_energy_readout
    w = [p for p in readout.heads[0].parameters()]
    with torch.no_grad():
        for p0, p1 in zip(w, readout.heads[1].parameters(), strict=True):
            p1.copy_(3.0 * p0)
    out = fm(model).evaluate(atoms())
    np.testing.assert_allclose(out.signals["shallow_ensemble"],
                               0.5 * np.linalg.norm(out.forces, axis=1), rtol=1e-9)


def test_calculator_signal_matches_a_loop_over_single_head_models():
    """The calculator's per-atom shallow_ensemble against force_std of M models, each the
    heads model with every head set to one head's weights (so nequip's own gradient of the
    mean gives that head's forces)."""
    model = build(H.ShallowEnsembleModel, n_heads=4, dtype="float32")
    a = atoms()
    forces = []
    for m in range(4):
        single = copy.deepcopy(model)
        heads = single.model.func.energy_model.per_atom_energy_readout.heads
        with torch.no_grad():
            for h in heads:
                for p, q in zip(h.parameters(), heads[m].parameters(), strict=True):
                    p.copy_(q)
        single.model.func.force_mode = "none"
        forces.append(fm(single).evaluate(a).forces)
    f = fm(model)
    out = f.evaluate(a)
    est = LTAUEstimator(k=3).fit(out.features, None, species=a.numbers)
    calc = LTAUCalculator(f, est)
    b = a.copy()
    b.calc = calc
    b.get_potential_energy()
    np.testing.assert_allclose(calc.results["shallow_ensemble"], force_std(forces), atol=2e-5)
    assert calc.results["shallow_ensemble:max"] == pytest.approx(
        calc.results["shallow_ensemble"].max())
    np.testing.assert_allclose(calc.results["forces"], np.mean(forces, axis=0), atol=2e-5)


def test_features_are_the_wrapped_models():
    """The heads read the wrapped model's features: the estimator's descriptors stay the
    same with every builder."""
    from nequip.model import NequIPGNNModel

    cfg = {k: v for k, v in INNER.items() if k != "_target_"}
    base = NequIPGNNModel(**cfg, seed=3, model_dtype="float64", type_names=TYPES).eval()
    want = fm(base).features([atoms()]).numpy()
    for builder in (H.ShallowEnsembleModel, H.MeanVarianceModel, H.EvidentialModel):
        np.testing.assert_array_equal(fm(build(builder)).features([atoms()]).numpy(), want)


@pytest.mark.parametrize("builder, name", [(H.MeanVarianceModel, "mve"),
                                           (H.EvidentialModel, "evidential")])
def test_variance_heads_leave_the_model_and_train_alone(builder, name):
    from nequip.model import NequIPGNNModel

    cfg = {k: v for k, v in INNER.items() if k != "_target_"}
    base = NequIPGNNModel(**cfg, seed=3, model_dtype="float64", type_names=TYPES).eval()
    model = build(builder)
    a = atoms()
    out, ref = fm(model).evaluate(a), fm(base).evaluate(a)
    np.testing.assert_allclose(out.forces, ref.forces, atol=1e-12)
    assert out.signals[name].shape == (len(a),) and (out.signals[name] > 0).all()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".head." in n for n in trainable)


def test_shallow_ensemble_trains_only_its_heads_when_frozen():
    model = build(H.ShallowEnsembleModel, n_heads=2)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".heads." in n for n in trainable)
    loose = build(H.ShallowEnsembleModel, n_heads=2, freeze_backbone=False)
    assert any(".heads." not in n for n, p in loose.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("kw, match", [
    ({"n_heads": 1}, "n_heads must be >= 2"),
    ({"force_mode": "fast"}, "force_mode must be one of"),
    ({"init_noise": 0.0}, "init_noise must be > 0"),
    ({"r_max": 5.0}, "r_max 5.0 differs from the wrapped model's 4.0"),
])
def test_builder_refuses_bad_parameters(kw, match):
    args = {"seed": 1, "model_dtype": "float64", "type_names": TYPES, "r_max": 4.0, **kw}
    with pytest.raises(ValueError, match=match):
        H.ShallowEnsembleModel(model=dict(INNER), **args)


def test_finetune_config_keeps_the_run_and_swaps_model_and_loss(tmp_path):
    from ltau_md.integrations.nequip import toy

    cfg = toy.tiny_config(tmp_path / "t.xyz", tmp_path / "v.xyz", seed=5, max_epochs=50)
    before = copy.deepcopy(cfg)
    out = H.finetune_config(cfg, tmp_path / "last.ckpt", "mve", max_epochs=4, lr=0.002)
    assert cfg == before  # not modified
    model = out["training_module"]["model"]
    assert model["_target_"].endswith("MeanVarianceModel")
    assert model["model"] == {"_target_": "nequip.model.ModelFromCheckpoint",
                              "checkpoint_path": str(tmp_path / "last.ckpt")}
    assert (model["seed"], model["r_max"]) == (5, cfg["training_module"]["model"]["r_max"])
    names = [m["name"] for m in out["training_module"]["loss"]["metrics"]]
    assert names == ["energy_nll", "force_nll", "forces_mae"]
    assert out["trainer"]["max_epochs"] == 4
    assert out["trainer"]["callbacks"] == cfg["trainer"]["callbacks"]  # the LTAU logger too
    with pytest.raises(ValueError, match="unknown head method"):
        H.finetune_config(cfg, "x.ckpt", "dropout", max_epochs=1, lr=1e-3)


@pytest.mark.parametrize("method", list(H.HEAD_METHODS))
def test_example_config_group_matches_finetune_config(method):
    """examples/nequip_acac_heads.yaml with heads=METHOD composes (hydra) to the model and
    loss that finetune_config generates, so the documented configs and the API agree."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    examples = Path(__file__).resolve().parents[4] / "examples"
    with initialize_config_dir(config_dir=str(examples), version_base=None):
        cfg = compose("nequip_acac_heads", overrides=[
            f"heads={method}", "data_dir=/data", "base_checkpoint=/runs/a/last.ckpt"])
    module = OmegaConf.to_container(cfg.training_module, resolve=False)
    resolved = {k: OmegaConf.to_container(cfg.training_module[k], resolve=True)
                for k in ("model", "loss", "val_metrics")}
    opts = {"n_heads": 8} if method == "shallow_ensemble" else {}
    assert resolved["model"] == H.head_model(
        method, "/runs/a/last.ckpt", seed=1, model_dtype="float32", type_names=["H", "C", "O"],
        r_max=5.0, **opts)
    assert resolved["loss"] == resolved["val_metrics"] == H.head_loss(method)
    assert module["ema_decay"] == H.FINETUNE_EMA_DECAY
    assert cfg.trainer.callbacks[-1]["_target_"].endswith("LTAUErrorLogger")
