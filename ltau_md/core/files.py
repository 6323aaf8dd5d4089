"""Atomic file writing (a temporary file or directory in the same directory, then a rename) and
the rules for output directories: ltau-md never deletes or replaces a directory it did not
write (:func:`prepare_output_dir`, :func:`replace_dir`, :func:`atomic_dir`), and a running
command holds a lock on the directory it writes (:func:`output_dir`, :data:`LOCK`), so no other
run can take it away or interleave with it. Files and directories get the usual permissions of
the process umask (``0o666``/``0o777`` minus umask).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np

from ltau_md.core.exceptions import ArtifactError, OutputBusyError, OutputExistsError

try:  # POSIX advisory locks: released by the kernel when the holder dies, however it dies
    import fcntl
except ImportError:  # pragma: no cover (Windows: the lock falls back to the pid check)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK",
    "MARKER",
    "MARKER_FORMAT",
    "DirLock",
    "acquire_lock",
    "atomic_dir",
    "atomic_path",
    "check_not_busy",
    "check_output_dir",
    "current_umask",
    "dir_mode",
    "file_mode",
    "mark_output_dir",
    "output_dir",
    "output_kind",
    "prepare_output_dir",
    "read_manifest",
    "replace_dir",
    "save_npy_atomic",
    "sha256_file",
    "to_json_safe",
    "write_json_atomic",
    "write_text_atomic",
]

MARKER = ".ltau-md-output.json"
"""File stamped into every output directory ltau-md creates; holds ``{"kind": ...}``."""
MARKER_FORMAT = "ltau-md/output-dir"
LOCK = ".ltau-md.lock"
"""Lock file of a directory being written: an advisory lock (``flock``) held by the writing
process for as long as it writes, and a JSON record of that process (pid, host, start time,
command). Removed when the writer finishes; left by a killed writer, and then taken over by the
next run with a note."""
#: names in an output directory that are bookkeeping, not output
_BOOKKEEPING = frozenset({MARKER, LOCK})

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux
    ``/proc/self/status``); otherwise set and restored at once under a lock."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a newly written file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a newly created directory: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{suffix}.tmp", dir=path.parent)
    tmp = Path(tmp)
    try:
        os.fchmod(fd, file_mode())  # mkstemp creates 0600; a plain open() would honour umask
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array as .npy atomically (a crash leaves either the old file or none)."""
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
            fh.flush()
            os.fsync(fh.fileno())


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and next(path.iterdir(), None) is None


# -- the writer's lock --------------------------------------------------------------------------

def _flock(fd: int) -> bool | None:
    """Try to take the advisory lock of ``fd`` without waiting: True taken, False held by
    another open file (another process, or this one elsewhere), None where the file system
    or the platform has no such locks."""
    if fcntl is None:  # pragma: no cover
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # e.g. ENOLCK / EOPNOTSUPP on some network file systems
        return None
    return True


def _read_record(fd: int) -> dict:
    try:
        obj = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _pid_alive(record: dict) -> bool:
    """Whether the process a lock record names may still run (unknown host: assume so)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy(path: Path, record: dict) -> OutputBusyError:
    who = f"ltau-md pid {record.get('pid', '?')}"
    if record.get("host") and record.get("host") != socket.gethostname():
        who += f" on {record['host']}"
    since = f" since {record['started']}" if record.get("started") else ""
    return OutputBusyError(
        f"{path} is being written by {who}{since}; it is left untouched: wait for that run "
        "to finish (or stop it) or choose another output directory")


class DirLock:
    """The lock a process holds on a directory it writes (see :data:`LOCK`); release it with
    :meth:`release` (removes the lock file)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        """Remove the lock file (if it is still this lock's) and let the lock go."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path / LOCK).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path / LOCK)
        os.close(self._fd)
        self._fd = -1


def acquire_lock(path: str | os.PathLike, target: str | None = None) -> DirLock:
    """Take the writer's lock of the existing directory ``path`` (creating :data:`LOCK`);
    ``target`` is the name of the directory a temporary ``path`` will be renamed to.

    Raises :class:`~ltau_md.core.exceptions.OutputBusyError` naming the writer when a live
    process holds it. A lock left by a writer that is gone (killed) is taken over with a
    warning naming it."""
    path = Path(path)
    while True:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            taken = _flock(fd)
            record = _read_record(fd)
            ours = record.get("pid") == os.getpid() and record.get("host") == socket.gethostname()
            if taken is False or (taken is None and record and not ours and _pid_alive(record)):
                raise _busy(path, record)
            try:  # the file may have been released (unlinked) between open and lock: retry
                same = os.stat(path / LOCK).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            if record.get("pid") is not None and not ours:
                warnings.warn(f"{path}: taking over the lock left by ltau-md pid "
                              f"{record.get('pid')} (started {record.get('started', '?')}), "
                              "which is no longer running", stacklevel=2)
            mine = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "command": " ".join(sys.argv)[:500], "target": target}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(mine).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return DirLock(path, fd)


def _live_holder(lock_file: Path) -> tuple[bool, dict]:
    """``(alive, record)`` of the lock file: whether a live process holds it, and its record
    (``{}`` when there is no readable lock file)."""
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        return False, {}
    try:
        taken = _flock(fd)
        record = _read_record(fd)
        return taken is False or (taken is None and _pid_alive(record)), record
    finally:
        os.close(fd)  # closing lets a lock taken here go


def check_not_busy(path: str | os.PathLike) -> None:
    """Raise :class:`~ltau_md.core.exceptions.OutputBusyError` if a live process holds the
    lock of ``path`` (a lock left by a dead writer is not an obstacle)."""
    alive, record = _live_holder(Path(path) / LOCK)
    if alive:
        raise _busy(Path(path), record)


def output_kind(path: str | os.PathLike) -> str | None:
    """What ltau-md wrote ``path``: the kind in its marker file (:data:`MARKER`), else the
    ``format`` of its ``manifest.json``; None for anything else (a foreign directory)."""
    path = Path(path)
    for name, key in ((MARKER, "kind"), ("manifest.json", "format")):
        f = path / name
        if f.is_file():
            try:
                obj = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                return None
            value = obj.get(key) if isinstance(obj, dict) else None
            return value if isinstance(value, str) else None
    return None


def _refuse(path: Path, kind: str, found: str | None, overwrite: bool) -> None:
    """Raise OutputExistsError unless ``path`` may be replaced by a new ``kind`` output."""

    if not path.exists() or _is_empty_dir(path):
        return
    if not path.is_dir():
        raise OutputExistsError(f"{path} exists and is not a directory; choose another output")
    if found is None:
        raise OutputExistsError(
            f"{path} is not empty and was not written by ltau-md; it is left untouched: "
            "choose a new or empty output directory")
    if found != kind:
        raise OutputExistsError(
            f"{path} holds ltau-md output of another kind ({found!r}, not {kind!r}); it is left "
            "untouched: choose another output directory")
    if not overwrite:
        raise OutputExistsError(
            f"{path} holds an earlier ltau-md {kind!r} output; pass overwrite=True "
            "(--overwrite) to replace it, or choose another output directory")


def check_output_dir(path: str | os.PathLike, kind: str, overwrite: bool = False) -> None:
    """Raise OutputExistsError unless ``path`` is missing, empty, or (with ``overwrite``) an
    earlier ltau-md output of ``kind`` (output marker kind or manifest format). Call it before
    long work whose result will be written to ``path``."""
    path = Path(path)
    check_not_busy(path)
    _refuse(path, kind, output_kind(path), overwrite)


def mark_output_dir(path: str | os.PathLike, kind: str) -> None:
    """Stamp the existing directory ``path`` as ltau-md output of ``kind`` (:data:`MARKER`)."""
    write_json_atomic(Path(path) / MARKER, {"format": MARKER_FORMAT, "kind": kind})


def prepare_output_dir(path: str | os.PathLike, kind: str, overwrite: bool = False) -> Path:
    """Make ``path`` a fresh output directory of ``kind`` (e.g. "md", "relax", "demo", "is2rs")
    and return it.

    A missing or empty directory is created and stamped with :data:`MARKER`. A non-empty one
    is refused with :class:`~ltau_md.core.exceptions.OutputExistsError` (a ``FileExistsError``) and
    left untouched, unless its marker says it is an earlier output of the same ``kind`` and
    ``overwrite`` is true: then the old directory is moved aside, a fresh one stamped in its
    place and the old one removed, so nothing of the earlier run mixes with the new one.
    """
    path = Path(path)
    only_marker = path.is_dir() and (path / MARKER).is_file() and \
        {c.name for c in path.iterdir()} <= _BOOKKEEPING
    if only_marker and output_kind(path) == kind:  # set up earlier, nothing written yet
        return path
    if path.exists() and not _is_empty_dir(path):
        found = output_kind(path) if (path / MARKER).is_file() else None
        _refuse(path, kind, found, overwrite)
        old = _aside(path)
        try:
            os.replace(path, old)
        except OSError:  # e.g. a mount point: clear it in place
            for child in path.iterdir():
                if child.name not in _BOOKKEEPING:
                    _remove(child)
        else:
            path.mkdir(parents=True, exist_ok=True)
            mark_output_dir(path, kind)
            _remove(old)
            return path
    path.mkdir(parents=True, exist_ok=True)
    mark_output_dir(path, kind)
    return path


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, kind: str, overwrite: bool = False, *,
               resume: bool = False) -> Iterator[Path]:
    """Prepare ``path`` as :func:`prepare_output_dir` does (or, with ``resume``, keep an
    earlier output of ``kind`` as it is) and hold its writer's lock while the body runs.

    A directory whose lock a live process holds is refused before anything is touched
    (:class:`~ltau_md.core.exceptions.OutputBusyError`, naming the pid), with or without
    ``overwrite``; a lock left by a dead writer is taken over with a warning. The lock file is
    removed when the body ends, however it ends (a ``kill -9`` leaves it for the next run)."""
    path = Path(path)
    ours = (path / LOCK).is_file() and output_kind(path) is not None
    old = acquire_lock(path) if ours else None
    try:
        if resume and path.is_dir() and output_kind(path) == kind:
            out = path
        else:
            out = prepare_output_dir(path, kind, overwrite)
        same = old is not None and (out / LOCK).is_file() and \
            os.stat(out / LOCK).st_ino == os.fstat(old._fd).st_ino
        lock = old if same else acquire_lock(out)
    except BaseException:
        if old is not None:
            old.release()
        raise
    if old is not None and old is not lock:
        old.release()
    try:
        yield out
    finally:
        lock.release()


def _aside(path: Path) -> Path:
    """A fresh hidden sibling name to move ``path`` to before it is removed."""
    path = Path(os.path.abspath(path))  # "." has no name
    return path.with_name(f".{path.name}.old-{os.getpid()}-{os.urandom(4).hex()}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def replace_dir(tmp_dir: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a fully written directory ``tmp_dir`` onto ``final``.

    ``final`` may be missing, an empty directory, or an artifact of the same kind as
    ``tmp_dir`` (same ``manifest.json`` "format", or same output marker); anything else is
    refused with OutputExistsError and left untouched. A replaced directory is moved aside
    first and removed only after the new one is in place.
    """
    tmp_dir, final = Path(tmp_dir), Path(final)
    kind = output_kind(tmp_dir)
    if kind is None and final.exists() and not _is_empty_dir(final):

        raise OutputExistsError(f"refusing to replace {final}: the new directory {tmp_dir} "
                                "carries no manifest.json or output marker")
    if kind is not None:
        _refuse(final, kind, output_kind(final), overwrite=True)
    os.chmod(tmp_dir, dir_mode())  # mkdtemp creates 0700
    old = None
    if final.exists():
        old = _aside(final)
        os.replace(final, old)
    os.replace(tmp_dir, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, kind: str | None = None, *,
               overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; on success rename it onto ``final``.

    Write everything, including ``manifest.json``, into the yielded directory. ``final`` must
    be missing or empty, or (with ``overwrite``) an artifact of the same kind: checked before
    the work starts when ``kind`` is given (the manifest "format" or marker kind expected) and
    always by :func:`replace_dir` at the end. Without a manifest, a ``kind`` is stamped as an
    output marker. On an exception the temporary directory is removed and ``final`` is left
    untouched. The directory gets mode ``0o777 & ~umask``.
    """

    final = Path(final)
    if final.exists() and not _is_empty_dir(final):
        if not overwrite:
            raise OutputExistsError(f"{final} exists; pass overwrite=True (--overwrite) to "
                                    "replace it, or choose another output directory")
        if kind is not None:
            _refuse(final, kind, output_kind(final), overwrite=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    lock = None
    try:
        os.chmod(tmp, dir_mode())  # mkdtemp creates 0700
        lock = acquire_lock(tmp, target=final.name)
        yield tmp
        lock.release()
        if kind is not None and output_kind(tmp) is None:
            mark_output_dir(tmp, kind)
        replace_dir(tmp, final)
    except BaseException:
        if lock is not None:
            lock.release()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _sweep_leftovers(final: Path) -> None:
    """Before writing ``final`` through a temporary sibling: refuse if a live process is
    writing ``final`` that way (OutputBusyError naming it), and remove the temporary
    directories a killed writer of ``final`` left behind (those whose lock record names
    ``final`` and whose writer is gone), with a warning."""
    for tmp in final.parent.glob(f".{glob_escape(final.name)}.*.tmp"):
        if not tmp.is_dir() or tmp.is_symlink():
            continue
        alive, record = _live_holder(tmp / LOCK)
        if record.get("target") != final.name:
            continue  # another directory's, or not provably ours
        if alive:
            raise _busy(final, record)
        shutil.rmtree(tmp, ignore_errors=True)
        warnings.warn(f"removed {tmp}, left by a killed ltau-md run (pid {record.get('pid')}, "
                      f"started {record.get('started', '?')}) writing {final}", stacklevel=3)


def read_manifest(path: str | os.PathLike, fmt: str, version: int, what: str) -> dict:
    """Read ``path/manifest.json`` of an artifact of kind ``what`` and check its format name and
    version; raise ArtifactError naming the problem (missing, corrupt, foreign, too new)."""

    path = Path(path)
    mf = path / "manifest.json"
    if not mf.exists():
        raise ArtifactError(f"no complete {what} at {path}: manifest.json is missing")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"corrupt {what} manifest {mf}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise ArtifactError(f"{mf} is not an ltau-md {what} manifest")
    if int(manifest.get("version", 0)) > version:
        raise ArtifactError(f"{what} {path} has format version {manifest['version']}; this "
                            f"ltau-md reads up to {version}: upgrade ltau-md")
    return manifest


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def to_json_safe(obj: Any) -> Any:
    """Copy of nested dicts/lists/arrays with NaN/inf -> None (strict JSON), numpy arrays ->
    lists and numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {k: to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json_safe(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
