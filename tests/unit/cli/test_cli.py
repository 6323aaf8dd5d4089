"""The ``ltau-md`` command line: exit codes and one-line errors (no model needed here; the
commands with a real NequIP model are tested in tests/integration)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from ltau_md._version import __version__
from ltau_md.cli import EXIT_BAD_INPUT, main


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    return err[-1]


def test_bare_command_exits_2_with_usage(capsys):
    assert main([]) == EXIT_BAD_INPUT == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ltau-md") and "a command is required" in err


def test_version_and_help_are_fast_and_light():
    """``ltau-md --version`` works in a fresh process without importing torch or nequip."""
    code = ("import sys, ltau_md.cli as c\n"
            "try:\n    c.main(['--version'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules and 'nequip' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ltau-md {__version__}"


def test_missing_structure_file_is_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.xyz"
    rc = main(["relax", str(missing), "--model", "m.ckpt", "--estimator", "est",
               "--out", str(tmp_path / "out")])
    assert rc == 2
    line = _err_line(capsys)
    assert line.startswith("ltau-md relax: error:") and str(missing) in line
    assert not (tmp_path / "out").exists()


def test_missing_run_dir_and_estimator(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "run0"), "--model", "m.ckpt",
                 "--out", str(tmp_path / "est")]) == 2
    assert "run0" in _err_line(capsys) and "does not exist" in _err_line_safe(capsys, tmp_path)
    (tmp_path / "cal.xyz").write_text("")
    assert main(["calibrate", str(tmp_path / "cal.xyz"), "--model", "m.ckpt",
                 "--estimator", str(tmp_path / "noest")]) == 2
    assert "noest" in _err_line(capsys)


def _err_line_safe(capsys, tmp_path) -> str:
    # the fit error above was already consumed; rerun it to read the message once more
    main(["fit", str(tmp_path / "run0"), "--model", "m.ckpt", "--out", str(tmp_path / "est")])
    return _err_line(capsys)


def test_every_ltau_error_becomes_exit_2(monkeypatch, capsys):
    """Parameter errors (InvalidParameterError is a ValueError), species and artifact errors
    from a command all end as one line and status 2; other exceptions are not swallowed."""
    import ltau_md.workflows.demo
    from ltau_md.core.exceptions import ArtifactError, InvalidParameterError, SpeciesError

    for exc in (InvalidParameterError("k must be >= 1, got 0"),
                SpeciesError("element(s) Xe not known to the model (H, O)"),
                ArtifactError("estimator file x is corrupt (checksum mismatch)")):
        def boom(*a, _exc=exc, **k):
            raise _exc
        monkeypatch.setattr(ltau_md.workflows.demo, "run_demo", boom)
        assert main(["demo", "--out", "x"]) == 2
        assert _err_line(capsys) == f"ltau-md demo: error: {exc}"
    monkeypatch.setattr(ltau_md.workflows.demo, "run_demo",
                        lambda *a, **k: (_ for _ in ()).throw(ZeroDivisionError("bug")))
    # other exceptions are not taken for bad input: exit 1 with one line naming the
    # exception, and raised whole with --traceback (issue 17: one line unless asked)
    assert main(["demo", "--out", "x"]) == 1
    assert "unexpected error: ZeroDivisionError: bug" in _err_line(capsys)
    with pytest.raises(ZeroDivisionError):
        main(["--traceback", "demo", "--out", "x"])


def test_demo_refuses_a_foreign_directory(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(out), "--quick", "--overwrite"]) == 2
    assert "left untouched" in _err_line(capsys)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


def _subparsers():
    import argparse

    from ltau_md.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_of_every_command_states_its_default():
    """``ltau-md CMD --help``: each option says its default (or that it is required), and
    every command takes --threads."""
    import argparse

    cmds = _subparsers()
    assert set(cmds) == {"demo", "fit", "calibrate", "evaluate", "relax", "md", "learn",
                         "is2rs", "is2rs-generate"}
    for name, p in cmds.items():
        opts = [a for a in p._actions
                if a.option_strings and not isinstance(a, argparse._HelpAction)]
        assert "--threads" in {s for a in opts for s in a.option_strings}, name
        for a in opts:
            text = a.help or ""
            if a.required:
                assert "(required)" in text, (name, a.option_strings)
            else:
                assert "default" in text, (name, a.option_strings, text)


def test_md_and_relax_help_document_the_exit_statuses(capsys):
    for cmd in ("md", "relax"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for part in ("0 completed", "3 halted by the monitor", "4 stopped for non-finite",
                     "2 bad input", "130 interrupted", '"status"'):
            assert part in text, (cmd, part)


def test_type_map_option_reaches_the_model_loader():
    import argparse

    from ltau_md.cli import build_parser
    from ltau_md.cli._common import calculator_factory, type_map

    assert type_map("H=Hx, C=C_sp2") == {"H": "Hx", "C": "C_sp2"}
    for bad in ("H", "Xx=H", "H=", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            type_map(bad)
    args = build_parser().parse_args(["relax", "s.xyz", "--model", "m.ckpt", "--estimator", "e",
                                      "--out", "o", "--type-map", "H=Hx,O=Ox"])
    factory = calculator_factory(args)
    assert factory.keywords["chemical_species_to_atom_type_map"] == {"H": "Hx", "O": "Ox"}
    for cmd in (["fit", "r", "--model", "m", "--out", "o"],
                ["calibrate", "d.xyz", "--model", "m", "--estimator", "e"],
                ["evaluate", "--model", "m", "--estimator", "e", "--in-domain", "i.xyz",
                 "--out", "o"]):
        assert build_parser().parse_args([*cmd, "--type-map", "H=Hx"]).type_map == {"H": "Hx"}


def test_is2rs_incomplete_campaign_exits_3_with_the_rerun_message(tmp_path, monkeypatch,
                                                                  capsys):
    """Lost or failed systems: the report of what is done is printed, the message says how
    many are not done, and the exit status is 3 (not 0, not the bad-input 2)."""
    import json

    import ltau_md.workflows.is2rs.runner as runner
    from ltau_md.cli.is2rs import EXIT_INCOMPLETE

    for f in ("m.ckpt", "est"):
        (tmp_path / f).mkdir()
    seen = {}

    def fake_run_is2rs(systems, factory, out, **kw):
        seen.update(kw)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(
            {"splits": {"val_id": {"n": 3, "adwt": 0.5, "rmsd_mean": 0.2}}}))
        raise runner.CampaignIncompleteError("2 of 5 systems not done - rerun to resume")

    monkeypatch.setattr(runner, "run_is2rs", fake_run_is2rs)
    rc = main(["is2rs", "--model", str(tmp_path / "m.ckpt"), "--estimator", str(tmp_path / "est"),
               "--systems", "s", "--out", str(tmp_path / "c"), "--reference",
               "ase.calculators.lj:LennardJones", "--worker-threads", "2", "--error-stride", "5",
               "--no-progress"])
    assert rc == EXIT_INCOMPLETE == 3
    captured = capsys.readouterr()
    assert captured.err.strip().endswith("2 of 5 systems not done - rerun to resume")
    assert json.loads(captured.out.splitlines()[0])["val_id"]["n"] == 3
    assert seen["reference"] == "ase.calculators.lj:LennardJones"
    assert seen["worker_threads"] == 2 and seen["batch_size"] is None
    assert seen["error_stride"] == 5


def _library_defaults():
    from ltau_md.core.calibration import fit_scale
    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.core.model import DEFAULT_BATCH_SIZE
    from ltau_md.workflows.evaluation import evaluate
    from ltau_md.workflows.is2rs.runner import run_is2rs
    from ltau_md.workflows.simulate import relax_many, run_md

    def d(func, name):
        return inspect.signature(func).parameters[name].default

    return [
        ("fit", "k", d(LTAUEstimator, "k")), ("fit", "index", d(LTAUEstimator, "index")),
        ("fit", "batch_size", DEFAULT_BATCH_SIZE),
        ("relax", "fmax", d(relax_many, "fmax")), ("relax", "steps", d(relax_many, "steps")),
        ("relax", "optimizer", d(relax_many, "optimizer")),
        ("md", "temperature", d(run_md, "temperature_K")), ("md", "steps", d(run_md, "steps")),
        ("md", "friction", d(run_md, "friction")), ("md", "max_force", d(run_md, "max_force")),
        ("is2rs", "fmax", d(run_is2rs, "fmax")),
        ("evaluate", "fraction", d(evaluate, "fraction")),
        ("evaluate", "n_boot", d(evaluate, "n_boot")),
        ("evaluate", "n_splits", d(evaluate, "n_splits")),
        ("calibrate", "n_bins", d(fit_scale, "n_bins")),
        ("calibrate", "s_min", d(fit_scale, "s_bounds")[0]),
    ]


@pytest.mark.parametrize("cmd,dest,library", _library_defaults())
def test_cli_options_default_to_the_library(cmd, dest, library):
    """An option that a library function also has defaults to None ("the library's default",
    so it is not passed on) and its help shows the library's value: one definition."""
    import argparse

    from ltau_md.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[cmd]._actions if a.dest == dest)
    assert action.default is None
    shown = f"{library:g}" if isinstance(library, float) else str(library)
    assert f"(default {shown}" in " ".join(action.help.split()), action.help
