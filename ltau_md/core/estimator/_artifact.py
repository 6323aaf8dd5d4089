"""Saving and loading an estimator's fitted state: a directory with the FAISS index, the
summary and novelty arrays (``*.npy``) and a versioned, checksummed ``manifest.json``.

Format version 3 keeps the in-domain alarm statistics in their own ``"alarm_statistics"``
section; version 4 adds the fitted latent signals (``signal_<name>.npz`` and a ``"signals"``
section); version 5 may hold the novelty arrays of a sample of the training atoms
(``loo_rows.npy``). Versions 2 (alarm statistics inside ``"calibration"``) to 4 are read too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ltau_md._version import __version__
from ltau_md.core.confidence import ErrorSummary, make_edges
from ltau_md.core.estimator._alarm_statistics import InDomainStatistics
from ltau_md.core.estimator._calibration import Calibration
from ltau_md.core.estimator._index import check_index_kind
from ltau_md.core.estimator._novelty import NoveltyReference
from ltau_md.core.estimator._state import FittedState
from ltau_md.core.exceptions import ArtifactError, InvalidParameterError, LTAUError
from ltau_md.core.files import LOCK, atomic_dir, read_manifest, sha256_file, write_json_atomic
from ltau_md.core.signals import SIGNAL_CLASSES, LatentSignal

__all__ = [
    "FORMAT",
    "MANIFEST_DIGEST_KEY",
    "VERSION",
    "manifest_digest",
    "read_artifact",
    "write_artifact",
]

FORMAT = "ltau-md/estimator"
#: format version of saved estimators; 2: calibration section, checksummed manifest,
#: index_kind; 3: in-domain alarm statistics in their own section; 4: latent signals;
#: 5: the leave-one-out novelty reference of a sample of the training atoms (``loo_rows.npy``);
#: an estimator without one is written as version 4, which earlier ltau-md versions read
VERSION = 5
#: the oldest version read (older ones must be re-fitted)
_OLDEST = 2
#: manifest key holding the SHA-256 of the canonical JSON of the rest of the manifest
MANIFEST_DIGEST_KEY = "manifest_sha256"
_ARRAYS = ("hist", "p0", "mean", "n_epochs", "edges", "ref_force_norm", "species")
#: per-training-atom novelty references written beside the summary arrays
_NOVELTY_ARRAYS = ("knn_distance", "train_novelty")
_FILES = frozenset({"index.faiss", *(f"{a}.npy" for a in (*_ARRAYS, *_NOVELTY_ARRAYS))})
#: the files of an estimator fitted without an error log (``"summary"`` null)
_FILES_NO_LOG = frozenset({"index.faiss", "species.npy",
                           *(f"{a}.npy" for a in _NOVELTY_ARRAYS)})
#: the training atoms the novelty arrays belong to, when a sample (absent: all of them)
_LOO_ROWS = "loo_rows.npy"
_NEED = {"params": dict, "index_kind": str, "dim": int, "n_train": int, "species": list,
         "n_members": int, "n_epochs": list, "summary": (dict, type(None)), "files": dict}


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no whitespace) of ``manifest`` without its
    :data:`MANIFEST_DIGEST_KEY`."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_artifact(path: str | os.PathLike, params: Mapping[str, Any], state: FittedState
                   ) -> Path:
    """Write ``state`` and the JSON-able ``params`` to directory ``path``: ``index.faiss``, the
    arrays and ``manifest.json`` (format, version, parameters, index kind, shapes, species,
    the summary's scalars, SHA-256 of every file, the ``"calibration"`` and
    ``"alarm_statistics"`` sections, and ``manifest_sha256``).

    Written under a temporary name and renamed into place: an existing estimator at ``path``
    is replaced only by a complete one; any other non-empty directory is refused
    (OutputExistsError) and left untouched."""
    summary = state.summary
    train_species = np.asarray(state.novelty.species)
    species = sorted(int(z) for z in np.unique(train_species))
    with atomic_dir(path, FORMAT, overwrite=True) as tmp:
        faiss.write_index(state.index, str(tmp / "index.faiss"))
        if summary is None:  # no error log: the species only
            np.save(tmp / "species.npy", train_species.astype(np.int32))
        else:
            for name, arr in summary.arrays().items():
                np.save(tmp / f"{name}.npy", arr)
        np.save(tmp / "knn_distance.npy", state.novelty.knn_distance.astype(np.float32))
        np.save(tmp / "train_novelty.npy", state.novelty.train_novelty.astype(np.float32))
        if state.novelty.rows is not None:
            np.save(tmp / _LOO_ROWS, state.novelty.rows.astype(np.int64))
        signals = {}
        for name, sig in state.signals.items():
            meta, arrays = sig.state()
            np.savez(tmp / _signal_file(name), **arrays)
            signals[name] = meta
        manifest: dict[str, Any] = {
            "format": FORMAT, "version": VERSION if state.novelty.rows is not None else 4,
            "ltau_md_version": __version__,
            "params": dict(params), "index_kind": state.index_kind, "dim": int(state.index.d),
            "n_train": int(state.index.ntotal), "species": species,
            "n_members": 0 if summary is None else summary.n_members,
            "n_epochs": [] if summary is None else summary.n_epochs.tolist(),
            "summary": None if summary is None else summary.scalars(),
            "files": {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.name != LOCK},
        }
        if state.calibration is not None:
            manifest["calibration"] = state.calibration.to_dict()
        if state.alarm_statistics:
            manifest["alarm_statistics"] = state.alarm_statistics.to_dict()
        if signals:
            manifest["signals"] = signals
        manifest[MANIFEST_DIGEST_KEY] = manifest_digest(manifest)
        write_json_atomic(tmp / "manifest.json", manifest)
    return Path(path)


def _signal_file(name: str) -> str:
    return f"signal_{name}.npz"


def _read_signals(path: Path, m: Mapping[str, Any]) -> dict[str, LatentSignal]:
    """The fitted latent signals of a manifest's ``"signals"`` section."""
    out = {}
    for name, meta in (m.get("signals") or {}).items():
        if name not in SIGNAL_CLASSES:
            raise ArtifactError(f"estimator {path}: unknown signal {name!r} (known: "
                                f"{sorted(SIGNAL_CLASSES)})")
        try:
            with np.load(path / _signal_file(name)) as z:
                arrays = {k: z[k] for k in z.files}
            out[name] = SIGNAL_CLASSES[name].from_state(meta, arrays)
        except (OSError, ValueError, KeyError, TypeError, LTAUError) as exc:
            raise ArtifactError(f"estimator {path}: cannot read signal {name!r}: {exc}"
                                ) from exc
    return out


def _fitted_sections(m: Mapping[str, Any]) -> tuple[Calibration | None, InDomainStatistics]:
    """(calibration, alarm statistics) of a manifest; a version-2 calibration section holds
    the statistics under "thresholds", and one with ``area`` None calibrated nothing."""
    cal = m.get("calibration")
    stats = m.get("alarm_statistics", {})
    if m.get("version") == 2 and isinstance(cal, Mapping):
        cal = dict(cal)
        stats = cal.pop("thresholds", {})
        if cal.get("area") is None:
            cal = None
    return (None if cal is None else Calibration.from_dict(cal),
            InDomainStatistics.from_dict(stats))


def read_artifact(path: str | os.PathLike, param_names: frozenset[str] | set[str],
                  validate: Callable[[dict[str, Any]], None], *, verify: bool = True,
                  mmap: bool = False) -> tuple[dict[str, Any], FittedState]:
    """Read an estimator directory written by :func:`write_artifact`: (parameters, state).

    The manifest's own digest, its parameters (``param_names`` exactly, checked by
    ``validate``, which raises InvalidParameterError), and the consistency of its counts,
    dimension, species, index kind and calibration with the stored arrays and index are
    always checked; with ``verify`` every file's SHA-256 too. ``mmap`` memory-maps the
    summary arrays. Any problem raises ArtifactError with the reason."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"no estimator directory at {path}")
    m = read_manifest(path, FORMAT, VERSION, "estimator")
    mf = path / "manifest.json"
    if m.get("version") not in range(_OLDEST, VERSION + 1):
        raise ArtifactError(
            f"estimator {path} has format version {m.get('version')}, from before the "
            f"checksummed manifest and fitted calibration (version {_OLDEST}): re-fit it "
            "(`ltau-md fit`) and calibrate it again (`ltau-md calibrate`)")
    if m.get(MANIFEST_DIGEST_KEY) != manifest_digest(m):
        raise ArtifactError(f"estimator manifest {mf} was edited or is corrupt (its "
                            f"{MANIFEST_DIGEST_KEY} does not match its content)")
    for key, typ in _NEED.items():
        if key not in m or not isinstance(m[key], typ):
            names = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
            raise ArtifactError(f"estimator manifest {mf} lacks {key!r} or it is not a "
                                f"{names}")
    files = m["files"]
    has_log = m["summary"] is not None
    expected = ((_FILES if has_log else _FILES_NO_LOG)
                | {_signal_file(n) for n in (m.get("signals") or {})}
                | ({_LOO_ROWS} & set(files)))
    if set(files) != expected:
        raise ArtifactError(f"estimator manifest {mf} lists files {sorted(files)}, "
                            f"expected {sorted(expected)}")
    for name, digest in files.items():
        f = path / name
        if not f.exists():
            raise ArtifactError(f"estimator {path} is incomplete: {name} is missing")
        if verify and sha256_file(f) != digest:
            raise ArtifactError(f"estimator file {f} is corrupt (checksum mismatch)")
    params = dict(m["params"])
    if m["version"] < 4:  # parameters added since
        params.setdefault("signals", [])
    if set(params) != set(param_names):
        raise ArtifactError(f"estimator manifest {mf}: parameters "
                            f"{sorted(set(params) ^ set(param_names))} are unknown or missing")
    for key in ("window", "signals"):
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    if isinstance(params["atol"], dict):  # JSON keys are strings; Z is an int in Python
        params["atol"] = {int(z) if str(z).isdigit() else z: v
                          for z, v in params["atol"].items()}
    try:
        validate(params)
        calibration, alarm_statistics = _fitted_sections(m)
    except InvalidParameterError as exc:
        raise ArtifactError(f"estimator {path}: {exc}") from exc
    kind = m["index_kind"]
    try:
        index = faiss.read_index(str(path / "index.faiss"))
    except RuntimeError as exc:
        raise ArtifactError(f"cannot read FAISS index {path / 'index.faiss'}: {exc}") from exc
    if not check_index_kind(index, kind):
        raise ArtifactError(f"estimator {path}: index_kind {kind!r} does not match the "
                            f"stored {type(index).__name__}")
    try:
        arrays = {n: np.load(path / f"{n}.npy", mmap_mode="r" if mmap else None)
                  for n in (_ARRAYS if has_log else ("species",))}
        novelty = {n: np.load(path / f"{n}.npy") for n in _NOVELTY_ARRAYS}
        rows = np.load(path / _LOO_ROWS) if _LOO_ROWS in files else None
    except (OSError, ValueError, EOFError) as exc:
        raise ArtifactError(f"estimator {path}: cannot read the summary arrays: {exc}"
                            ) from exc
    summary = ErrorSummary.from_arrays(arrays, m["summary"]) if has_log else None
    species = summary.species if has_log else np.asarray(arrays["species"])
    _check_consistent(path, m, params, index, summary, novelty, species, rows)
    ref = NoveltyReference(params["novelty"], novelty["knn_distance"], species,
                           train_novelty=novelty["train_novelty"], rows=rows)
    signals = _read_signals(path, m)
    bad = [n for n, sig in signals.items() if sig.dim_ != index.d]
    if bad:
        raise ArtifactError(f"estimator {path} is inconsistent: signals {bad} were fitted on "
                            f"descriptors of another dimension than the index's {index.d}")
    return params, FittedState(index=index, index_kind=kind, summary=summary, novelty=ref,
                               calibration=calibration, alarm_statistics=alarm_statistics,
                               signals=signals)


def _check_consistent(path: Path, m: Mapping[str, Any], params: Mapping[str, Any],
                      index: faiss.Index, summary: ErrorSummary | None,
                      novelty: Mapping[str, np.ndarray], train_species: np.ndarray,
                      rows: np.ndarray | None) -> None:
    problems = []
    n = int(np.asarray(train_species).shape[0])
    n_loo = n
    if rows is not None:
        n_loo = int(rows.shape[0]) if rows.ndim == 1 else -1
        if (n_loo < 1 or not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0
                or rows.max() >= n or np.any(np.diff(rows) <= 0)):
            problems.append(f"{_LOO_ROWS} must hold increasing training-atom rows in [0, {n})")
        elif params["novelty"] == "local":
            problems.append(f'"local" novelty needs all atoms, but {_LOO_ROWS} holds a sample')
    if not (index.ntotal == n == m["n_train"]):
        problems.append(f"n_train {m['n_train']}, index holds {index.ntotal} vectors, "
                        f"arrays {n} atoms")
    if index.d != m["dim"]:
        problems.append(f"dim {m['dim']}, index dimension {index.d}")
    members = (0, []) if summary is None else (summary.n_members, summary.n_epochs.tolist())
    if members != (m["n_members"], m["n_epochs"]):
        problems.append(f"members/epochs {m['n_members']}/{m['n_epochs']}, arrays "
                        f"{members[0]}/{members[1]}")
    species = sorted(int(z) for z in np.unique(train_species))
    if species != m["species"]:
        problems.append(f"species {m['species']}, species.npy holds {species}")
    if summary is not None:
        try:
            edges_ok = np.allclose(summary.edges,
                                   make_edges(summary.atol, summary.hist.shape[-1]),
                                   rtol=1e-12, atol=0.0)
        except LTAUError:
            edges_ok = False
        if not edges_ok:
            problems.append(f"atol {summary.atol} does not match the histogram edges")
    if int(params["k"]) > n:
        problems.append(f"k={params['k']} exceeds the {n} training atoms")
    for name, arr in novelty.items():
        if arr.shape != (n_loo,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            problems.append(f"{name}.npy must hold {n_loo} finite values >= 0")
    if problems:
        raise ArtifactError(f"estimator {path} is inconsistent: " + "; ".join(problems))
