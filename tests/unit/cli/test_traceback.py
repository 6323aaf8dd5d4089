"""An unexpected error is one line (exit 1) unless ``ltau-md --traceback`` asks for the rest;
an expected (ltau-md) error is one line and exit 2 either way, or raised with --traceback."""

from __future__ import annotations

import pytest

from ltau_md import cli
from ltau_md.core.exceptions import DataError


def _patch_fit(monkeypatch, exc):
    import ltau_md.cli.fit as fit_cmd

    def boom(args):
        raise exc

    monkeypatch.setattr(fit_cmd, "run", boom)


def _argv(tmp_path, *extra):
    return [*extra, "fit", str(tmp_path), "--model", str(tmp_path / "m.pth"),
            "--out", str(tmp_path / "est")]


def test_unexpected_error_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    _patch_fit(monkeypatch, ZeroDivisionError("division by zero in step 3"))
    assert cli.main(_argv(tmp_path)) == cli.EXIT_UNEXPECTED == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "ZeroDivisionError: division by zero in step 3" in err[0]
    assert "--traceback" in err[0]


def test_traceback_flag_reraises(tmp_path, monkeypatch):
    _patch_fit(monkeypatch, ZeroDivisionError("boom"))
    with pytest.raises(ZeroDivisionError, match="boom"):
        cli.main(_argv(tmp_path, "--traceback"))
    _patch_fit(monkeypatch, DataError("bad frames"))
    with pytest.raises(DataError, match="bad frames"):
        cli.main(_argv(tmp_path, "-T"))


def test_expected_error_is_exit_2(tmp_path, monkeypatch, capsys):
    _patch_fit(monkeypatch, DataError("bad frames"))
    assert cli.main(_argv(tmp_path)) == cli.EXIT_BAD_INPUT == 2
    assert capsys.readouterr().err.strip() == "ltau-md fit: error: bad frames"
