"""UQ heads trained for real: each method's fine-tuning config (heads.finetune_config of the
tiny run's own config) run with nequip-train on the tiny run's checkpoint, then used through
the error log, ltau-md fit, load_calculator and an alarm-rate Threshold."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ase.io
import numpy as np
import pytest

from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.observers import Threshold
from ltau_md.integrations.nequip import NequIPFeatureModel, fit_from_runs, load_calculator, toy
from ltau_md.integrations.nequip import heads as H

EPOCHS = 2


@pytest.fixture(scope="module")
def finetuned(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """method -> its nequip-train run dir (2 epochs, heads only, error logger on)."""
    root = tmp_path_factory.mktemp("heads")
    base = toy.tiny_config(tiny_run.train_xyz, tiny_run.val_xyz, seed=1,
                           max_epochs=tiny_run.max_epochs)
    jobs = {}
    for method in H.HEAD_METHODS:
        opts = {"n_heads": 3} if method == "shallow_ensemble" else {}
        cfg = H.finetune_config(base, tiny_run.checkpoint, method, max_epochs=EPOCHS, lr=0.01,
                                **opts)
        jobs[method] = (toy.write_config(cfg, root / f"{method}.yaml"), root / method)
    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(toy.nequip_train, c, r, threads=1) for c, r in jobs.values()]:
            f.result()
    return {m: r for m, (_, r) in jobs.items()}


@pytest.mark.parametrize("method", list(H.HEAD_METHODS))
def test_finetuning_trains_the_heads_on_a_frozen_backbone(finetuned, tiny_run, method):
    frames = ase.io.read(tiny_run.train_xyz, ":")
    base = NequIPFeatureModel.from_file(tiny_run.checkpoint)
    tuned = NequIPFeatureModel.from_file(finetuned[method] / "last.ckpt")
    np.testing.assert_array_equal(tuned.features(frames[:4]).numpy(),
                                  base.features(frames[:4]).numpy())
    out, ref = tuned.evaluate(frames[0]), base.evaluate(frames[0])
    assert out.signals[method].shape == (len(frames[0]),)
    assert np.isfinite(out.signals[method]).all() and (out.signals[method] > 0).all()
    moved = np.abs(out.forces - ref.forces).max()
    if method == "shallow_ensemble":  # the heads' mean was trained
        assert moved > 1e-4
    else:  # a variance head leaves the model's forces alone
        assert moved < 1e-5


@pytest.mark.parametrize("method", list(H.HEAD_METHODS))
def test_error_log_of_a_heads_model_equals_recomputation(finetuned, tiny_run, method):
    frames = ase.io.read(tiny_run.train_xyz, ":")
    ref = np.concatenate([a.get_forces() for a in frames])
    forces = np.concatenate(toy.nequip_forces(finetuned[method] / "last.ckpt", frames))
    err = np.linalg.norm(ref - forces, axis=1)
    log = ErrorLog.open(finetuned[method] / "ltau_log")
    assert log.epochs(0) == list(range(EPOCHS))
    np.testing.assert_allclose(log.read_epoch(EPOCHS - 1, 0), err, atol=2e-5, rtol=1e-5)


def test_fit_and_calculator_use_the_heads_signal_with_an_alarm_rate(finetuned, tmp_path):
    run = finetuned["shallow_ensemble"]
    ckpt = run / "last.ckpt"
    fit_from_runs([run], ckpt, tmp_path / "est", k=5, progress=False)
    calc = load_calculator(ckpt, tmp_path / "est")
    assert "shallow_ensemble:max" in calc.estimator.alarm_statistics_
    val = ase.io.read(run / "ltau_log" / "validation.traj", ":")
    a = val[0].copy()
    a.calc = calc
    a.get_forces()
    heads_f = NequIPFeatureModel.from_file(ckpt).model  # brute force: the heads' own forces
    fm = NequIPFeatureModel(heads_f)
    out = fm.model(fm._batch([val[0]]))
    want = np.sqrt(out[H.HEAD_FORCES_KEY].detach().numpy().var(axis=1).sum(axis=1))
    np.testing.assert_allclose(calc.results["shallow_ensemble"], want, rtol=1e-5, atol=1e-7)
    th = Threshold("stop", alarm_rate=0.2, signal="shallow_ensemble")
    thr = th.resolve(calc)
    assert th.resolved_from["source"] == "validation"
    maxima = []
    for b in val:  # the in-domain frames the threshold came from: at most 20 % above it
        b = b.copy()
        b.calc = calc
        b.get_forces()
        maxima.append(calc.results["shallow_ensemble:max"])
    assert np.mean(np.array(maxima) > thr) <= 0.2


@pytest.mark.slow  # about 40 s: an estimator fit and two MD runs
def test_md_stops_on_the_heads_signal(finetuned, tiny_run, tmp_path):
    """UQMonitor watches a heads model's own signal like any other: with a threshold at the
    median of a free run's values, the stop fires at the first step of that run above it,
    and steps.jsonl records the same values."""
    import json

    from ase import units
    from ase.md.verlet import VelocityVerlet

    from ltau_md.core.observers import UQMonitor

    run = finetuned["shallow_ensemble"]
    # the documented protocol: LTAU from the trained run's log, the heads model as --model
    fit_from_runs([tiny_run.run_dir], run / "last.ckpt", tmp_path / "est", k=5, progress=False)
    calc = load_calculator(run / "last.ckpt", tmp_path / "est")
    a = ase.io.read(tiny_run.val_xyz, "0")
    a.calc = calc
    a.set_momenta(np.random.default_rng(0).normal(size=(len(a), 3)) * 0.3)
    free = UQMonitor(VelocityVerlet(a.copy(), timestep=1 * units.fs, logfile=None),
                     watch=["shallow_ensemble:max"], out_dir=tmp_path / "free")
    free.atoms.calc = calc
    free.dyn.attach(free, interval=1)
    free.run(steps=12)
    v = np.array(free.signal_values["shallow_ensemble:max"])
    assert np.isfinite(v).all() and v.min() > 0 and np.ptp(v) > 0
    thr = float(np.quantile(v, 0.5))
    b = a.copy()
    b.calc = calc
    calc.reset()
    dyn = VelocityVerlet(b, timestep=1 * units.fs, logfile=None)
    mon = UQMonitor(dyn, [Threshold("stop", above=thr, signal="shallow_ensemble")],
                    out_dir=tmp_path / "stop")
    dyn.attach(mon, interval=1)
    mon.run(steps=12)
    first = int(np.argmax(v > thr))
    assert mon.stopped is not None and mon.stopped.step == first
    lines = [json.loads(x) for x in (tmp_path / "stop" / "steps.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([x["shallow_ensemble:max"] for x in lines], v[:first + 1],
                               rtol=1e-6)
