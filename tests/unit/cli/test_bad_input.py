"""Every bad input of ``ltau-md`` gets a clear answer: a message naming the problem, exit
status 2 and nothing written; and ``md`` / ``relax`` tell completed, halted, non-finite and
interrupted runs apart (summary.json "status" and exit status 0 / 3 / 4 / 130).

The model here is the EMT feature model (no NequIP): the commands' calculator factory is
replaced by one building an :class:`LTAUCalculator` on it.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write

from ltau_md.cli import _common, main
from ltau_md.core.calculator import LTAUCalculator
from ltau_md.core.errorlog import ErrorLog
from ltau_md.testing import rattled_cu_estimator

ROOT = Path(__file__).resolve().parents[3]
COMMON = ["--model", "model.ckpt", "--estimator", "estimator", "--no-progress"]


@pytest.fixture(scope="module")
def emt_estimator(tmp_path_factory):
    """An EMT feature model of Cu and an estimator fitted on rattled Cu bulk."""
    return rattled_cu_estimator(tmp_path_factory.mktemp("bad_input") / "log")


class Hooked:
    """A FeatureModel that, from its ``after``-th evaluation on, returns NaN forces
    (``what="nan"``) or sends this process SIGINT (``what="sigint"``, a real Ctrl-C)."""

    def __init__(self, model, after: int, what: str):
        self.model, self.after, self.what, self.calls = model, after, what, 0
        self.species = model.species

    def evaluate(self, atoms, stress=False):
        self.calls += 1
        if self.calls >= self.after and self.what == "sigint":
            signal.raise_signal(signal.SIGINT)
        out = self.model.evaluate(atoms, stress)
        if self.calls >= self.after and self.what == "nan":
            out.forces = out.forces * np.nan
        return out


@pytest.fixture
def emt_cli(monkeypatch, emt_estimator):
    """The commands build their calculator on ``state["model"]`` (default: the EMT model)."""
    model, est = emt_estimator
    state = {"model": model}
    monkeypatch.setattr(_common, "calculator_factory",
                        lambda args: lambda: LTAUCalculator(state["model"], est))
    return state


@pytest.fixture
def start(tmp_path) -> Path:
    a = bulk("Cu", cubic=True).repeat(2)
    a.rattle(0.05, seed=1)
    write(tmp_path / "start.xyz", [a, a.copy()])
    return tmp_path / "start.xyz"


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    return err[-1]


def _run(cmd: str, structures, out: Path, *extra: str) -> int:
    return main([cmd, str(structures), *COMMON, "--out", str(out), *extra])


# ---------------------------------------------------------------------- bad structure files
@pytest.mark.parametrize("cmd", ["relax", "md"])
def test_empty_file_and_structures_without_atoms(emt_cli, tmp_path, capsys, cmd):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    assert _run(cmd, empty, tmp_path / "out") == 2
    assert _err_line(capsys) == f"ltau-md {cmd}: error: structure file {empty} is empty"
    no_atoms = tmp_path / "no_atoms.xyz"
    write(no_atoms, [bulk("Cu", cubic=True), Atoms()])
    assert _run(cmd, no_atoms, tmp_path / "out") == 2
    assert f"structure 1 of {no_atoms} has no atoms" in _err_line(capsys)
    write(no_atoms, Atoms())
    assert _run(cmd, no_atoms, tmp_path / "out") == 2
    assert f"structure 0 of {no_atoms} has no atoms" in _err_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cmd", ["relax", "md"])
def test_directory_as_structures(emt_cli, tmp_path, capsys, cmd):
    (tmp_path / "frames").mkdir()
    assert _run(cmd, tmp_path / "frames", tmp_path / "out") == 2
    assert "is a directory" in _err_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cmd", ["relax", "md"])
def test_text_file_as_structures(emt_cli, tmp_path, capsys, cmd):
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    assert _run(cmd, readme, tmp_path / "out") == 2
    out = capsys.readouterr()
    assert "wrote" not in out.out
    assert out.err.strip().splitlines()[-1] == (
        f"ltau-md {cmd}: error: {readme} holds no structures (is it an ASE-readable structure "
        "file, e.g. extxyz or traj?)")
    assert not (tmp_path / "out").exists()


def test_unknown_element_is_named_before_any_output(emt_cli, tmp_path, capsys):
    write(tmp_path / "au.xyz", [bulk("Cu", cubic=True), bulk("Au", cubic=True)])
    assert _run("relax", tmp_path / "au.xyz", tmp_path / "out") == 2
    line = _err_line(capsys)
    assert f"structure 1 of {tmp_path / 'au.xyz'}: element(s) Au not known" in line
    write(tmp_path / "au.xyz", bulk("Au", cubic=True))
    assert _run("md", tmp_path / "au.xyz", tmp_path / "out") == 2
    assert f"structure 0 of {tmp_path / 'au.xyz'}: element(s) Au not known" in _err_line(capsys)
    assert not (tmp_path / "out").exists()


def test_missing_estimator_leaves_no_output(start, tmp_path, capsys):
    """The real calculator factory: model and estimator are loaded before --out is created."""
    rc = main(["relax", str(start), "--model", str(tmp_path / "m.ckpt"), "--estimator",
               str(tmp_path / "noest"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2 and "noest" in _err_line(capsys)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- option values
BAD_OPTIONS = [
    ("md", ["--steps", "-5"], "--steps", "an integer >= 1"),
    ("md", ["--steps", "0"], "--steps", "an integer >= 1"),
    ("md", ["--temperature", "-100"], "--temperature", "a number >= 0"),
    ("md", ["--temperature", "nan"], "--temperature", "a number >= 0"),
    ("md", ["--timestep", "0"], "--timestep", "a number > 0"),
    ("md", ["--friction", "-1"], "--friction", "a number >= 0"),
    ("md", ["--max-retries", "-1"], "--max-retries", "an integer >= 0"),
    ("md", ["--max-force", "0"], "--max-force", "a number > 0"),
    ("md", ["--seed", "-1"], "--seed", "an integer >= 0"),
    ("md", ["--patience", "0"], "--patience", "an integer >= 1"),
    ("md", ["--stop-above", "5"], "--stop-above", "a number in [0, 1)"),
    ("md", ["--stop-above", "1"], "--stop-above", "a number in [0, 1)"),
    ("md", ["--resample-above", "-0.1"], "--resample-above", "a number in [0, 1)"),
    ("md", ["--hysteresis", "2"], "--hysteresis", "a number in [0, 1]"),
    ("md", ["--s", "0"], "--s", "a number > 0"),
    ("relax", ["--patience", "0"], "--patience", "an integer >= 1"),
    ("relax", ["--stop-above", "5"], "--stop-above", "a number in [0, 1)"),
    ("relax", ["--fmax", "0"], "--fmax", "a number > 0"),
    ("relax", ["--steps", "-1"], "--steps", "an integer >= 1"),
    ("relax", ["--threads", "0"], "--threads", "an integer >= 1"),
]


@pytest.mark.parametrize(("cmd", "extra", "option", "what"), BAD_OPTIONS)
def test_out_of_range_options_are_refused(emt_cli, start, tmp_path, capsys, cmd, extra,
                                          option, what):
    with pytest.raises(SystemExit) as exc:
        _run(cmd, start, tmp_path / "out", *extra)
    assert exc.value.code == 2
    line = _err_line(capsys)
    assert line.startswith(f"ltau-md {cmd}: error: argument {option}: must be {what}, "
                           f"got '{extra[1]}'")
    if option.endswith("-above"):
        assert line.endswith("(the uncertainty runs from 0 to 1; a policy fires above its "
                             "threshold, so 1 or more never fires)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [
    ["fit", "run", "--model", "m", "--out", "e", "--k", "0"],
    ["fit", "run", "--model", "m", "--out", "e", "--atol", "-1"],
    ["fit", "run", "--model", "m", "--out", "e", "--batch-size", "0"],
    ["calibrate", "d.xyz", "--model", "m", "--estimator", "e", "--n-bins", "0"],
    ["calibrate", "d.xyz", "--model", "m", "--estimator", "e", "--s-min", "0"],
    ["is2rs", "--model", "m", "--estimator", "e", "--systems", "s", "--out", "o",
     "--workers", "-1"],
    ["is2rs", "--model", "m", "--estimator", "e", "--systems", "s", "--out", "o",
     "--limit", "0"],
    ["is2rs", "--model", "m", "--estimator", "e", "--systems", "s", "--out", "o",
     "--error-stride", "0"],
    ["is2rs-generate", "--out", "o", "--n-train", "-1"],
    ["demo", "--seed", "-2"],
])
def test_out_of_range_options_of_other_commands(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    line = _err_line(capsys)
    assert line.startswith(f"ltau-md {argv[0]}: error: argument {argv[-2]}: must be ")


def test_thresholds_accept_the_unit_interval():
    from ltau_md.cli import build_parser

    for value in ("0", "0.5", "0.999"):
        args = build_parser().parse_args(["md", "s.xyz", "--model", "m", "--estimator", "e",
                                          "--out", "o", "--stop-above", value])
        assert args.stop_above == float(value)


def test_calibrate_s_range_must_be_ordered(capsys):
    assert main(["calibrate", "d.xyz", "--model", "m", "--estimator", "e", "--s-min", "2",
                 "--s-max", "1"]) == 2
    assert _err_line(capsys) == "ltau-md calibrate: error: --s-min 2 must be below --s-max 1"


@pytest.mark.parametrize("flag", [["--rewind"], ["--oracle", "emt"]])
def test_rewind_or_oracle_without_resample_threshold(emt_cli, start, tmp_path, capsys, flag):
    assert _run("md", start, tmp_path / "out", *flag) == 2
    line = _err_line(capsys)
    assert line.startswith(f"ltau-md md: error: {flag[0]} acts on resampled frames")
    assert "--resample-above" in line
    assert not (tmp_path / "out").exists()


def test_fit_k_larger_than_training_set(tmp_path, capsys):
    log = ErrorLog.create(tmp_path / "log", species=[29] * 6, frame_offsets=[0, 3, 6],
                          ref_force_norm=np.ones(6))
    log.append(np.full(6, 0.1))
    argv = ["fit", str(log.path), "--model", str(tmp_path / "m.ckpt"), "--out",
            str(tmp_path / "est")]
    assert main([*argv, "--k", "7"]) == 2
    assert _err_line(capsys) == (f"ltau-md fit: error: --k 7 exceeds the 6 training atoms "
                                 f"logged in {log.path}: choose --k <= 6")
    assert not (tmp_path / "est").exists()
    assert main([*argv, "--k", "6"]) == 2  # k is fine; the log has no frames.traj
    assert "no frames.traj" in _err_line(capsys)


# ---------------------------------------------------------------------- run status
def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_md_status_completed_halted_non_finite(emt_cli, emt_estimator, start, tmp_path,
                                               capsys):
    assert _run("md", start, tmp_path / "ok", "--steps", "3") == 0
    s = _summary(tmp_path / "ok")
    assert s["status"] == "completed" and s["stopped"] is None and s["n_observed"] == 4
    assert "MD completed" in capsys.readouterr().out

    assert _run("md", start, tmp_path / "halt", "--steps", "5", "--stop-above", "0") == 3
    s = _summary(tmp_path / "halt")
    # md's one patience default (2) holds for explicit policies too: fires at step 1
    assert s["status"] == "halted" and s["stopped"]["step"] == 1

    emt_cli["model"] = Hooked(emt_estimator[0], 3, "nan")
    assert _run("md", start, tmp_path / "nan", "--steps", "10") == 4
    s = _summary(tmp_path / "nan")
    assert s["status"] == "non_finite" and s["stopped"]["reason"].startswith("non-finite")


def test_relax_exit_status_is_the_worst_structure(emt_cli, emt_estimator, start, tmp_path):
    assert _run("relax", start, tmp_path / "ok", "--steps", "2") == 0
    assert [r["status"] for r in _summary(tmp_path / "ok")] == ["completed"] * 2
    assert _run("relax", start, tmp_path / "halt", "--stop-above", "0") == 3
    table = list(csv.DictReader(open(tmp_path / "halt" / "summary.csv")))
    assert [r["status"] for r in table] == ["halted"] * 2
    # the first structure is fine, the second one's forces turn NaN: the worst code wins
    emt_cli["model"] = Hooked(emt_estimator[0], 6, "nan")
    assert _run("relax", start, tmp_path / "nan", "--steps", "3") == 4
    assert [r["status"] for r in _summary(tmp_path / "nan")] == ["completed", "non_finite"]


@pytest.fixture
def ctrl_c():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test, even where the test
    process was started with SIGINT ignored (e.g. as a background job without job control)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_sigint_during_md_records_interrupted(emt_cli, emt_estimator, start, tmp_path,
                                              capsys, ctrl_c):
    emt_cli["model"] = Hooked(emt_estimator[0], 4, "sigint")
    assert _run("md", start, tmp_path / "md", "--steps", "50") == 130
    assert _err_line(capsys) == "ltau-md md: interrupted"
    s = _summary(tmp_path / "md")
    assert s["status"] == "interrupted"
    assert s["stopped"]["reason"] == "interrupted" and s["stopped"]["action"] == "stop"
    lines = (tmp_path / "md" / "steps.jsonl").read_text().splitlines()
    assert len(lines) == s["n_observed"] == 3  # steps 0-2 whole, the 4th evaluation interrupted
    assert [json.loads(x)["step"] for x in lines] == [0, 1, 2]


def test_sigint_during_relax_writes_the_interrupted_row(emt_cli, emt_estimator, start,
                                                        tmp_path, capsys, ctrl_c):
    emt_cli["model"] = Hooked(emt_estimator[0], 6, "sigint")
    assert _run("relax", start, tmp_path / "r", "--steps", "3") == 130
    rows = _summary(tmp_path / "r")
    assert [r["status"] for r in rows] == ["completed", "interrupted"]
    assert rows[1]["stop_reason"] == "interrupted"
    assert _summary(tmp_path / "r" / "0001")["status"] == "interrupted"


# ---------------------------------------------------------------------- --threads
def test_threads_sets_torch_and_faiss_threads(tmp_path, capsys):
    import faiss
    import torch

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        assert main(["relax", str(tmp_path / "nope.xyz"), *COMMON, "--out",
                     str(tmp_path / "o"), "--threads", "1"]) == 2
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
        assert "nope.xyz" in _err_line(capsys)
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])


# ---------------------------------------------------------------------- overlapping atoms
def _overlapping():
    a = bulk("Cu", cubic=True).repeat(2)
    a.positions[7] = a.positions[3] + [0.0, 0.0, 0.02]
    return a


@pytest.mark.parametrize("cmd", ["relax", "md"])
def test_overlapping_atoms_are_named_before_the_run(emt_cli, tmp_path, capsys, cmd):
    """relax checks every structure (here the second), md its start structure."""
    frames = [bulk("Cu", cubic=True).repeat(2), _overlapping()]
    write(tmp_path / "overlap.xyz", frames if cmd == "relax" else frames[1])
    assert _run(cmd, tmp_path / "overlap.xyz", tmp_path / "out") == 2
    line = _err_line(capsys)
    assert f"structure {1 if cmd == 'relax' else 0} of" in line
    assert "atoms 3 and 7 are 0.02 A apart" in line and "overlapping" in line
    assert not (tmp_path / "out").exists()


def test_overlap_reached_during_a_run_names_the_cause(emt_estimator, tmp_path):
    """A model that returns NaN when atoms overlap: the calculator reports the pair and the
    monitor stops with a reason naming it (status non_finite), not just 'non-finite'."""
    from ase.optimize import BFGS

    from ltau_md.core.observers import UQMonitor

    model, est = emt_estimator

    class NaNOnOverlap:
        species = model.species

        def evaluate(self, atoms, stress=False):
            out = model.evaluate(atoms, stress)
            d = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
            if d.min() < 0.1:
                out.forces = out.forces * np.nan
            return out

    a = _overlapping()
    a.calc = LTAUCalculator(NaNOnOverlap(), est)
    opt = BFGS(a, logfile=None)
    with UQMonitor(opt, [], out_dir=tmp_path / "run") as mon:
        opt.attach(mon, interval=1)
        opt.run(fmax=0.05, steps=5)
    assert a.calc.results["nonfinite_cause"] == "atoms 3 and 7 are 0.02 A apart (overlapping)"
    assert mon.stopped.reason.endswith("atoms 3 and 7 are 0.02 A apart (overlapping)")
    assert mon.status == "non_finite"
