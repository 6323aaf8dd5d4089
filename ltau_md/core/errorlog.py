"""Streaming on-disk log of per-atom force errors, one epoch at a time (LTAU Algorithm 1 input).

Layout of a log directory::

    LOG/
      manifest.json          format version, n_atoms, fingerprint, members
      meta.npz               species (N,), frame_offsets (F+1,), ref_force_norm (N,) in eV/A
      member_000/
        epoch_000000.npy     float32 (N,)   eps_i = |F_i,ref - F_i,model|_2 in eV/A
        epoch_000000.comp.npy  optional float32 (N, 3) per-component errors

Each epoch file is written to a temporary file and renamed into place, so an epoch is either
complete or absent; leftovers of a crash mid-epoch (``.*.tmp`` files) are deleted on reopen and
never read. Nothing holds more than one epoch in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ltau_md.core.exceptions import ArtifactError, DataError
from ltau_md.core.files import read_manifest, save_npy_atomic, write_json_atomic
from ltau_md.core.validation import check_frame_offsets

__all__ = [
    "ErrorLog",
    "FORMAT",
    "FRAMES_FILE",
    "VALIDATION_FILE",
    "VERSION",
    "check_same_dataset",
    "dataset_fingerprint",
    "is_error_log",
]

FORMAT = "ltau-md/error-log"
VERSION = 1
_EPOCH_RE = re.compile(r"^epoch_(\d{6})\.npy$")
#: the copy of the training frames written next to an error log (ASE trajectory, float64), so
#: descriptors are computed in exactly the logged atom order (fingerprint-checked)
FRAMES_FILE = "frames.traj"
#: the training run's validation frames written beside them: held-out in-domain structures
#: that ``ltau-md fit`` uses for the in-domain alarm statistics when none are given
VALIDATION_FILE = "validation.traj"


def dataset_fingerprint(
    species: np.ndarray,
    frame_offsets: np.ndarray,
    positions: np.ndarray | None = None,
    forces: np.ndarray | None = None,
) -> str:
    """Hash of a training set's atoms in their logged order (species, frames, and optionally
    positions in A and forces in eV/A, rounded to 1e-5) so a log or estimator cannot be paired
    with another dataset or another atom order."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(species, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(frame_offsets, dtype=np.int64).tobytes())
    for arr in (positions, forces):
        if arr is not None:
            q = np.round(np.asarray(arr, dtype=np.float64) * 1e5).astype(np.int64)
            h.update(np.ascontiguousarray(q).tobytes())
    return h.hexdigest()[:32]


def check_same_dataset(logs: Sequence[ErrorLog]) -> None:
    """Raise ArtifactError unless all ``logs`` were written for the same training set (same
    fingerprint and atom count), as ensemble members must be."""
    ref = logs[0]
    for lg in logs[1:]:
        if lg.fingerprint != ref.fingerprint or lg.n_atoms != ref.n_atoms:
            raise ArtifactError(
                f"error logs {ref.path} and {lg.path} were written for different training sets "
                f"(fingerprints {ref.fingerprint} vs {lg.fingerprint}): ensemble members must be "
                "trained on the same data in the same order. The usual cause: the member's "
                "seed also set the data split (nequip's data.seed: ${seed}); give the data "
                "module its own seed, the same for every member, as examples/*.yaml do "
                "(data_seed)")


def is_error_log(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds an ltau-md error log (its manifest names the format)."""
    mf = Path(path) / "manifest.json"
    try:
        return json.loads(mf.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class ErrorLog:
    """Per-atom force-error log of one training set for one or more ensemble members.

    Create with :meth:`create`, reopen (to resume or to read) with :meth:`open`.
    """

    def __init__(self, path: Path, manifest: dict, species: np.ndarray,
                 frame_offsets: np.ndarray, ref_force_norm: np.ndarray):
        self.path = Path(path)
        self._manifest = manifest
        self.species = species
        self.frame_offsets = frame_offsets
        self.ref_force_norm = ref_force_norm

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        species: Sequence[int] | np.ndarray,
        frame_offsets: Sequence[int] | np.ndarray,
        ref_force_norm: Sequence[float] | np.ndarray,
        fingerprint: str | None = None,
        exist_ok: bool = False,
    ) -> ErrorLog:
        """Create a new log for N atoms.

        species: atomic numbers (N,); frame_offsets: (F+1,) start of each frame, last = N;
        ref_force_norm: |F_i,ref| in eV/A (N,), used by ``rtol``. With ``exist_ok`` an
        existing log for the same fingerprint is reopened instead (resume).
        """
        path = Path(path)
        species = np.asarray(species, dtype=np.int32)
        frame_offsets = np.asarray(frame_offsets, dtype=np.int64)
        ref = np.asarray(ref_force_norm, dtype=np.float32)
        n = species.shape[0]
        if species.ndim != 1 or n == 0:
            raise DataError(f"species must be a non-empty 1-D array, got shape {species.shape}")
        if ref.shape != (n,):
            raise DataError(f"ref_force_norm has shape {ref.shape}, expected ({n},)")
        if not np.all(np.isfinite(ref)):
            bad = np.flatnonzero(~np.isfinite(ref))[:10].tolist()
            raise DataError(f"ref_force_norm has NaN/inf at atoms {bad}")
        frame_offsets = check_frame_offsets(frame_offsets, n)
        if fingerprint is None:
            fingerprint = dataset_fingerprint(species, frame_offsets)
        if (path / "manifest.json").exists():
            if not exist_ok:
                raise FileExistsError(f"error log already exists at {path}")
            log = cls.open(path)
            if log.fingerprint != fingerprint or log.n_atoms != n:
                raise ArtifactError(
                    f"error log at {path} belongs to another dataset "
                    f"(fingerprint {log.fingerprint}, n_atoms {log.n_atoms}; "
                    f"expected {fingerprint}, {n})"
                )
            return log
        path.mkdir(parents=True, exist_ok=True)
        tmp_meta = path / ".meta.tmp.npz"
        np.savez(tmp_meta, species=species, frame_offsets=frame_offsets, ref_force_norm=ref)
        os.replace(tmp_meta, path / "meta.npz")
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "n_atoms": int(n),
            "n_frames": int(frame_offsets.shape[0] - 1),
            "fingerprint": fingerprint,
        }
        write_json_atomic(path / "manifest.json", manifest)
        return cls(path, manifest, species, frame_offsets, ref)

    @classmethod
    def open(cls, path: str | os.PathLike) -> ErrorLog:
        """Open an existing log; removes leftovers of an interrupted write."""
        path = Path(path)
        manifest = read_manifest(path, FORMAT, VERSION, "error log")
        try:
            with np.load(path / "meta.npz") as meta:
                species = meta["species"]
                offsets = meta["frame_offsets"]
                ref = meta["ref_force_norm"]
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"corrupt or missing {path / 'meta.npz'}: {exc}") from exc
        if species.shape[0] != manifest["n_atoms"]:
            raise ArtifactError(f"{path}: meta.npz has {species.shape[0]} atoms, "
                                f"manifest says {manifest['n_atoms']}")
        for tmp in path.glob("member_*/.*.tmp"):
            tmp.unlink(missing_ok=True)
        return cls(path, manifest, species, offsets, ref)

    # ------------------------------------------------------------------ properties
    @property
    def n_atoms(self) -> int:
        return int(self._manifest["n_atoms"])

    @property
    def n_frames(self) -> int:
        return int(self.frame_offsets.shape[0] - 1)

    @property
    def fingerprint(self) -> str:
        return str(self._manifest["fingerprint"])

    @property
    def members(self) -> list[int]:
        """Ensemble members that have at least one logged epoch."""
        out = []
        for d in sorted(self.path.glob("member_*")):
            if d.is_dir() and self.epochs(int(d.name.split("_")[1])):
                out.append(int(d.name.split("_")[1]))
        return out

    def _member_dir(self, member: int) -> Path:
        return self.path / f"member_{int(member):03d}"

    def epochs(self, member: int = 0) -> list[int]:
        """Sorted epoch numbers logged for ``member``: consecutive, so position i of the list
        is epoch ``epochs[0] + i``. ArtifactError names the missing epochs of a log with a hole
        (a deleted file), which would otherwise silently shift every epoch window."""
        d = self._member_dir(member)
        if not d.is_dir():
            return []
        out = sorted(int(m.group(1)) for f in d.iterdir() if (m := _EPOCH_RE.match(f.name)))
        if out and out[-1] - out[0] + 1 != len(out):
            missing = sorted(set(range(out[0], out[-1] + 1)) - set(out))
            raise ArtifactError(
                f"error log {self.path}, member {member}: epoch(s) {missing[:10]} are missing "
                f"between {out[0]} and {out[-1]}; the log is incomplete (re-run training or "
                "remove the later epochs)")
        return out

    def n_epochs(self, member: int = 0) -> int:
        return len(self.epochs(member))

    # ------------------------------------------------------------------ writing
    def append(
        self,
        errors: np.ndarray,
        *,
        member: int = 0,
        epoch: int | None = None,
        components: np.ndarray | None = None,
    ) -> int:
        """Append one epoch of per-atom error norms (eV/A, shape (N,)) for ``member``.

        ``epoch`` defaults to one past the last logged epoch. An ``epoch`` at or before the
        last logged one (training resumed from an earlier checkpoint) first deletes the logged
        epochs from ``epoch`` on, so the log never holds duplicates; an ``epoch`` beyond the
        next one raises (a gap would lose data; a log starts at epoch 0). Returns the epoch
        number written.
        """
        errors = np.asarray(errors, dtype=np.float32)
        if errors.shape != (self.n_atoms,):
            raise DataError(f"errors has shape {errors.shape}, expected ({self.n_atoms},)")
        if not np.all(np.isfinite(errors)):
            bad = np.flatnonzero(~np.isfinite(errors))[:10].tolist()
            raise DataError(f"errors contain NaN/inf at atoms {bad}")
        if components is not None:
            components = np.asarray(components, dtype=np.float32)
            if components.shape != (self.n_atoms, 3):
                raise DataError(
                    f"components has shape {components.shape}, expected ({self.n_atoms}, 3)"
                )
        have = self.epochs(member)
        nxt = have[-1] + 1 if have else 0
        if epoch is None:
            epoch = nxt
        if epoch > nxt:
            raise DataError(
                f"member {member}: epoch {epoch} would leave a gap (next expected {nxt})"
            )
        d = self._member_dir(member)
        d.mkdir(parents=True, exist_ok=True)
        for e in have:
            if e >= epoch:
                (d / f"epoch_{e:06d}.npy").unlink(missing_ok=True)
                (d / f"epoch_{e:06d}.comp.npy").unlink(missing_ok=True)
        if components is not None:
            save_npy_atomic(d / f"epoch_{epoch:06d}.comp.npy", components)
        save_npy_atomic(d / f"epoch_{epoch:06d}.npy", errors)
        return epoch

    # ------------------------------------------------------------------ reading
    def read_epoch(self, epoch: int, member: int = 0, *, mmap: bool = True) -> np.ndarray:
        """Error norms (N,) of one epoch, eV/A (memory-mapped by default)."""
        f = self._member_dir(member) / f"epoch_{epoch:06d}.npy"
        if not f.exists():
            raise ArtifactError(f"member {member} has no epoch {epoch} in {self.path}")
        try:
            arr = np.load(f, mmap_mode="r" if mmap else None)
        except (ValueError, OSError, EOFError) as exc:  # EOFError: a zero-byte file
            raise ArtifactError(f"corrupt epoch file {f}: {type(exc).__name__}: {exc}") from exc
        if arr.shape != (self.n_atoms,) or arr.dtype != np.float32:
            raise ArtifactError(f"epoch file {f} has shape {arr.shape} dtype {arr.dtype}, "
                                f"expected ({self.n_atoms},) float32")
        return arr

    def read_components(self, epoch: int, member: int = 0) -> np.ndarray | None:
        """Per-component errors (N, 3) of one epoch if they were logged, else None."""
        f = self._member_dir(member) / f"epoch_{epoch:06d}.comp.npy"
        return np.load(f, mmap_mode="r") if f.exists() else None

    def window(self, member: int = 0, start: int | None = None,
               stop: int | None = None) -> list[int]:
        """Epoch numbers of ``member`` in the window ``epochs[start:stop]`` (Python slice
        semantics over the logged epochs, so ``start=-10`` means the last ten)."""
        return self.epochs(member)[slice(start, stop)]

    def iter_epochs(self, member: int = 0, start: int | None = None,
                    stop: int | None = None) -> Iterator[np.ndarray]:
        """Yield the (N,) error arrays of the window one epoch at a time."""
        for e in self.window(member, start, stop):
            yield self.read_epoch(e, member)

    def __repr__(self) -> str:
        mem = {m: self.n_epochs(m) for m in self.members}
        return f"ErrorLog({str(self.path)!r}, n_atoms={self.n_atoms}, epochs_per_member={mem})"
