"""LTAUCalculator and UQMonitor with a real (EMT + radial descriptor) FeatureModel, a real FAISS
estimator, real ASE optimizers and MD. The NequIP-backed calculator is tested in
integration/test_calculator_nequip.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import units
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import read
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from ltau_md import ErrorLog, LTAUEstimator, SpeciesError
from ltau_md.calculator import LTAUCalculator
from ltau_md.observers import Threshold, UQMonitor
from ltau_md.testing import EMTFeatureModel


def slab():
    a = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    add_adsorbate(a, "O", 1.8, "fcc")
    a.set_constraint(FixAtoms(indices=[at.index for at in a if at.tag == 3]))
    return a


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Estimator fitted on rattled slabs; the logged error grows with the rattle amplitude, so
    distorted structures get a high uncertainty."""
    tmp = tmp_path_factory.mktemp("est")
    model = EMTFeatureModel(elements=("O", "Cu"))
    rng = np.random.default_rng(0)
    frames, amps = [], []
    for i in range(40):
        a = slab()
        amp = 0.02 + 0.1 * (i % 4)
        a.positions += rng.normal(size=a.positions.shape) * amp
        frames.append(a)
        amps.append(np.full(len(a), amp))
    x = np.concatenate([model.evaluate(a).features for a in frames])
    amp = np.concatenate(amps)
    n = len(x)
    offs = np.cumsum([0] + [len(a) for a in frames])
    log = ErrorLog.create(tmp / "log", species=np.concatenate([a.numbers for a in frames]),
                          frame_offsets=offs, ref_force_norm=np.ones(n))
    for e in range(10):
        log.append((amp * 0.5 + 0.005) * rng.lognormal(0, 0.5, n) * (1 + 2 * np.exp(-e)))
    est = LTAUEstimator(k=5).fit(x, log)
    return model, est


def test_calculator_equals_estimator_and_emt(setup):
    model, est = setup
    a = slab()
    a.positions += np.random.default_rng(1).normal(size=a.positions.shape) * 0.05
    a.calc = LTAUCalculator(model, est, warm_start=False)
    ref = a.copy()
    ref.calc = EMT()
    np.testing.assert_allclose(a.get_forces(), ref.get_forces(), atol=1e-10)
    assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy())
    pred = est.predict(model.evaluate(a).features)
    np.testing.assert_allclose(a.calc.get_property("uncertainty"), pred.uncertainty, atol=1e-7)
    np.testing.assert_allclose(a.calc.get_property("predicted_error"), pred.predicted_error,
                               rtol=1e-6)
    assert a.calc.get_property("max_uncertainty") == pytest.approx(pred.uncertainty.max())
    # stress only for periodic cells; here the slab is periodic in x, y only
    assert "stress" not in a.calc.results
    bad = a.copy()
    bad[0].symbol = "Au"
    bad.calc = LTAUCalculator(model, est)
    with pytest.raises(SpeciesError, match="Au"):
        bad.get_forces()


def test_relaxation_monitor_summary_and_files(setup, tmp_path):
    model, est = setup
    a = slab()
    a.positions += np.random.default_rng(2).normal(size=a.positions.shape) * 0.15
    a.calc = LTAUCalculator(model, est)
    opt = BFGS(a, logfile=None)
    mon = UQMonitor(opt, out_dir=tmp_path)
    opt.attach(mon, interval=1)
    mon.run(steps=30)
    s = json.loads((tmp_path / "summary.json").read_text())
    frames = read(tmp_path / "trajectory.extxyz", index=":")
    lines = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert len(frames) == len(lines) == s["n_observed"] == opt.nsteps + 1
    # independent recomputation of the aggregate from the written frames
    free = ~np.isin(np.arange(len(a)), a.constraints[0].index)
    vals = [est.predict(model.evaluate(f).features).uncertainty[free].max() for f in frames]
    np.testing.assert_allclose([f.arrays["uncertainty"][free].max() for f in frames], vals,
                               atol=0.02)  # HNSW-free flat index: warm start is exact here
    assert s["initial"] == pytest.approx(vals[0], abs=1e-6)
    assert s["final"] == pytest.approx(vals[-1], abs=1e-6)
    assert s["max"] == pytest.approx(max(vals), abs=1e-6)
    assert s["mean"] == pytest.approx(np.mean(vals), abs=1e-6)
    assert s["max_step"] == int(np.argmax(vals))
    # relaxing a rattled slab lowers its uncertainty
    assert s["final"] < s["initial"]


def _mid_threshold(values, q):
    """A threshold halfway between two distinct observed values near quantile q (no ties)."""
    u = np.unique(np.round(values, 5))
    i = min(max(int(q * len(u)), 1), len(u) - 1)
    return float(0.5 * (u[i - 1] + u[i]))


def _md(model, est, tmp, policies=(), **kw):
    a = slab()
    a.positions += np.random.default_rng(3).normal(size=a.positions.shape) * 0.03
    rng = np.random.default_rng(4)
    a.set_momenta(rng.normal(size=(len(a), 3)) * 0.6)
    a.calc = LTAUCalculator(model, est)
    dyn = VelocityVerlet(a, timestep=2 * units.fs, logfile=None)
    mon = UQMonitor(dyn, policies=policies, out_dir=tmp, **kw)
    dyn.attach(mon, interval=1)
    mon.run(steps=40)
    return dyn, mon


@pytest.mark.parametrize("patience", [1, 3])
def test_stop_fires_at_first_crossing_with_patience(setup, tmp_path, patience):
    model, est = setup
    _, free_run = _md(model, est, tmp_path / "free")
    v = np.array(free_run.values)
    thr = _mid_threshold(v, 0.6)
    over = v > thr
    # independent expectation: first step ending a run of `patience` consecutive steps over thr
    expect = next(i for i in range(len(v)) if i + 1 >= patience and over[i + 1 - patience:i + 1]
                  .all())
    dyn, mon = _md(model, est, tmp_path / "stop",
                   policies=[Threshold("stop", above=thr, patience=patience)])
    assert mon.stopped is not None and mon.stopped.step == expect
    assert dyn.nsteps == expect
    assert len(read(tmp_path / "stop" / "trajectory.extxyz", index=":")) == expect + 1
    ev = json.loads((tmp_path / "stop" / "events.json").read_text())
    assert ev[-1]["action"] == "stop" and ev[-1]["step"] == expect


def test_resample_writes_frames_and_oracle_labels_equal_emt(setup, tmp_path):
    model, est = setup
    _, free_run = _md(model, est, tmp_path / "free")
    thr = _mid_threshold(free_run.values, 0.5)
    pol = Threshold("resample", above=thr, hysteresis=0.0)
    dyn, mon = _md(model, est, tmp_path / "rs", policies=[pol], oracle=EMT())
    fired = [e.step for e in mon.events if e.action == "resample"]
    assert fired and dyn.nsteps == 40
    # re-arming: fires once per excursion above thr
    over = np.array(free_run.values) > thr
    starts = [i for i in range(len(over)) if over[i] and (i == 0 or not over[i - 1])]
    assert fired == starts
    cands = read(tmp_path / "rs" / "candidates.extxyz", index=":")
    labelled = read(tmp_path / "rs" / "labelled.extxyz", index=":")
    traj = read(tmp_path / "rs" / "trajectory.extxyz", index=":")
    assert [c.info["step"] for c in cands] == fired
    for c, lab in zip(cands, labelled, strict=True):
        np.testing.assert_allclose(c.positions, traj[c.info["step"]].positions)
        ref = c.copy()
        ref.calc = EMT()
        np.testing.assert_allclose(lab.get_forces(), ref.get_forces(), atol=1e-5)  # extxyz 1e-8 A
        assert lab.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-6)


def test_md_rewind_retries_then_stops(setup, tmp_path):
    model, est = setup
    _, free_run = _md(model, est, tmp_path / "free")
    thr = _mid_threshold(free_run.values, 0.5)
    dyn, mon = _md(model, est, tmp_path / "rw", policies=[Threshold("resample", above=thr)],
                   rewind=True, temperature_K=300, max_retries=2)
    assert mon.n_retries == 2 and len(mon.rewinds) == 2
    assert mon.stopped is not None and "rewinds" in mon.stopped.reason
    traj = read(tmp_path / "rw" / "trajectory.extxyz", index=":")
    for fired, back in mon.rewinds:
        assert back < fired and traj[back].arrays["uncertainty"].max() <= thr
        # the step after a rewind starts from the trusted snapshot, not from the fired frame
        nxt = traj[fired + 1].positions
        assert (np.abs(nxt - traj[back].positions).max()
                < np.abs(nxt - traj[fired].positions).max())


class NaNAfter:
    def __init__(self, model, n):
        self.model, self.n, self.calls = model, n, 0
        self.species = model.species

    def evaluate(self, atoms, stress=False):
        out = self.model.evaluate(atoms, stress)
        self.calls += 1
        if self.calls > self.n:
            out.forces = out.forces * np.nan
        return out


def test_nan_forces_end_in_stop_event(setup, tmp_path):
    model, est = setup
    a = slab()
    a.positions += np.random.default_rng(5).normal(size=a.positions.shape) * 0.1
    a.calc = LTAUCalculator(NaNAfter(model, 4), est)
    opt = BFGS(a, logfile=None)
    mon = UQMonitor(opt, out_dir=tmp_path)
    opt.attach(mon, interval=1)
    mon.run(steps=50)
    assert mon.stopped is not None and "non-finite" in mon.stopped.reason
    # 4 finite evaluations (steps 0-3), the 5th (step 4) is NaN: the run ends there
    assert mon.stopped.step == 4 and opt.nsteps == 4
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["stopped"]["step"] == 4 and s["final"] == 1.0


def test_exploding_md_and_ctrl_c_leave_valid_files(setup, tmp_path):
    model, est = setup
    dyn, mon = _md(model, est, tmp_path / "boom", max_force=0.5)
    assert mon.stopped is not None and "exploding" in mon.stopped.reason

    def interrupt(ev, m):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _md(model, est, tmp_path / "int",
            policies=[Threshold("warn", above=-1.0, patience=5, callback=interrupt)])
    frames = read(tmp_path / "int" / "trajectory.extxyz", index=":")
    assert len(frames) == 5 and "uncertainty" in frames[-1].arrays
    s = json.loads((tmp_path / "int" / "summary.json").read_text())
    assert s["n_observed"] == 5


def test_warm_start_resets_on_new_structure(setup):
    model, est = setup
    x = est.index_.reconstruct_n(0, est.n_train_)
    hnsw = LTAUEstimator(k=5, index="hnsw", ef_search=64).fit(x, est.summary_)
    calc = LTAUCalculator(model, hnsw)
    a = slab()
    a.calc = calc
    a.get_forces()
    a.positions[-1] += 0.05  # next step of a trajectory: warm
    a.get_forces()
    assert calc._neighbors._since_cold == 1
    exact = est.predict(model.evaluate(a).features)
    np.testing.assert_allclose(a.calc.results["uncertainty"], exact.uncertainty, atol=0.05)
    b = slab()
    b.positions[-1, 2] += 1.0  # a different structure: cold search
    b.calc = calc
    b.get_forces()
    assert calc._neighbors._since_cold == 0
    b.positions[-1] += 0.01
    b.get_forces()
    calc.reset_trajectory()
    b.positions[-1] += 0.01
    b.get_forces()
    assert calc._neighbors._since_cold == 0
