"""Atomic file writing: write to a temporary file in the same directory, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{suffix}.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
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


def replace_dir(tmp_dir: Path, final: Path) -> None:
    """Move a fully written directory onto ``final``, replacing an existing one.

    The old directory is moved aside first and removed only after the new one is in place.
    """
    final = Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp_dir, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(path: str | os.PathLike, fmt: str, version: int, what: str) -> dict:
    """Read ``path/manifest.json`` of an artifact of kind ``what`` and check its format name and
    version; raise ArtifactError naming the problem (missing, corrupt, foreign, too new)."""
    from .exceptions import ArtifactError

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


def read_structures(data: str | os.PathLike | Any) -> list:
    """A list of ase.Atoms from a list of them, or from any ASE-readable file (all frames);
    DataError for a missing file or an item that is not an Atoms."""
    from ase import Atoms

    from .exceptions import DataError

    if isinstance(data, (str, os.PathLike)):
        import ase.io

        p = Path(data)
        if not p.exists():
            raise DataError(f"structure file {p} does not exist")
        out = ase.io.read(p, index=":")
        return list(out) if isinstance(out, list) else [out]
    out = list(data)
    for i, a in enumerate(out):
        if not isinstance(a, Atoms):
            raise DataError(f"item {i} is a {type(a).__name__}, expected ase.Atoms")
    return out


def to_json_safe(obj: Any) -> Any:
    """Copy of nested dicts/lists with NaN/inf -> None (strict JSON) and numpy scalars ->
    Python numbers."""
    if isinstance(obj, dict):
        return {k: to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
