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

from ltau_md.core.calculator import LTAUCalculator
from ltau_md.core.exceptions import OutputExistsError
from ltau_md.testing import rattled_cu_estimator
from ltau_md.workflows.simulate import policies_from_args, relax_many, run_md


@pytest.fixture(scope="module")
def calc_factory(tmp_path_factory):
    model, est = rattled_cu_estimator(tmp_path_factory.mktemp("sim") / "log", n_frames=30,
                                      n_epochs=6)
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
    values = [json.loads(x)["uncertainty:max"]
              for x in (tmp_path / "free" / "steps.jsonl").read_text().splitlines()]
    thr = 0.5 * (values[0] + max(values)) + 0.01  # off the 1/24 grid of possible values
    expect = next(i for i, v in enumerate(values) if v > thr)
    stop = run_md(a, calc_factory(), tmp_path / "stop", temperature_K=2000, steps=30,
                  policies=policies_from_args(stop_above=thr), progress=False, seed=3)
    assert stop["stopped"]["step"] == expect and stop["n_observed"] == expect + 1


def _steps(path):
    return [json.loads(x)["step"] for x in path.read_text().splitlines()]


def _rattled(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = bulk("Cu", cubic=True).repeat(2)
        a.positions += rng.normal(size=a.positions.shape) * 0.08
        out.append(a)
    return out


@pytest.mark.parametrize("overwrite", [False, True])
def test_md_and_relax_refuse_a_foreign_dir_and_keep_its_files(calc_factory, tmp_path,
                                                              overwrite):
    for name in ("md", "relax"):
        d = tmp_path / name
        d.mkdir()
        (d / "notes.txt").write_text("keep me")
        (d / "steps.jsonl").write_text("not ours\n")
        with pytest.raises(OutputExistsError, match="not written by ltau-md"):
            if name == "md":
                run_md(bulk("Cu", cubic=True).repeat(2), calc_factory(), d, steps=3,
                       progress=False, overwrite=overwrite)
            else:
                relax_many(_rattled(1, 0), calc_factory, d, steps=3, progress=False,
                           overwrite=overwrite)
        assert sorted(p.name for p in d.iterdir()) == ["notes.txt", "steps.jsonl"]
        assert (d / "notes.txt").read_text() == "keep me"
        assert (d / "steps.jsonl").read_text() == "not ours\n"


def test_md_rerun_needs_overwrite_and_then_describes_only_the_new_run(calc_factory, tmp_path):
    a = bulk("Cu", cubic=True).repeat(2)
    out = tmp_path / "md"
    run_md(a, calc_factory(), out, temperature_K=1500, steps=12, progress=False, seed=1)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OutputExistsError, match="overwrite"):
        run_md(a, calc_factory(), out, steps=5, progress=False, seed=2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # untouched
    with pytest.raises(OutputExistsError, match="another kind"):  # a relax output is not md
        relax_many(_rattled(1, 0), calc_factory, out, steps=3, progress=False, overwrite=True)
    s = run_md(a, calc_factory(), out, temperature_K=1500, steps=5, progress=False, seed=2,
               overwrite=True)
    assert _steps(out / "steps.jsonl") == list(range(6))  # steps start at 0 exactly once
    frames = read(out / "trajectory.extxyz", index=":")
    assert [f.info["step"] for f in frames] == list(range(6))
    disk = json.loads((out / "summary.json").read_text())
    assert disk == json.loads(json.dumps(s)) and disk["n_observed"] == 6
    # the summary describes this run: recompute it from the frames written by this run
    vals = [float(f.arrays["uncertainty"].max()) for f in frames]
    assert disk["initial"] == pytest.approx(vals[0]) and disk["final"] == pytest.approx(vals[-1])
    assert disk["max"] == pytest.approx(max(vals))
    assert json.loads((out / "events.json").read_text()) == []
    assert not [p for p in tmp_path.iterdir() if p.name != "md"]  # nothing left aside


def test_relax_rerun_with_overwrite_leaves_no_stale_structure_folders(calc_factory, tmp_path):
    out = tmp_path / "relax"
    relax_many(_rattled(3, 1), calc_factory, out, steps=20, progress=False)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["0000", "0001", "0002"]
    with pytest.raises(OutputExistsError, match="overwrite"):
        relax_many(_rattled(1, 2), calc_factory, out, steps=20, progress=False)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["0000", "0001", "0002"]
    new = _rattled(1, 2)
    rows = relax_many(new, calc_factory, out, steps=20, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["0000"]
    assert len(list(csv.DictReader(open(out / "summary.csv")))) == 1
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(rows))
    assert _steps(out / "0000" / "steps.jsonl")[0] == 0
    assert _steps(out / "0000" / "steps.jsonl") == list(range(rows[0]["n_observed"]))
    # the structure relaxed is the new one, not a leftover: compare the first frame
    first = read(out / "0000" / "trajectory.extxyz", index=0)
    np.testing.assert_allclose(first.positions, new[0].positions, atol=1e-6)
