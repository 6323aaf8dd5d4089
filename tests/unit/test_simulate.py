"""relax_many / run_md (the work behind `ltau-md relax` and `ltau-md md`) with the EMT feature
model; the CLI with a real NequIP model is tested in test_cli.py."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read

from ltau_md import ErrorLog, LTAUEstimator
from ltau_md.calculator import LTAUCalculator
from ltau_md.simulate import policies_from_args, relax_many, run_md
from ltau_md.testing import EMTFeatureModel


@pytest.fixture(scope="module")
def calc_factory(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    model = EMTFeatureModel(elements=("Cu",))
    rng = np.random.default_rng(0)
    frames = []
    for i in range(30):
        a = bulk("Cu", cubic=True).repeat(2)
        a.positions += rng.normal(size=a.positions.shape) * (0.02 + 0.05 * (i % 3))
        frames.append(a)
    x = np.concatenate([model.evaluate(a).features for a in frames])
    amp = np.repeat([0.02 + 0.05 * (i % 3) for i in range(30)], 32)
    log = ErrorLog.create(tmp / "log", species=np.full(len(x), 29),
                          frame_offsets=np.arange(31) * 32, ref_force_norm=np.ones(len(x)))
    for _ in range(6):
        log.append(amp * rng.lognormal(0, 0.3, len(x)))
    est = LTAUEstimator(k=4).fit(x, log)
    return lambda: LTAUCalculator(model, est)


def test_relax_many_summary_matches_runs(calc_factory, tmp_path):
    rng = np.random.default_rng(1)
    structs = []
    for _ in range(3):
        a = bulk("Cu", cubic=True).repeat(2)
        a.positions += rng.normal(size=a.positions.shape) * 0.08
        structs.append(a)
    rows = relax_many(structs, calc_factory, tmp_path, fmax=0.05, steps=100, progress=False)
    table = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert len(rows) == len(table) == 3
    for i, row in enumerate(rows):
        s = json.loads((tmp_path / f"{i:04d}" / "summary.json").read_text())
        assert row["initial"] == s["initial"] and row["final"] == s["final"]
        assert float(table[i]["max"]) == pytest.approx(s["max"])
        final = read(tmp_path / f"{i:04d}" / "trajectory.extxyz", index=-1)
        ref = final.copy()
        ref.calc = EMT()
        fmax = np.linalg.norm(ref.get_forces(), axis=1).max()
        assert row["converged"] == (fmax < 0.05)
        assert row["converged"]


def test_run_md_stops_above_threshold(calc_factory, tmp_path):
    a = bulk("Cu", cubic=True).repeat(2)
    free = run_md(a, calc_factory(), tmp_path / "free", temperature_K=2000, steps=30,
                  progress=False, seed=3)
    assert free["stopped"] is None and free["n_observed"] == 31
    values = [json.loads(x)["max_uncertainty"]
              for x in (tmp_path / "free" / "steps.jsonl").read_text().splitlines()]
    thr = 0.5 * (values[0] + max(values)) + 0.01  # off the 1/24 grid of possible values
    expect = next(i for i, v in enumerate(values) if v > thr)
    stop = run_md(a, calc_factory(), tmp_path / "stop", temperature_K=2000, steps=30,
                  policies=policies_from_args(stop_above=thr), progress=False, seed=3)
    assert stop["stopped"]["step"] == expect and stop["n_observed"] == expect + 1
