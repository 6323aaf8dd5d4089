"""Benchmark provenance: every script records its figures as ``benchmarks/results/<script>.json``.

A record holds the command line (absolute paths outside the checkout written ``OUT/<name>``),
the commit (and whether the tree had uncommitted changes outside the records folder), the
machine (CPUs, platform, library versions), the 1/5/15-minute load averages when the script
started (imported this module) and when it recorded, the UTC date and the result. The docs'
benchmark pages render these files (``ltau-benchmark`` directive); nothing else holds benchmark
figures.

``LTAU_BENCH_RESULTS`` names another results folder (e.g. for a trial run); the empty string
turns recording off.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_DIR", "record"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_LOAD_START = os.getloadavg()
_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("ltau-md", "torch", "faiss-cpu", "nequip", "ase", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _portable(arg: str) -> str:
    """``arg`` with a path of this checkout made relative to it and any other absolute path
    (a scratch or output directory of the machine) written ``OUT/<name>`` (also after
    "--flag=" or "NAME=")."""
    flag, eq, value = arg.partition("=") if "=" in arg else ("", "", arg)
    if value.startswith("/"):
        path = Path(value).resolve()
        try:
            value = str(path.relative_to(_ROOT))
        except ValueError:
            value = f"OUT/{path.name}"
    return f"{flag}{eq}{value}"


def _command() -> str:
    """The command line, the script named from the checkout's root whatever the working
    directory it was started from."""
    script = _portable(str(Path(sys.argv[0]).resolve())) if sys.argv[0] else ""
    return shlex.join(["python", script, *(_portable(a) for a in sys.argv[1:])])


def record(script: str, result: Any, *, name: str | None = None) -> Path | None:
    """Write ``result`` (JSON-able) with its provenance to ``RESULTS_DIR/<name>.json``.

    Parameters
    ----------
    script
        The benchmark script (``__file__``); its stem names the record unless ``name`` does.
    result
        The figures the script measured (the JSON it prints).
    name
        Record name, for scripts that keep several records (e.g. ``"acac_quick"``).

    Returns
    -------
    Path or None
        The record written (atomically: a reader sees the old record or the new one), or None
        when recording is off.
    """
    folder = os.environ.get("LTAU_BENCH_RESULTS")
    if folder == "":
        return None
    out_dir = Path(folder) if folder else RESULTS_DIR
    from ltau_md.core.files import to_json_safe, write_text_atomic  # one strict-JSON rule

    # the records themselves are outputs: a chain of benchmarks must not flag the next one
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  f":(exclude){RESULTS_DIR.relative_to(_ROOT).as_posix()}")
    doc = {
        "script": Path(script).name,
        "command": _command(),
        "commit": _git("rev-parse", "--short=12", "HEAD"),
        "uncommitted_changes": bool(status) if status is not None else None,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "versions": _versions()},
        "load_average": {"start": list(_LOAD_START), "end": list(os.getloadavg())},
        "result": to_json_safe(result),
    }
    path = out_dir / f"{name or Path(script).stem}.json"
    write_text_atomic(path, json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n")
    return path
