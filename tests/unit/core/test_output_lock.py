"""Outputs nobody else can take away: a running writer holds a lock on its output directory
(files.output_dir, files.atomic_dir); a live writer's directory is refused with its pid, a
killed writer's lock and temporary directories are taken over or removed with a note."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

from ltau_md.core.exceptions import OutputBusyError, OutputExistsError
from ltau_md.core.files import (
    LOCK,
    atomic_dir,
    check_output_dir,
    output_dir,
    write_text_atomic,
)

HOLD = """
import sys, time
from ltau_md.core.files import {how}
with {how}(sys.argv[1], "md"{extra}) as d:
    (d / "x.txt").write_text("mine")
    print("ready", flush=True)
    time.sleep(600)
"""


def _holder(path, how="output_dir", extra=""):
    """A separate process writing ``path`` (holding its lock) until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(how=how, extra=extra),
                             str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc, sig=signal.SIGKILL):
    proc.send_signal(sig)
    proc.wait(timeout=30)


def test_live_writer_is_refused_with_its_pid_even_with_overwrite(tmp_path):
    out = tmp_path / "o"
    proc = _holder(out)
    try:
        for overwrite in (False, True):
            with pytest.raises(OutputBusyError, match=rf"being written by ltau-md pid {proc.pid}"):
                with output_dir(out, "md", overwrite=overwrite):
                    pytest.fail("entered a directory another process is writing")
            with pytest.raises(OutputBusyError, match=str(proc.pid)):
                check_output_dir(out, "md", overwrite=overwrite)
        assert (out / "x.txt").read_text() == "mine"          # nothing taken away
        record = json.loads((out / LOCK).read_text())
        assert record["pid"] == proc.pid
    finally:
        _kill(proc)


def test_busy_error_is_an_output_exists_error():
    assert issubclass(OutputBusyError, OutputExistsError)


def test_lock_is_held_while_the_body_runs_and_removed_however_it_ends(tmp_path):
    out = tmp_path / "o"
    with output_dir(out, "md") as d:
        assert json.loads((d / LOCK).read_text())["pid"] == os.getpid()
        with pytest.raises(OutputBusyError):          # this process, a second writer
            with output_dir(out, "md", overwrite=True):
                pass
    assert not (out / LOCK).exists()
    with pytest.raises(RuntimeError), output_dir(out, "md", overwrite=True):
        raise RuntimeError("boom")
    assert not (out / LOCK).exists()


def test_killed_writer_lock_is_taken_over_with_a_note(tmp_path):
    out = tmp_path / "o"
    proc = _holder(out)
    _kill(proc)
    assert json.loads((out / LOCK).read_text())["pid"] == proc.pid   # the stale lock
    with pytest.warns(UserWarning, match=rf"lock left by ltau-md pid {proc.pid}.*no longer"):
        check_output_dir(out, "md", overwrite=True)                  # not busy: a note only
        with output_dir(out, "md", overwrite=True) as d:
            assert json.loads((d / LOCK).read_text())["pid"] == os.getpid()
            assert not (d / "x.txt").exists()                        # started clean
    assert not (out / LOCK).exists()


def test_killed_writer_without_overwrite_is_still_an_earlier_output(tmp_path):
    out = tmp_path / "o"
    _kill(_holder(out))
    with pytest.raises(OutputExistsError, match="--overwrite"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with output_dir(out, "md"):
            pass
    assert (out / "x.txt").read_text() == "mine"


def test_resume_keeps_the_directory_and_locks_it(tmp_path):
    out = tmp_path / "o"
    with output_dir(out, "md") as d:
        write_text_atomic(d / "done.txt", "1")
    with output_dir(out, "md", resume=True) as d:
        assert (d / "done.txt").read_text() == "1" and (d / LOCK).is_file()


def test_foreign_directory_lock_file_is_not_touched(tmp_path):
    out = tmp_path / "foreign"
    out.mkdir()
    (out / LOCK).write_text("not ours")
    (out / "data.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="not written by ltau-md"):
        with output_dir(out, "md", overwrite=True):
            pass
    assert (out / LOCK).read_text() == "not ours"
    assert (out / "data.txt").read_text() == "precious"


def test_atomic_dir_refuses_a_live_writer_and_sweeps_a_killed_ones_leftover(tmp_path):
    final = tmp_path / "est"
    other = tmp_path / "est.b"             # its temporary names also start with ".est."
    proc_other = _holder(other, "atomic_dir")
    proc = _holder(final, "atomic_dir")
    try:
        with pytest.raises(OutputBusyError, match=str(proc.pid)):
            with atomic_dir(final, "md"):
                pass
    finally:
        _kill(proc)
    left = [p for p in tmp_path.glob(".est.*.tmp") if json.loads(
        (p / LOCK).read_text())["target"] == "est"]
    assert len(left) == 1 and (left[0] / "x.txt").read_text() == "mine"
    with pytest.warns(UserWarning, match=rf"removed .*left by a killed ltau-md run \(pid "
                      rf"{proc.pid}"):
        with atomic_dir(final, "md") as tmp:
            (tmp / "y.txt").write_text("new")
    assert not left[0].exists()
    assert (final / "y.txt").read_text() == "new" and not (final / LOCK).exists()
    # the live writer of est.b was neither refused as ours nor swept
    assert any(json.loads((p / LOCK).read_text())["target"] == "est.b"
               for p in tmp_path.glob(".est.*.tmp"))
    _kill(proc_other)


def test_atomic_dir_of_a_terminated_writer_leaves_nothing(tmp_path):
    final = tmp_path / "est"
    proc = _holder(final, "atomic_dir")
    _kill(proc, signal.SIGTERM)          # default SIGTERM: no Python cleanup either
    time.sleep(0.1)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with atomic_dir(final, "md") as tmp:
            (tmp / "y.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["est"]
