"""LTAUCalculator and UQMonitor with a real (EMT + radial descriptor) FeatureModel, a real FAISS
estimator, real ASE optimizers and MD. The NequIP-backed calculator is tested in
integration/test_calculator_nequip.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import units
from ase.build import add_adsorbate, fcc111
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import read
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from ltau_md.core.calculator import LTAUCalculator
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import OutputExistsError, SpeciesError
from ltau_md.core.observers import Threshold, UQMonitor
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
    assert a.calc.get_property("uncertainty:max") == pytest.approx(pred.uncertainty.max())
    # stress only for periodic cells; here the slab is periodic in x, y only
    assert "stress" not in a.calc.results
    bad = a.copy()
    bad[0].symbol = "Au"
    bad.calc = LTAUCalculator(model, est)
    with pytest.raises(SpeciesError, match="Au"):
        bad.get_forces()


@pytest.mark.parametrize("fixed", [None, "half", "all"])
def test_structure_statistics_are_over_the_free_atoms(setup, fixed):
    """uncertainty:max & co. equal frame_statistic of the per-atom results over the atoms
    not held by FixAtoms (all atoms when none or every atom is fixed), as steps.jsonl."""
    from ltau_md.core.calculator import FRAME_STAT_KEYS, FRAME_STATISTICS
    from ltau_md.core.metrics import frame_statistic

    model, est = setup
    a = slab()
    a.positions += np.random.default_rng(4).normal(size=a.positions.shape) * 0.08
    a.set_constraint()  # slab() fixes its bottom layer: start from no constraint
    n = len(a)
    free = np.ones(n, bool)
    if fixed == "half":
        free[: n // 2] = False
        a.set_constraint(FixAtoms(indices=np.flatnonzero(~free)))
    elif fixed == "all":
        a.set_constraint(FixAtoms(indices=range(n)))
    a.calc = LTAUCalculator(model, est)
    a.get_forces()
    res = a.calc.results
    mask = free if free.any() and not free.all() else None
    for (signal, on), key in zip(FRAME_STATISTICS, FRAME_STAT_KEYS, strict=True):
        want = frame_statistic(res[signal], on, mask)
        assert a.calc.get_property(key) == pytest.approx(want, rel=1e-12), key
    if fixed == "half":  # the fixed atoms really are left out
        assert res["uncertainty:mean"] != pytest.approx(res["uncertainty"].mean(), rel=1e-9)


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


def _constrained_fmax(frame):
    """max |F| (eV/A) over the atoms not fixed by FixAtoms, from EMT (the model's reference)."""
    ref = frame.copy()
    ref.set_constraint()
    ref.calc = EMT()
    f = ref.get_forces()
    fixed = [i for c in frame.constraints if isinstance(c, FixAtoms) for i in c.index]
    f[fixed] = 0.0
    return float(np.linalg.norm(f, axis=1).max())


def test_exploding_md_stops_at_the_first_step_above_max_force(setup, tmp_path):
    model, est = setup
    _md(model, est, tmp_path / "free")
    free = read(tmp_path / "free" / "trajectory.extxyz", index=":")
    fmax = np.array([_constrained_fmax(f) for f in free])  # independent of the monitor
    thr = 0.5 * (fmax[0] + fmax.max())
    assert np.abs(fmax - thr).min() > 1e-3  # no tie with the threshold
    expect = int(np.argmax(fmax > thr))
    assert expect > 0
    dyn, mon = _md(model, est, tmp_path / "boom", max_force=thr)
    assert mon.stopped is not None and "exploding" in mon.stopped.reason
    assert mon.stopped.step == expect and dyn.nsteps == expect
    assert mon.stopped.value == pytest.approx(fmax[expect], rel=1e-6)
    lines = [json.loads(x) for x in (tmp_path / "boom" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(expect + 1))
    assert [r["events"] for r in lines] == [[]] * expect + [["stop"]]
    s = json.loads((tmp_path / "boom" / "summary.json").read_text())
    assert s["stopped"]["step"] == expect and s["n_observed"] == expect + 1


def test_ctrl_c_leaves_valid_files(setup, tmp_path):
    model, est = setup

    def interrupt(ev, m):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _md(model, est, tmp_path / "int",
            policies=[Threshold("warn", above=0.0, signal="predicted_error", patience=5,
                                callback=interrupt)])
    frames = read(tmp_path / "int" / "trajectory.extxyz", index=":")
    assert len(frames) == 5 and "uncertainty" in frames[-1].arrays
    s = json.loads((tmp_path / "int" / "summary.json").read_text())
    assert s["n_observed"] == 5


def test_signal_while_a_step_is_written_never_splits_the_step(setup, tmp_path, monkeypatch):
    """A real SIGINT sent while step 4's line is being written: the step is finished (its
    line, frame and count all there) and Ctrl-C is raised right after it, so steps.jsonl,
    the trajectory and summary.json agree (a SIGTERM in CI once left 15 lines for 16 steps)."""
    import os
    import signal
    import threading

    model, est = setup
    original = UQMonitor._write_line

    def write_and_get_interrupted(self, record):
        if record["step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        original(self, record)

    monkeypatch.setattr(UQMonitor, "_write_line", write_and_get_interrupted)
    # Python's own Ctrl-C handler, also where this process inherited SIGINT ignored (a
    # background job of a non-interactive shell: bash ignores SIGINT for `cmd &`)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    # another thread alive, as torch/dask/tqdm start them: a signal blocked in the main
    # thread alone would be delivered through it and still raise mid-step
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _md(model, est, tmp_path / "sig")
    finally:
        stop.set()
        helper.join()
        signal.signal(signal.SIGINT, previous)
    rows = (tmp_path / "sig" / "steps.jsonl").read_text().splitlines()
    s = json.loads((tmp_path / "sig" / "summary.json").read_text())
    frames = read(tmp_path / "sig" / "trajectory.extxyz", index=":")
    assert [json.loads(r)["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert s["n_observed"] == len(frames) == 5 and s["status"] == "interrupted"


def _crossing_starts(values, above, patience=1, hysteresis=0.0):
    """Reference for Threshold: steps where it fires, written out from its definition."""
    fired, count, armed = [], 0, True
    for i, v in enumerate(values):
        if not armed:
            if v < above - hysteresis:
                armed = True
            else:
                continue
        count = count + 1 if v > above else 0
        if count >= patience:
            fired.append(i)
            count, armed = 0, False
    return fired


def test_plain_opt_run_writes_complete_events_and_summary(setup, tmp_path):
    """No mon.run() and no close(): the files are complete after a plain opt.run()."""
    model, est = setup
    a = slab()
    a.positions += np.random.default_rng(2).normal(size=a.positions.shape) * 0.15
    a.calc = LTAUCalculator(model, est, warm_start=False)
    free = ~np.isin(np.arange(len(a)), a.constraints[0].index)
    # the reference values: the estimator on the structures BFGS visits (a dry run)
    dry = a.copy()
    dry.calc = LTAUCalculator(model, est, warm_start=False)
    seen = []
    opt0 = BFGS(dry, logfile=None)
    opt0.attach(lambda: seen.append(dry.positions.copy()), interval=1)
    opt0.run(fmax=0.05, steps=30)
    vals = []
    for pos in seen:
        f = a.copy()
        f.positions = pos
        vals.append(float(est.predict(model.evaluate(f).features).uncertainty[free].max()))
    thr = _mid_threshold(vals, 0.5)
    expect = _crossing_starts(vals, thr)
    assert expect
    opt = BFGS(a, logfile=None)
    mon = UQMonitor(opt, policies=[Threshold("warn", above=thr)], out_dir=tmp_path)
    opt.attach(mon, interval=1)
    opt.run(fmax=0.05, steps=30)
    ev = json.loads((tmp_path / "events.json").read_text())
    assert [e["step"] for e in ev] == expect and {e["action"] for e in ev} == {"warn"}
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["n_observed"] == len(vals) == opt.nsteps + 1
    assert s["initial"] == pytest.approx(vals[0], abs=1e-6)
    assert s["final"] == pytest.approx(vals[-1], abs=1e-6)
    assert s["max"] == pytest.approx(max(vals), abs=1e-6)
    assert s["mean"] == pytest.approx(np.mean(vals), abs=1e-6)
    assert s["n_events"] == {"stop": 0, "resample": 0, "warn": len(expect)}
    assert s["stopped"] is None
    assert len(read(tmp_path / "trajectory.extxyz", index=":")) == len(vals)  # flushed


def test_monitor_as_context_manager_and_refusing_an_earlier_run(setup, tmp_path):
    model, est = setup
    a = slab()
    a.positions += np.random.default_rng(6).normal(size=a.positions.shape) * 0.1
    a.calc = LTAUCalculator(model, est)
    (tmp_path / "notes.txt").write_text("keep me")  # other files in out_dir are fine
    opt = BFGS(a, logfile=None)
    with UQMonitor(opt, out_dir=tmp_path) as mon:
        opt.attach(mon, interval=1)
        opt.run(fmax=0.05, steps=5)
        assert json.loads((tmp_path / "events.json").read_text()) == []  # before closing
    assert mon._files == {}  # closed
    n = len((tmp_path / "steps.jsonl").read_text().splitlines())
    assert n == opt.nsteps + 1 == json.loads((tmp_path / "summary.json").read_text())[
        "n_observed"]
    before = (tmp_path / "steps.jsonl").read_bytes()
    opt2 = BFGS(a, logfile=None)
    with pytest.raises(OutputExistsError, match="steps.jsonl"):
        UQMonitor(opt2, out_dir=tmp_path)
    assert (tmp_path / "steps.jsonl").read_bytes() == before
    with UQMonitor(opt2, out_dir=tmp_path, overwrite=True) as mon2:
        opt2.attach(mon2, interval=1)
        opt2.run(fmax=0.05, steps=2)
    steps = [json.loads(x)["step"] for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert steps == list(range(opt2.nsteps + 1))  # no line of the first run left
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(("kw", "values", "expect"), [
    # hysteresis: re-arm only below above - hysteresis (0.3); 0.4 does not re-arm
    ({"above": 0.5, "hysteresis": 0.2}, [0.6, 0.6, 0.4, 0.6, 0.25, 0.6, 0.7], [0, 5]),
    ({"above": 0.5, "hysteresis": 0.0}, [0.6, 0.6, 0.4, 0.6, 0.25, 0.6, 0.7], [0, 3, 5]),
    # patience 2 with hysteresis: the count restarts after re-arming
    ({"above": 0.5, "hysteresis": 0.2, "patience": 2},
     [0.6, 0.6, 0.6, 0.35, 0.6, 0.2, 0.6, 0.6], [1, 7]),
    # a value equal to `above` is not above it
    ({"above": 0.5}, [0.5, 0.51, 0.5, 0.49, 0.5], [1]),
])
def test_threshold_hand_sequences(kw, values, expect):
    pol = Threshold("warn", **kw)
    assert [i for i, v in enumerate(values) if pol.update(v)] == expect


class Scripted(Calculator):
    """Zero forces and a scripted per-atom uncertainty, one row per calculation."""

    implemented_properties = ["energy", "forces", "uncertainty", "predicted_error"]

    def __init__(self, rows):
        super().__init__()
        self.rows, self.n = np.asarray(rows, dtype=float), 0

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        u = self.rows[min(self.n, len(self.rows) - 1)]
        self.n += 1
        self.results = {"energy": 0.0, "forces": np.zeros((len(atoms), 3)),
                        "uncertainty": u, "predicted_error": u * 0.1}


# per step: the max and the mean over 4 atoms disagree on purpose
ROWS = [[0.1, 0.1, 0.1, 0.1],   # max .1 mean .1
        [0.9, 0.1, 0.1, 0.1],   # max .9 mean .3
        [0.9, 0.1, 0.1, 0.1],   # max .9 mean .3
        [0.6, 0.6, 0.6, 0.6],   # max .6 mean .6
        [0.6, 0.6, 0.6, 0.24],  # max .6 mean .51
        [0.7, 0.7, 0.7, 0.7],   # max .7 mean .7
        [0.1, 0.1, 0.1, 0.1],   # max .1 mean .1
        [0.8, 0.8, 0.8, 0.8]]   # max .8 mean .8


def _scripted_md(rows, policies, tmp, steps, poison_at=None, **kw):
    from ase import Atoms

    a = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]],
              cell=[10, 10, 10], pbc=True)
    a.set_momenta(np.full((4, 3), 0.01))
    a.calc = Scripted(rows)
    dyn = VelocityVerlet(a, timestep=1 * units.fs, logfile=None)

    def poison():  # NaN momenta at step poison_at - 1 -> NaN positions at step poison_at
        if poison_at is not None and dyn.nsteps == poison_at - 1:
            p = a.get_momenta()
            p[2, 1] = np.nan
            a.set_momenta(p)

    dyn.attach(poison, interval=1)
    mon = UQMonitor(dyn, policies, out_dir=tmp, **kw)
    dyn.attach(mon, interval=1)
    dyn.run(steps=steps)
    return dyn, mon


def test_mean_aggregate_and_on_mean_policies_hand_computed(tmp_path):
    fired: dict[int, list[int]] = {0: [], 1: [], 2: [], 3: []}

    def rec(i):
        return lambda ev, m: fired[i].append(ev.step)

    pols = [Threshold("warn", above=0.5, on="mean", callback=rec(0)),
            Threshold("warn", above=0.5, on="max", callback=rec(1)),
            Threshold("warn", above=0.55, on="mean", callback=rec(2)),
            Threshold("warn", above=0.55, on="mean", hysteresis=0.1, callback=rec(3))]
    dyn, mon = _scripted_md(ROWS, pols, tmp_path, steps=7, aggregate="mean")
    means = [float(np.mean(r)) for r in ROWS]
    lines = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    # the script is aligned with the steps: one calculation per MD step
    assert [r["uncertainty:max"] for r in lines] == pytest.approx([max(r) for r in ROWS])
    assert [r["uncertainty:mean"] for r in lines] == pytest.approx(means)
    assert mon.values == pytest.approx(means)  # aggregate="mean"
    # hand-computed from the table above
    assert fired == {0: [3, 7], 1: [1, 7], 2: [3, 5, 7], 3: [3, 7]}
    on_mean = [e for e in mon.events if e.reason.startswith("mean")]
    assert all(e.value == pytest.approx(means[e.step]) for e in on_mean)
    assert [ev["step"] for ev in json.loads((tmp_path / "events.json").read_text())] == \
        [e.step for e in mon.events] == [1, 3, 3, 3, 5, 7, 7, 7, 7]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["aggregate"] == "mean" and s["initial"] == pytest.approx(0.1)
    assert s["max"] == pytest.approx(0.8) and s["max_step"] == 7
    assert s["mean"] == pytest.approx(np.mean(means))
    assert s["n_events"]["warn"] == 9


def test_nan_positions_reaching_the_monitor_stop_the_run(tmp_path):
    rows = [[0.1, 0.2, 0.3, 0.4]] * 3 + [[0.5, 0.5, 0.5, 0.9]] * 10
    dyn, mon = _scripted_md(rows, [Threshold("warn", above=1.0)], tmp_path, steps=10,
                            poison_at=4)
    assert mon.stopped is not None
    assert mon.stopped.reason == "non-finite positions, forces or energy"
    assert mon.stopped.step == 4 and dyn.nsteps == 4
    assert mon.stopped.value == pytest.approx(0.9)  # that step's max uncertainty
    lines = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1, 2, 3, 4]
    assert [r["events"] for r in lines] == [[], [], [], [], ["stop"]]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["stopped"]["step"] == 4 and s["n_observed"] == 5
    assert s["stopped"]["reason"] == mon.stopped.reason
    assert [e["action"] for e in json.loads((tmp_path / "events.json").read_text())] == ["stop"]


def test_warm_start_resets_on_new_structure(setup):
    model, est = setup
    x = est.training_descriptors()
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
