"""The active-learning loop for real: tiny NequIP models, EMT as the oracle, two iterations
(exploration on a dask LocalCluster), and a loop killed with SIGKILL in each stage and
resumed: no label computed twice or lost, no fine-tuning epoch missing or repeated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase.calculators.emt import EMT

from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.integrations.nequip import toy
from ltau_md.workflows.learn import load_config, run_learn

ROOT = Path(__file__).resolve().parents[2]


def _config(tiny_run, tmp: Path, **over) -> Path:
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    ase.io.write(data / "starts.xyz", toy.make_emt_frames(n_bulk=1, n_slab=2, rattle=0.25,
                                                          seed=5))
    ase.io.write(data / "test.xyz", toy.make_emt_frames(n_bulk=2, n_slab=4, rattle=0.2,
                                                        seed=7))
    cfg = {"out_dir": "loop", "model": str(tiny_run.checkpoint),
           "estimator": str(tiny_run.estimator_dir), "train": str(tiny_run.train_xyz),
           "validation": str(tiny_run.val_xyz), "test": "data/test.xyz",
           "oracle": "ase.calculators.emt:EMT",
           "explore": {"structures": "data/starts.xyz", "temperatures_K": [2500], "steps": 40,
                       "interval": 2, "alarm_rate": 0.2, "alarm": "novelty:max"},
           "select": {"batch_size": 3}, "finetune": {"epochs": 1, "lr": 0.005},
           "iterations": 2, "label_budget": 6, "tolerance": 0.0}
    for key, value in over.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    path = tmp / "learn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _check_labels(it: Path, n: int) -> list:
    """Every selected frame labelled once, with EMT's own energy and forces."""
    files = sorted(p.name for p in (it / "label").glob("[0-9]*.extxyz"))
    assert files == [f"{i:04d}.extxyz" for i in range(n)]
    labelled = ase.io.read(it / "label" / "labelled.extxyz", ":")
    selected = ase.io.read(it / "select" / "selected.extxyz", ":")
    assert len(labelled) == len(selected) == n
    for a, s in zip(labelled, selected, strict=True):
        np.testing.assert_allclose(a.positions, s.positions)
        ref = a.copy()
        ref.calc = EMT()
        np.testing.assert_allclose(a.get_forces(), ref.get_forces(), atol=1e-6)  # extxyz digits
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-6)
    return labelled


def test_two_iterations_on_a_dask_cluster(tiny_run, tmp_path):
    path = _config(tiny_run, tmp_path)
    report = run_learn(path, n_workers=2)
    out = tmp_path / "loop"
    rows = report["iterations"]
    assert [r["iteration"] for r in rows] == [0, 1] and report["labels"] == 6
    assert rows[1]["model"] == str(out / "ITER_000" / "finetune" / "run" / "last.ckpt")
    train = ase.io.read(tiny_run.train_xyz, ":")
    labels = []
    for k, row in enumerate(rows):
        it = out / f"ITER_{k:03d}"
        assert row["alarm_share"] > 0.2 and row["n_selected"] == 3
        labels += _check_labels(it, 3)
        # fine-tuned on the training frames plus every label so far, one epoch logged
        log = ErrorLog.open(it / "finetune" / "run" / "ltau_log")
        assert log.epochs(0) == [0]
        assert log.n_atoms == sum(len(a) for a in train + labels)
        est = LTAUEstimator.load(it / "estimator")
        assert est.n_train_ == log.n_atoms
        assert est.alarm_statistics_["novelty:max"]["source"] == "validation"
        assert json.loads((it / "state.json").read_text())["stages_done"] == [
            "explore", "select", "label", "finetune", "refit"]
        # the test MAE is computed once and kept (a rerun reports the same figure)
        assert json.loads((it / "test.json").read_text())["test_force_mae"] == \
            row["test_force_mae"]
    assert (out / "learn.png").stat().st_size > 0
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    # a rerun of a finished loop redoes nothing
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    assert run_learn(path)["iterations"] == json.loads(json.dumps(rows))
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}


def test_settings_of_another_loop_are_refused(tiny_run, tmp_path):
    from ltau_md.core.exceptions import DataError

    path = _config(tiny_run, tmp_path, iterations=0 + 1, explore={"steps": 4})
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "learn_config.json").write_text(json.dumps(
        {**load_config(path).to_dict(), "seed": 99}))
    with pytest.raises(DataError, match="other settings \\(seed\\)"):
        run_learn(path)


def _start(path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "ltau_md.cli", "learn", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 300) -> bool:
    """SIGKILL ``proc`` once ``ready()``; False if it ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
            return False
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return True


@pytest.mark.slow  # about 75 s: three killed starts and a resume
def test_sigkill_in_each_stage_then_resume(tiny_run, tmp_path):
    path = _config(tiny_run, tmp_path, iterations=1, oracle="ltau_md.testing:SlowEMT",
                   finetune={"epochs": 3})
    it = tmp_path / "loop" / "ITER_000"
    points = [
        ("explore", lambda: (it / "explore" / "run_000" / "result.json").exists()),
        ("label", lambda: (it / "label" / "0001.extxyz").exists()),
        ("finetune", lambda: (it / "finetune" / "run" / "ltau_log" / "member_000" /
                              "epoch_000001.npy").exists()),
    ]
    killed = []
    for stage, ready in points:
        if _kill_when(_start(path), ready, stage):
            killed.append(stage)
            result = it / stage / "result.json"
            assert not result.exists(), f"{stage} was done when killed"
    assert killed == ["explore", "label", "finetune"]
    time.sleep(1.0)  # the orphan check: the killed loop's nequip-train died with it
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(it / "finetune" / "run") not in ps
    proc = _start(path)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-3000:]
    proc.stderr.close()
    assert json.loads((it / "explore" / "result.json").read_text())["n_runs"] == 3
    _check_labels(it, 3)
    log = ErrorLog.open(it / "finetune" / "run" / "ltau_log")
    assert log.epochs(0) == [0, 1, 2]  # every epoch once: no gap, no repeat
    report = json.loads((tmp_path / "loop" / "report.json").read_text())
    assert report["labels"] == 3 and report["iterations"][0]["labels_total"] == 3


@pytest.mark.slow  # about 30 s each: a loop stopped by a failing stage and rerun
@pytest.mark.parametrize("stage", ["finetune", "refit"])
def test_a_failing_stage_is_recorded_and_redone(tiny_run, tmp_path, monkeypatch, stage):
    """A stage that raises leaves state.json naming it and the cause, no result for it; a
    rerun redoes it and the state then lists every stage. The refit fails after its
    estimator was written (as a kill between the estimator and result.json would leave it):
    the rerun replaces that estimator."""
    from ltau_md.workflows.learn import _stages

    path = _config(tiny_run, tmp_path, iterations=1, explore={"steps": 10})
    real = getattr(_stages, stage)

    def failing(*args):
        if stage == "refit":
            real(*args)
            (args[1] / "refit" / "result.json").unlink()
        raise RuntimeError("the cluster went away")

    monkeypatch.setattr(_stages, stage, failing)
    with pytest.raises(RuntimeError, match="went away"):
        run_learn(path)
    it = tmp_path / "loop" / "ITER_000"
    state = json.loads((it / "state.json").read_text())
    done = ["explore", "select", "label", "finetune", "refit"]
    assert state["stages_done"] == done[:done.index(stage)]
    assert state["failed"] == f"{stage}: RuntimeError: the cluster went away"
    if stage == "refit":
        first = (it / "estimator" / "manifest.json").stat().st_mtime_ns
    monkeypatch.setattr(_stages, stage, real)
    run_learn(path)
    assert json.loads((it / "state.json").read_text()) == {"stages_done": done,
                                                           "finished": True}
    if stage == "refit":  # redone: a new estimator, loadable, of the fine-tuned model
        assert (it / "estimator" / "manifest.json").stat().st_mtime_ns > first
        assert LTAUEstimator.load(it / "estimator").n_train_ > 0


def test_bad_config_entries_are_refused_in_one_line(tiny_run, tmp_path):
    from ltau_md.core.exceptions import LTAUError

    for over, match in ((dict(oracle="ase.calculators.emt:NoSuchCalc"), "oracle .* no attribute"),
                        (dict(oracle="ase.calculators.emt.EMT"), "oracle .* an import path"),
                        (dict(select={"method": "best"}), "select.method must be one of"),
                        (dict(explore={"alarm_rate": 1.5}), "alarm_rate must lie in"),
                        (dict(iterations=0), "iterations must be a positive integer"),
                        (dict(ensemble=[str(tiny_run.run_dirs[1] / "last.ckpt")]),
                         "exactly one of estimator"),
                        (dict(estimator=None), "exactly one of estimator"),
                        (dict(explore={"trust_levels": [0.1, 0.3]}),
                         "trust_levels are for an ensemble-driven loop"),
                        (dict(estimator=None, ensemble=[str(tiny_run.checkpoint)],
                              explore={"trust_levels": [0.3, 0.1]}),
                         "0 < trust_lo < trust_hi"),
                        (dict(estimator=None, ensemble=[str(tiny_run.checkpoint)]),
                         "must be a statistic of force_std")):
        with pytest.raises(LTAUError, match=match):
            load_config(_config(tiny_run, tmp_path, **over))
    assert not (tmp_path / "loop").exists()  # nothing written



def _max_force_deviation(frames, members) -> np.ndarray:
    """Per frame, the maximum over atoms of the members' force deviation (DP-GEN's
    max_devi_f), with nequip's own ASE calculator (independent of ltau-md's wrapper)."""
    from nequip.integrations.ase import NequIPCalculator

    calcs = [NequIPCalculator._from_saved_model(str(m), device="cpu",
                                                chemical_species_to_atom_type_map=True)
             for m in members]
    out = []
    for a in frames:
        f = []
        for c in calcs:
            b = a.copy()
            b.calc = c
            f.append(b.get_forces())
        f = np.stack(f)
        out.append(np.sqrt(((f - f.mean(0)) ** 2).sum(2).mean(0)).max())
    return np.array(out)


def test_ensemble_exploration_thresholds(tiny_run, tmp_path):
    """DP-GEN's exploration, to compare with: member 0 moves the atoms, the threshold
    (trust_lo) is the validation frames' maximum force deviation at the alarm rate, the
    candidates' values are the members' deviation; with fixed trust levels no frame above
    trust_hi is a candidate, yet all count as alarms."""
    from ltau_md.core.metrics import alarm_threshold
    from ltau_md.workflows.learn import _stages

    members = [tiny_run.checkpoint, tiny_run.run_dirs[1] / "last.ckpt"]
    path = _config(tiny_run, tmp_path, estimator=None, ensemble=[str(members[1])],
                   explore={"alarm": None, "steps": 30})
    it = tmp_path / "loop" / "ITER_000"
    ex = _stages.explore(load_config(path), it, members, None, "force_std:max")
    assert ex["alarm"] == "force_std:max"
    val = ase.io.read(tiny_run.val_xyz, ":")
    dev = _max_force_deviation(val, members)
    starts = ase.io.read(tmp_path / "data" / "starts.xyz", ":")
    for i, a in enumerate(starts):
        lo, hi = ex["trust_levels"][str(i)]
        assert lo == pytest.approx(alarm_threshold(dev, 0.2, len(a) / np.mean(
            [len(b) for b in val])), rel=1e-4)
        assert hi is None  # no trust_hi
    cands = ase.io.read(it / "explore" / "candidates.extxyz", ":")
    runs = {p.name: json.loads((p / "result.json").read_text())
            for p in (it / "explore").glob("run_*")}
    assert cands and all(c.info["alarm_value"] > ex["trust_levels"][str(
        runs[c.info["run"]]["start"])][0] for c in cands)
    np.testing.assert_allclose([c.info["alarm_value"] for c in cands[:3]],
                               _max_force_deviation(cands[:3], members), rtol=1e-4)

    # the same exploration (seeded alike) with fixed levels inside the range of its values
    values = np.concatenate([r["values"] for r in runs.values()])
    lo, hi = float(np.quantile(values, 0.3)), float(np.quantile(values, 0.7))
    path = _config(tiny_run, tmp_path, out_dir="loop_fixed", estimator=None,
                   ensemble=[str(members[1])],
                   explore={"alarm": None, "steps": 30, "trust_levels": [lo, hi]})
    it = tmp_path / "loop_fixed" / "ITER_000"
    ex = _stages.explore(load_config(path), it, members, None, "force_std:max")
    assert ex["threshold"] == lo and ex["n_above_trust_hi"] == int((values > hi).sum()) > 0
    assert ex["n_alarmed"] == int((values > lo).sum())
    picked = [c.info["alarm_value"] for c in ase.io.read(it / "explore" / "candidates.extxyz",
                                                          ":")]
    assert picked and all(lo < v <= hi for v in picked)


@pytest.mark.slow  # about 40 s: an iteration fine-tuning two members
def test_an_ensemble_driven_loop(tiny_run, tmp_path):
    """The ensemble-driven loop end to end: every member fine-tuned on the training frames
    plus the labels, no estimator, the members carried into the report."""
    members = [tiny_run.checkpoint, tiny_run.run_dirs[1] / "last.ckpt"]
    path = _config(tiny_run, tmp_path, estimator=None, ensemble=[str(members[1])],
                   iterations=1, explore={"alarm": None, "steps": 30})
    report = run_learn(path)
    it = tmp_path / "loop" / "ITER_000"
    labels = _check_labels(it, 3)
    train = ase.io.read(tiny_run.train_xyz, ":")
    ft = json.loads((it / "finetune" / "result.json").read_text())
    assert ft["checkpoints"] == [str(it / "finetune" / r / "last.ckpt")
                                 for r in ("run", "run_member1")]
    for r in ("run", "run_member1"):
        log = ErrorLog.open(it / "finetune" / r / "ltau_log")
        assert log.epochs(0) == [0] and log.n_atoms == sum(len(a) for a in train + labels)
        assert json.loads((it / "finetune" / f"{r}.done.json").read_text())["from"] == str(
            members[0 if r == "run" else 1])
    assert not (it / "estimator").exists()
    assert report["members"] == ft["checkpoints"] and report["estimator"] is None
    assert report["iterations"][0]["alarm"] == "force_std:max"
