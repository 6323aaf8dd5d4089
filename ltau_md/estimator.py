"""The fitted LTAU estimator (Algorithm 2): k-NN in descriptor space over training atoms.

A test atom j gets the mean over its k nearest training atoms (FAISS, L2 in descriptor space) of
mu_M(p_i) (its confidence), sigma_M(p_i) and the atoms' mean logged error (predicted error,
eV/A); the uncertainty is 1 - confidence. ``s`` scales the tolerance to atol*s.

Usage follows scikit-learn: parameters in ``__init__``, fitted state in attributes ending in
``_``, ``fit`` / ``predict``, ``save`` / ``load`` with a versioned manifest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from ._io import read_manifest, replace_dir, sha256_file, write_json_atomic
from .confidence import DEFAULT_BINS, ErrorSummary
from .errorlog import ErrorLog
from .exceptions import ArtifactError, DescriptorError, LTAUError, SpeciesError
from .model import check_species

FORMAT = "ltau-md/estimator"
VERSION = 1
IndexKind = Literal["flat", "hnsw", "ivfpq"]
_CHUNK = 1 << 16


@dataclass
class Prediction:
    """Per query atom: confidence p (at atol*s), its spread over members, uncertainty 1 - p,
    predicted error (eV/A), and the k nearest training atoms (distances in descriptor units)."""

    confidence: np.ndarray
    confidence_std: np.ndarray
    uncertainty: np.ndarray
    predicted_error: np.ndarray
    distances: np.ndarray
    indices: np.ndarray


def check_descriptors(x: Any, dim: int | None = None, what: str = "descriptors") -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 (n, D) array or raise a DescriptorError that names
    the wrong shape or the rows holding NaN/inf."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise DescriptorError(f"{what} must be 2-D (n_atoms, dim), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise DescriptorError(f"{what} have dimension {x.shape[1]}, the estimator expects {dim}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    for a in range(0, x.shape[0], _CHUNK):
        chunk = x[a:a + _CHUNK]
        ok = np.isfinite(chunk).all(axis=1)
        if not ok.all():
            bad = (np.flatnonzero(~ok)[:10] + a).tolist()
            raise DescriptorError(f"{what} contain NaN/inf in rows {bad}")
    return x


class LTAUEstimator:
    """LTAU uncertainty from k nearest training atoms.

    Parameters
    ----------
    k: neighbours averaged per query atom.
    index: "flat" (exact), "hnsw" (graph, fast approximate), "ivfpq" (compressed, > 1e7 atoms).
    s: tolerance scaling factor (tolerance = atol * s); fitted by :mod:`ltau_md.calibration`.
    atol: absolute tolerance in eV/A; None = final training force MAE from the log.
    rtol: relative tolerance (times |F_i,ref|).
    window: (start, stop) slice over the logged epochs.
    n_bins: histogram bins per atom (see :mod:`ltau_md.confidence`).
    hnsw_m, ef_construction, ef_search: HNSW graph degree and search breadth.
    ivf_nlist, pq_m, pq_nbits, nprobe: IVF-PQ lists (None = 4*sqrt(N)), PQ sub-quantizers and
        bits per code, probed lists.
    n_threads: FAISS threads (None = FAISS default).
    metadata: free-form JSON-able dict stored in the manifest.
    """

    def __init__(
        self,
        k: int = 10,
        index: IndexKind = "flat",
        s: float = 1.0,
        atol: float | None = None,
        rtol: float = 0.0,
        window: tuple[int | None, int | None] = (None, None),
        n_bins: int = DEFAULT_BINS,
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 32,
        ivf_nlist: int | None = None,
        pq_m: int = 8,
        pq_nbits: int = 8,
        nprobe: int = 16,
        n_threads: int | None = None,
        metadata: dict | None = None,
    ):
        self.k = k
        self.index = index
        self.s = s
        self.atol = atol
        self.rtol = rtol
        self.window = window
        self.n_bins = n_bins
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.ivf_nlist = ivf_nlist
        self.pq_m = pq_m
        self.pq_nbits = pq_nbits
        self.nprobe = nprobe
        self.n_threads = n_threads
        self.metadata: dict = dict(metadata or {})
        self._cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "k", "index", "s", "atol", "rtol", "window", "n_bins", "hnsw_m", "ef_construction",
            "ef_search", "ivf_nlist", "pq_m", "pq_nbits", "nprobe", "n_threads")}

    def _validate_params(self) -> None:
        if self.index not in ("flat", "hnsw", "ivfpq"):
            raise ValueError(f"index must be 'flat', 'hnsw' or 'ivfpq', got {self.index!r}")
        if int(self.k) < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not (np.isfinite(self.s) and self.s > 0):
            raise ValueError(f"s must be positive and finite, got {self.s}")

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "summary_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise LTAUError("this LTAUEstimator is not fitted: call fit() or load() first")

    # ------------------------------------------------------------------ fitting
    def fit(self, descriptors: np.ndarray, errors: ErrorLog | list[ErrorLog] | ErrorSummary,
            *, species: np.ndarray | None = None) -> LTAUEstimator:
        """Index ``descriptors`` (N, D) of the training atoms, in the log's atom order, and
        summarise ``errors`` (an ErrorLog, a list of them = ensemble members, or an
        ErrorSummary). ``species`` (N,), if given, must match the log's."""
        self._validate_params()
        if isinstance(errors, ErrorSummary):
            summary = errors
        else:
            start, stop = self.window
            summary = ErrorSummary.from_logs(errors, atol=self.atol, rtol=self.rtol,
                                             start=start, stop=stop, n_bins=self.n_bins)
        n = summary.n_atoms
        x = np.asarray(descriptors)
        if x.ndim != 2 or x.shape[0] == 0:
            raise DescriptorError(f"training descriptors must be (N, D) with N > 0, got {x.shape}")
        if x.shape[0] != n:
            raise DescriptorError(
                f"{x.shape[0]} training descriptors but the error log has {n} atoms"
            )
        if species is not None and not np.array_equal(np.asarray(species), summary.species):
            raise SpeciesError("species of the descriptors differ from the error log's atom order")
        if int(self.k) > n:
            raise ValueError(f"k={self.k} exceeds the {n} training atoms")
        self._set_threads()
        self.index_ = self._build_index(x)
        self.summary_ = summary
        self.dim_ = int(x.shape[1])
        self.n_train_ = int(n)
        self.atol_ = float(summary.atol)
        self.species_ = sorted(int(z) for z in np.unique(summary.species))
        self.fingerprint_ = summary.fingerprint
        self.train_error_ = summary.predicted_error()
        self._cache = {}
        return self

    def _set_threads(self) -> None:
        if self.n_threads:
            faiss.omp_set_num_threads(int(self.n_threads))

    def _build_index(self, x: np.ndarray) -> faiss.Index:
        n, d = x.shape
        if self.index == "flat":
            index = faiss.IndexFlatL2(d)
        elif self.index == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(self.hnsw_m))
            index.hnsw.efConstruction = int(self.ef_construction)
        else:
            nlist = int(self.ivf_nlist or max(1, min(n // 39, int(4 * np.sqrt(n)))))
            if d % int(self.pq_m):
                raise ValueError(f"pq_m={self.pq_m} must divide the descriptor dimension {d}")
            index = faiss.index_factory(d, f"IVF{nlist},PQ{int(self.pq_m)}x{int(self.pq_nbits)}")
            rng = np.random.default_rng(0)
            n_train = min(n, max(256 * nlist, 10_000), 500_000)
            sample = np.sort(rng.choice(n, n_train, replace=False))
            index.train(check_descriptors(x[sample], d, "training descriptors"))
        # one add call: HNSW graphs built from several add() calls connect clustered data
        # badly (recall 0.96 -> 0.83 on 4 chunks); a float32 memmap is read in place
        index.add(check_descriptors(x, d, "training descriptors"))
        self._configure_search(index)
        return index

    def _configure_search(self, index: faiss.Index) -> None:
        if self.index == "hnsw":
            index.hnsw.efSearch = max(int(self.ef_search), int(self.k))
        elif self.index == "ivfpq":
            faiss.extract_index_ivf(index).nprobe = int(self.nprobe)

    # ------------------------------------------------------------------ prediction
    def kneighbors(self, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distances (n,k), indices (n,k)) of the k nearest training atoms; distances are
        Euclidean in descriptor units."""
        self._check_fitted()
        x = check_descriptors(descriptors, self.dim_)
        self._configure_search(self.index_)
        d2, idx = self.index_.search(x, int(self.k))
        if np.any(idx < 0):
            raise LTAUError("FAISS returned fewer than k neighbours; raise nprobe or ef_search")
        return np.sqrt(np.maximum(d2, 0.0)), idx

    def training_confidence(self, s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mu_M(p_i), sigma_M(p_i)) of all training atoms at tolerance atol*s (cached)."""
        self._check_fitted()
        s = float(self.s if s is None else s)
        if s not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            self._cache[s] = self.summary_.confidence(s)
        return self._cache[s]

    def confidence_from_neighbors(self, indices: np.ndarray, s: float | None = None
                                  ) -> tuple[np.ndarray, np.ndarray]:
        """(confidence, confidence_std) of query atoms with neighbours ``indices`` (n, k) at
        tolerance atol*s, without a new search. Only the neighbours' histograms are read, so
        re-scoring at many s is cheap."""
        self._check_fitted()
        s = float(self.s if s is None else s)
        indices = np.asarray(indices)
        if s in self._cache or s == float(self.s):
            mu, sig = self.training_confidence(s)
            return mu[indices].mean(axis=1), sig[indices].mean(axis=1)
        uniq, inv = np.unique(indices, return_inverse=True)
        mu, sig = self.summary_.confidence(s, rows=uniq)
        inv = inv.reshape(indices.shape)
        return mu[inv].mean(axis=1), sig[inv].mean(axis=1)

    def predict(self, descriptors: np.ndarray, *, s: float | None = None,
                species: np.ndarray | None = None) -> Prediction:
        """LTAU prediction for query atoms' descriptors (n, D); ``species`` (n,) atomic numbers,
        if given, are checked against the training species."""
        self._check_fitted()
        if species is not None:
            self.check_species(species)
        dist, idx = self.kneighbors(descriptors)
        return self.predict_from_neighbors(dist, idx, s=s)

    def predict_from_neighbors(self, distances: np.ndarray, indices: np.ndarray, *,
                               s: float | None = None) -> Prediction:
        """Prediction from an already computed neighbour search."""
        conf, std = self.confidence_from_neighbors(indices, s)
        err = self.train_error_[indices].mean(axis=1)
        return Prediction(confidence=conf, confidence_std=std, uncertainty=1.0 - conf,
                          predicted_error=err, distances=distances, indices=indices)

    def check_species(self, species: np.ndarray) -> None:
        """Raise SpeciesError naming atomic numbers absent from the training set."""
        check_species(species, self.species_, "the estimator's training set")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the estimator to directory ``path`` (index.faiss, summary arrays, manifest.json).

        The directory is written under a temporary name and renamed into place, so an existing
        estimator at ``path`` is replaced only by a complete one."""
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            faiss.write_index(self.index_, str(tmp / "index.faiss"))
            for name, arr in self.summary_.arrays().items():
                np.save(tmp / f"{name}.npy", arr)
            files = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
            params = self.get_params()
            params["window"] = list(params["window"])
            manifest = {
                "format": FORMAT, "version": VERSION, "ltau_md_version": _version(),
                "params": params, "dim": self.dim_, "n_train": self.n_train_,
                "atol": self.atol_, "rtol": self.summary_.rtol, "s": float(self.s),
                "species": self.species_, "fingerprint": self.fingerprint_,
                "n_members": self.summary_.n_members,
                "n_epochs": self.summary_.n_epochs.tolist(),
                "summary": self.summary_.scalars(), "files": files, "metadata": self.metadata,
            }
            write_json_atomic(tmp / "manifest.json", manifest)
            replace_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, verify: bool = True, mmap: bool = False
             ) -> LTAUEstimator:
        """Load an estimator saved by :meth:`save`; with ``verify`` every file's SHA-256 is
        checked against the manifest, so a corrupt or partial artifact raises ArtifactError."""
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(f"no estimator directory at {path}")
        manifest = read_manifest(path, FORMAT, VERSION, "estimator")
        for name, digest in manifest["files"].items():
            f = path / name
            if not f.exists():
                raise ArtifactError(f"estimator {path} is incomplete: {name} is missing")
            if verify and sha256_file(f) != digest:
                raise ArtifactError(f"estimator file {f} is corrupt (checksum mismatch)")
        params = dict(manifest["params"])
        params["window"] = tuple(params["window"])
        est = cls(**params, metadata=manifest.get("metadata"))
        est.s = float(manifest["s"])
        try:
            index = faiss.read_index(str(path / "index.faiss"))
        except RuntimeError as exc:
            raise ArtifactError(f"cannot read FAISS index {path / 'index.faiss'}: {exc}") from exc
        arrays = {n: np.load(path / f"{n}.npy", mmap_mode="r" if mmap else None)
                  for n in ("hist", "p0", "mean", "n_epochs", "edges", "ref_force_norm",
                            "species")}
        summary = ErrorSummary.from_arrays(arrays, manifest["summary"])
        if index.ntotal != summary.n_atoms or index.d != int(manifest["dim"]):
            raise ArtifactError(f"estimator {path}: index holds {index.ntotal} vectors of dim "
                                f"{index.d}, manifest says {summary.n_atoms} x {manifest['dim']}")
        est._set_threads()
        est._configure_search(index)
        est.index_, est.summary_ = index, summary
        est.dim_, est.n_train_ = int(manifest["dim"]), int(manifest["n_train"])
        est.atol_, est.species_ = float(manifest["atol"]), list(manifest["species"])
        est.fingerprint_ = manifest["fingerprint"]
        est.train_error_ = summary.predicted_error()
        return est

    def __repr__(self) -> str:
        state = (f", fitted on {self.n_train_} atoms x {self.summary_.n_members} member(s), "
                 f"atol={self.atol_:.4g} eV/A" if self.is_fitted else "")
        return f"LTAUEstimator(k={self.k}, index={self.index!r}, s={self.s}{state})"


def _version() -> str:
    from . import __version__

    return __version__



class TrajectoryNeighbors:
    """k-NN along a trajectory, warm-started from the previous step's neighbours.

    With an HNSW index, each atom's level-0 graph search starts from its k neighbours of the
    previous step (which are close to its new neighbours when atoms move a little per step), so
    a small search breadth ``ef_search`` (default max(16, k)) reaches the recall of a cold
    search at a larger one. A cold search is done on the first step, when the number of atoms
    changes, after :meth:`reset`, and every ``refresh_every`` steps. Other index kinds always
    search cold.
    """

    def __init__(self, estimator: LTAUEstimator, ef_search: int | None = None,
                 refresh_every: int = 100):
        estimator._check_fitted()
        self.estimator = estimator
        self.ef_search = int(ef_search or max(16, int(estimator.k)))
        self.refresh_every = int(refresh_every)
        self._xb: np.ndarray | None = None
        self.reset()

    def _vectors(self) -> np.ndarray:
        """Zero-copy (N, D) view of the HNSW index's stored training vectors."""
        if self._xb is None:
            storage = faiss.downcast_index(self.estimator.index_.storage)
            n, d = storage.ntotal, storage.d
            self._xb = faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d)
        return self._xb

    def reset(self) -> None:
        """Forget the previous step (next search is cold)."""
        self._prev: np.ndarray | None = None
        self._since_cold = 0

    def kneighbors(self, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distances (n,k), indices (n,k)) as :meth:`LTAUEstimator.kneighbors`."""
        est = self.estimator
        x = check_descriptors(descriptors, est.dim_)
        n, k = x.shape[0], int(est.k)
        warm = (est.index == "hnsw" and self._prev is not None and self._prev.shape == (n, k)
                and self._since_cold < self.refresh_every)
        if not warm:
            dist, idx = est.kneighbors(x)
            self._since_cold = 0
        else:
            index = est.index_
            entry = np.ascontiguousarray(self._prev, dtype=np.int32)
            vec = self._vectors()[entry]
            ed = ((vec - x[:, None, :]) ** 2).sum(-1)
            ed = np.ascontiguousarray(ed, dtype=np.float32)
            d2 = np.empty((n, k), np.float32)
            idx = np.empty((n, k), np.int64)
            ef_cold = index.hnsw.efSearch
            index.hnsw.efSearch = max(self.ef_search, k)
            try:
                index.search_level_0(n, faiss.swig_ptr(x), k, faiss.swig_ptr(entry),
                                     faiss.swig_ptr(ed), faiss.swig_ptr(d2), faiss.swig_ptr(idx),
                                     k, 2)
            finally:
                index.hnsw.efSearch = ef_cold
            if np.any(idx < 0):
                dist, idx = est.kneighbors(x)
                self._since_cold = 0
            else:
                dist = np.sqrt(np.maximum(d2, 0.0))
                self._since_cold += 1
        self._prev = idx
        return dist, idx

    def predict(self, descriptors: np.ndarray, *, s: float | None = None) -> Prediction:
        """As :meth:`LTAUEstimator.predict`, warm-started."""
        dist, idx = self.kneighbors(descriptors)
        return self.estimator.predict_from_neighbors(dist, idx, s=s)
