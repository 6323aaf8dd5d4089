"""A run's files tell the truth however it ends: "running" while it goes, "terminated" after
SIGTERM (exit 143, files valid), a failed write ends with one line and exit 2."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time

import ase.io
import pytest

from ltau_md.cli import main
from ltau_md.core.files import LOCK


@pytest.fixture
def start(tiny_run, tmp_path):
    ase.io.write(tmp_path / "start.xyz", ase.io.read(tiny_run.val_xyz, index=0))
    return tmp_path / "start.xyz"


def test_sigterm_during_md_ends_terminated_with_valid_files(tiny_run, start, tmp_path, capsys):
    out = tmp_path / "md"
    cmd = [sys.executable, "-m", "ltau_md.cli", "md", str(start), "--model",
           str(tiny_run.checkpoint), "--estimator", str(tiny_run.estimator_dir),
           "--steps", "100000", "--out", str(out), "--no-progress", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    running = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            s = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            s = {}
        if s.get("n_observed", 0) >= 3:
            running = s["status"]
            break
        time.sleep(0.2)
    assert running == "running"                      # what a reader sees mid-run
    # a second run on the same --out, even with --overwrite, cannot take it away
    second = cmd[3:] + ["--overwrite", "--steps", "5"]
    assert main(second) == 2
    err = capsys.readouterr().err
    assert f"being written by ltau-md pid {proc.pid}" in err and len(err.splitlines()) == 1
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "terminated" and s["stopped"]["reason"] == "terminated"
    rows = (out / "steps.jsonl").read_text().splitlines()
    assert len(rows) == s["n_observed"] and all(json.loads(r) for r in rows)
    assert not (out / LOCK).exists()                  # the lock went with its writer


def test_sigterm_during_relax_lists_the_structures_not_run(tiny_run, tmp_path):
    frames = ase.io.read(tiny_run.val_xyz, ":")
    for i, a in enumerate(frames):
        a.rattle(0.1, seed=i)
    ase.io.write(tmp_path / "many.xyz", frames)
    out = tmp_path / "relax"
    cmd = [sys.executable, "-m", "ltau_md.cli", "relax", str(tmp_path / "many.xyz"),
           "--model", str(tiny_run.checkpoint), "--estimator", str(tiny_run.estimator_dir),
           "--steps", "100000", "--fmax", "1e-9", "--out", str(out), "--no-progress",
           "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads((out / "0000" / "summary.json").read_text())["n_observed"] >= 3:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err
    rows = json.loads((out / "summary.json").read_text())
    assert len(rows) == len(frames)
    assert rows[0]["status"] == "terminated"
    assert [r["status"] for r in rows[1:]] == ["not_run"] * (len(frames) - 1)
    assert (out / "summary.csv").read_text().count("not_run") == len(frames) - 1


def test_a_failed_write_ends_with_one_line_and_exit_2(tiny_run, start, tmp_path,
                                                      monkeypatch, capsys):
    import ltau_md.core.observers._monitor as monitor_module

    real = monitor_module.write_json_atomic
    calls = {"n": 0}

    def full_disk(path, obj):
        calls["n"] += 1
        if calls["n"] > 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(monitor_module, "write_json_atomic", full_disk)
    rc = main(["md", str(start), "--model", str(tiny_run.checkpoint), "--estimator",
               str(tiny_run.estimator_dir), "--steps", "50", "--out", str(tmp_path / "md"),
               "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert "cannot write" in err[0] and "summary.json" in err[0]
    assert "No space left on device" in err[0]
