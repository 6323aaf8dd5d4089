"""The fitted LTAU estimator (Algorithm 2): k-NN in descriptor space over training atoms.

A test atom j gets the mean over its k nearest training atoms (FAISS, L2 in descriptor space) of
mu_M(p_i) (its confidence), sigma_M(p_i) and the atoms' mean logged error (predicted error,
eV/A); the uncertainty is 1 - confidence. The confidence is read at the tolerance atol*s.

Usage follows scikit-learn: parameters in ``__init__``, stored unchanged; fitted state in
attributes ending in ``_`` (``index_``, ``index_kind_``, ``summary_``, ``calibration_``);
``fit`` / ``predict``; ``save`` / ``load`` with a versioned, checksummed manifest.

The scale s actually used (:meth:`LTAUEstimator.effective_s`, ``scale_``) is, in this order:
the ``s`` passed to a call, the ``s`` parameter if not None (a user override), the fitted
calibration's scale for the query's group, its global scale, else 1. The calibration
(:class:`Calibration`) is fitted by :func:`ltau_md.core.calibration.fit_scale`.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from ltau_md._version import __version__
from ltau_md.core._io import atomic_dir, read_manifest, sha256_file, write_json_atomic
from ltau_md.core.confidence import DEFAULT_BINS, ErrorSummary, check_atol, make_edges
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.exceptions import (
    ArtifactError,
    DescriptorError,
    InvalidParameterError,
    LTAUError,
    SpeciesError,
)
from ltau_md.core.model import check_species
from ltau_md.core.validation import check_is_fitted

__all__ = [
    "AUTO_HNSW_MIN_ATOMS",
    "CONFIRM_MAX_ATOMS",
    "Calibration",
    "FORMAT",
    "INDEX_KINDS",
    "LTAUEstimator",
    "MANIFEST_DIGEST_KEY",
    "NOVELTY_KINDS",
    "Prediction",
    "TrajectoryNeighbors",
    "VERSION",
    "check_descriptors",
    "manifest_digest",
]

FORMAT = "ltau-md/estimator"
#: format version of saved estimators; 2: calibration section, checksummed manifest, index_kind
VERSION = 2
IndexKind = Literal["auto", "flat", "hnsw", "ivfpq"]
INDEX_KINDS = ("flat", "hnsw", "ivfpq")
#: ``index="auto"`` builds an exact flat index below this many training atoms, HNSW from it on.
#: benchmarks/bench_estimator.py (1 thread): HNSW overtakes flat in speed at ~4e3 atoms, but
#: below 1e4 a flat 200-atom query costs <= 8 ms, is exact and builds instantly
AUTO_HNSW_MIN_ATOMS = 10_000
#: manifest key holding the SHA-256 of the canonical JSON of the rest of the manifest
MANIFEST_DIGEST_KEY = "manifest_sha256"
_ARRAYS = ("hist", "p0", "mean", "n_epochs", "edges", "ref_force_norm", "species")
#: per-training-atom novelty references written beside the summary arrays
_NOVELTY_ARRAYS = ("knn_distance", "train_novelty")
_FILES = frozenset({"index.faiss", *(f"{a}.npy" for a in (*_ARRAYS, *_NOVELTY_ARRAYS))})
_PARAMS = ("k", "index", "s", "atol", "rtol", "window", "n_bins", "hnsw_m", "ef_construction",
           "ef_search", "ivf_nlist", "pq_m", "pq_nbits", "nprobe", "n_threads", "novelty",
           "confirm_pvalue", "metadata")
NOVELTY_KINDS = ("element", "local")
#: at most this many atoms per call get the broad re-search (the most novel-looking first): a
#: miss is rare (about 1 in 200 atoms on clustered data), while a structure far outside the
#: training domain makes every atom look novel, and re-searching all would cost ~0.25 ms per
#: atom at 4e5 training atoms for no change of the verdict
CONFIRM_MAX_ATOMS = 16
_CHUNK = 1 << 16


@dataclass
class Prediction:
    """Per query atom: confidence p (at atol*s), its spread over members, uncertainty 1 - p,
    predicted error (eV/A), the k nearest training atoms (distances in descriptor units),
    ``novelty`` (latent distance to the training set relative to the in-domain scale: about 1
    or less in domain, larger for atoms unlike the training atoms) and ``novelty_pvalue`` (the
    fraction of training atoms of the same element whose own leave-one-out novelty is at
    least as large: small = unusual); ``s`` is the scale the confidences were read at."""

    confidence: np.ndarray
    confidence_std: np.ndarray
    uncertainty: np.ndarray
    predicted_error: np.ndarray
    distances: np.ndarray
    indices: np.ndarray
    novelty: np.ndarray
    novelty_pvalue: np.ndarray
    s: float | None = None


@dataclass
class Calibration:
    """The fitted calibration of an estimator (``estimator.calibration_``), set by
    :func:`ltau_md.core.calibration.fit_scale` and saved in the manifest's ``"calibration"``
    section.

    Attributes
    ----------
    s : float
        Scale of the training tolerance (confidences are read at atol*s).
    target_atol : float
        Target tolerance T in eV/A: a calibrated confidence p is P(|F_ref - F_model| <= T).
    s_per_group : dict[str, float]
        Scale per group label (e.g. per ``config_type``), used instead of ``s`` when a query's
        group is known (``predict(..., group=)``, the calculator).
    group_key : str or None
        ``atoms.info`` key holding the group label (read by the calculator), if fitted from
        structures.
    area, area_unscaled : float or None
        Miscalibration area on the calibration atoms at ``s`` and at s = 1. None means the
        scale was not fitted (e.g. a calibration created only to hold in-domain alarm
        statistics, with ``s`` the estimator's scale at that time).
    n_atoms, n_bins, binning : calibration atoms, bins and binning of the fit.
    area_per_group, n_per_group : per-group areas (at the group's s) and atom counts.
    thresholds : dict
        In-domain frame statistics for alarm-rate thresholds, keyed by
        :func:`ltau_md.core.metrics.stat_key` (e.g. "novelty:max", "uncertainty:max@tags=2"):
        ``{"values": sorted in-domain frame values, "n_frames": F, "source": "held-out" |
        "training-loo"}``; set by :func:`ltau_md.core.calibration.fit_alarm_thresholds` and read by
        ``Threshold(alarm_rate=...)``.
    """

    s: float
    target_atol: float
    s_per_group: dict[str, float] = field(default_factory=dict)
    group_key: str | None = None
    area: float | None = None
    area_unscaled: float | None = None
    n_atoms: int = 0
    n_bins: int = 20
    binning: str = "uniform"
    area_per_group: dict[str, float] = field(default_factory=dict)
    n_per_group: dict[str, int] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_scale("calibration s", self.s)
        _check_scale("target_atol (eV/A)", self.target_atol)
        self.s, self.target_atol = float(self.s), float(self.target_atol)
        self.s_per_group = {str(g): _check_scale(f"s of group {g!r}", v)
                            for g, v in dict(self.s_per_group).items()}
        if self.group_key is not None and not isinstance(self.group_key, str):
            raise InvalidParameterError(f"group_key must be a string, got {self.group_key!r}")
        if not isinstance(self.thresholds, Mapping):
            raise InvalidParameterError("thresholds must be a dict")

    def scale(self, group: Any = None) -> float:
        """The scale for ``group`` (its own if fitted, else the global one)."""
        if group is None:
            return self.s
        return self.s_per_group.get(str(group), self.s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the manifest's ``"calibration"`` section)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`; InvalidParameterError names missing or unknown keys."""
        if not isinstance(d, Mapping):
            raise InvalidParameterError(f"a calibration must be a dict, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        missing = sorted({"s", "target_atol"} - set(d))
        if unknown or missing:
            raise InvalidParameterError(f"calibration has unknown keys {unknown} / lacks {missing}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"invalid calibration: {exc}") from exc


def _check_scale(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise InvalidParameterError(f"{name} must be positive and finite, got {value}")
    return float(value)


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")


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


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no whitespace) of ``manifest`` without its
    :data:`MANIFEST_DIGEST_KEY`."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class LTAUEstimator:
    """LTAU uncertainty from k nearest training atoms.

    Parameters
    ----------
    k : int
        Neighbours averaged per query atom.
    index : {"auto", "flat", "hnsw", "ivfpq"}
        FAISS index: "flat" (exact), "hnsw" (graph, fast approximate), "ivfpq" (compressed,
        > 1e7 atoms); "auto" = flat below :data:`AUTO_HNSW_MIN_ATOMS` training atoms, hnsw
        from there on. The kind built is ``index_kind_``.
    s : float or None
        Tolerance scale override (tolerance = atol * s). None: the fitted calibration's scale
        (``calibration_``, per group where known), else 1.
    atol : float or None
        Absolute tolerance in eV/A; None = final training force MAE from the log.
    rtol : float
        Relative tolerance (times |F_i,ref|).
    window : (int or None, int or None)
        (start, stop) slice over the logged epochs.
    n_bins : int
        Histogram bins per atom (see :mod:`ltau_md.core.confidence`).
    hnsw_m, ef_construction, ef_search : int
        HNSW graph degree and search breadths.
    ivf_nlist, pq_m, pq_nbits, nprobe : int
        IVF-PQ lists (None = 4*sqrt(N)), PQ sub-quantizers, bits per code, probed lists.
    n_threads : int or None
        FAISS threads (None = FAISS default).
    novelty : {"element", "local"}
        How a query atom's mean distance d to its k nearest training atoms is made scale-free:
        "element" divides by the median leave-one-out k-NN distance of the training atoms of
        its element; "local" by the mean leave-one-out k-NN distance of its k neighbours
        themselves. Both are about 1 for typical in-domain atoms.
    confirm_pvalue : float
        Atoms whose novelty p-value falls below this are searched again with a much broader
        search (approximate indexes), so an approximate-search miss does not read as novelty;
        0 disables.
    metadata : dict or None
        Free-form JSON-able provenance (model path, data), stored in the manifest.

    Attributes (after ``fit`` or ``load``)
    --------------------------------------
    index_, index_kind_, summary_ (:class:`~ltau_md.core.confidence.ErrorSummary`), dim_, n_train_,
    atol_ (eV/A), species_, fingerprint_, train_error_ (eV/A per training atom),
    knn_distance_ (each training atom's mean distance to its k nearest other training atoms),
    train_novelty_ (its leave-one-out novelty), novelty_scale_ ({Z: median knn_distance_}),
    calibration_ (:class:`Calibration` or None), scale_ (the scale used by default).

    Bad parameters raise :class:`~ltau_md.core.exceptions.InvalidParameterError` (a ValueError);
    using an unfitted estimator raises :class:`~ltau_md.core.exceptions.NotFittedError`.
    """

    def __init__(
        self,
        k: int = 10,
        index: IndexKind = "auto",
        s: float | None = None,
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
        novelty: str = "element",
        confirm_pvalue: float = 0.01,
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
        self.novelty = novelty
        self.confirm_pvalue = confirm_pvalue
        self.metadata: dict = dict(metadata or {})
        self._cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        """The ``__init__`` parameters, as stored."""
        return {k: getattr(self, k) for k in _PARAMS}

    def _validate_params(self) -> None:
        """Raise InvalidParameterError naming the first bad parameter."""
        if self.index not in ("auto", *INDEX_KINDS):
            raise InvalidParameterError(
                f"index must be 'auto', 'flat', 'hnsw' or 'ivfpq', got {self.index!r}")
        _check_int("k", self.k, 1)
        if self.s is not None:
            _check_scale("s", self.s)
        check_atol(self.atol)  # None, eV/A, "per_species" or {Z: eV/A}; stored as given
        if (isinstance(self.rtol, bool) or not isinstance(self.rtol, numbers.Real)
                or not (np.isfinite(self.rtol) and self.rtol >= 0)):
            raise InvalidParameterError(f"rtol must be >= 0 and finite, got {self.rtol!r}")
        w = self.window
        if (not isinstance(w, (tuple, list)) or len(w) != 2 or any(
                v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral))
                for v in w)):
            raise InvalidParameterError(f"window must be (start, stop) of ints or None, got {w!r}")
        _check_int("n_bins", self.n_bins, 4)
        if self.n_bins % 2:
            raise InvalidParameterError(f"n_bins must be even, got {self.n_bins}")
        _check_int("hnsw_m", self.hnsw_m, 2)
        _check_int("ef_construction", self.ef_construction, 1)
        _check_int("ef_search", self.ef_search, 1)
        _check_int("ivf_nlist", self.ivf_nlist, 1, optional=True)
        _check_int("pq_m", self.pq_m, 1)
        _check_int("pq_nbits", self.pq_nbits, 1)
        if self.pq_nbits > 16:
            raise InvalidParameterError(f"pq_nbits must be <= 16, got {self.pq_nbits}")
        _check_int("nprobe", self.nprobe, 1)
        _check_int("n_threads", self.n_threads, 1, optional=True)
        if self.novelty not in NOVELTY_KINDS:
            raise InvalidParameterError(
                f"novelty must be one of {NOVELTY_KINDS}, got {self.novelty!r}")
        c = self.confirm_pvalue
        if (isinstance(c, bool) or not isinstance(c, numbers.Real)
                or not (np.isfinite(c) and 0 <= c < 1)):
            raise InvalidParameterError(f"confirm_pvalue must be in [0, 1), got {c!r}")
        if not isinstance(self.metadata, dict):
            raise InvalidParameterError(f"metadata must be a dict, got {type(self.metadata)}")

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "summary_")

    def effective_s(self, group: Any = None) -> float:
        """The scale used when a call passes no ``s``: the ``s`` parameter if set, else the
        fitted calibration's scale for ``group`` (its global scale for None or an unknown
        group), else 1."""
        check_is_fitted(self)
        if self.s is not None:
            return float(self.s)
        if self.calibration_ is not None:
            return self.calibration_.scale(group)
        return 1.0

    @property
    def scale_(self) -> float:
        """:meth:`effective_s` without a group."""
        return self.effective_s()

    def resolve_scale(self, s: float | None = None, group: Any = None) -> float:
        """The tolerance scale a call with ``s`` uses: ``s`` itself (checked: > 0, finite)
        or, for None, :meth:`effective_s` of ``group``."""
        return self.effective_s(group) if s is None else _check_scale("s", s)

    # ------------------------------------------------------------------ fitting
    def fit(self, descriptors: np.ndarray, errors: ErrorLog | list[ErrorLog] | ErrorSummary,
            *, species: np.ndarray | None = None) -> LTAUEstimator:
        """Index ``descriptors`` (N, D) of the training atoms, in the log's atom order, and
        summarise ``errors`` (an ErrorLog, a list of them = ensemble members, or an
        ErrorSummary). ``species`` (N,), if given, must match the log's. A previous
        calibration is discarded."""
        self._validate_params()
        if isinstance(errors, ErrorSummary):
            summary = errors
        else:
            start, stop = self.window
            summary = ErrorSummary.from_logs(errors, atol=check_atol(self.atol), rtol=self.rtol,
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
            raise InvalidParameterError(f"k={self.k} exceeds the {n} training atoms")
        kind = self.index if self.index != "auto" else (
            "hnsw" if n >= AUTO_HNSW_MIN_ATOMS else "flat")
        self._set_threads()
        self.index_ = self._build_index(x, kind)
        self.index_kind_ = kind
        self.summary_ = summary
        self.dim_ = int(x.shape[1])
        self.n_train_ = int(n)
        self.atol_ = float(summary.atol)
        self.species_ = sorted(int(z) for z in np.unique(summary.species))
        self.fingerprint_ = summary.fingerprint
        self.train_error_ = summary.predicted_error()
        self.calibration_: Calibration | None = None
        self._cache = {}
        self._fit_novelty(x)
        return self

    def _fit_novelty(self, x: np.ndarray) -> None:
        """Leave-one-out k-NN distances of the training atoms (one search of k+1 neighbours,
        the atom itself dropped) and their own novelty, the in-domain reference of
        :meth:`novelty_of`. An exact index searches exactly up to :data:`AUTO_HNSW_MIN_ATOMS`
        atoms; above that (an O(N^2) search) a temporary HNSW graph is used."""
        k, n = int(self.k), self.n_train_
        index = self.index_
        if self.index_kind_ == "flat" and n > AUTO_HNSW_MIN_ATOMS:
            index = self._build_index(x, "hnsw")
        if isinstance(index, faiss.IndexHNSW):
            ef_before = index.hnsw.efSearch
            index.hnsw.efSearch = max(ef_before, k + 1)
        dist = np.empty(n, np.float32)
        nbrs = np.empty((n, k), np.int64)
        kk = min(k + 1, n)
        for a in range(0, n, _CHUNK):
            xa = check_descriptors(x[a:a + _CHUNK], self.dim_, "training descriptors")
            d2, idx = index.search(xa, kk)
            rows = np.arange(a, a + xa.shape[0])
            d = np.sqrt(np.maximum(d2, 0.0))
            is_self = idx == rows[:, None]
            if kk == k + 1:
                keep = ~is_self  # drop the atom itself or, if a duplicate hid it, the farthest
                keep[~is_self.any(axis=1), -1] = False
                dist[rows] = d[keep].reshape(-1, k).mean(axis=1)
                nbrs[rows] = idx[keep].reshape(-1, k)
            else:  # k = N: every other training atom is a neighbour
                others = np.where(is_self, 0.0, d).sum(axis=1)
                dist[rows] = others / max(k - 1, 1)
                nbrs[rows] = idx
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = ef_before
        if np.any(nbrs < 0):
            raise LTAUError("FAISS returned fewer than k+1 neighbours for training atoms; "
                            "raise nprobe or ef_search")
        self.knn_distance_ = dist
        self._set_novelty_scales()
        self.train_novelty_ = self._relative(dist, nbrs, self.summary_.species)
        self._set_novelty_reference()

    def _set_novelty_scales(self) -> None:
        sp = self.summary_.species
        floor = max(float(np.median(self.knn_distance_)) * 1e-6, 1e-12)
        self.novelty_scale_ = {int(z): max(float(np.median(self.knn_distance_[sp == z])), floor)
                               for z in np.unique(sp)}
        self._dist_floor = floor
        self._scale_table = np.zeros(max(self.novelty_scale_) + 1)  # atomic number -> d_Z
        for z, v in self.novelty_scale_.items():
            self._scale_table[z] = v

    def _set_novelty_reference(self) -> None:
        sp = self.summary_.species
        self._novelty_ref = {int(z): np.sort(self.train_novelty_[sp == z]) for z in np.unique(sp)}

    def _relative(self, mean_dist: np.ndarray, indices: np.ndarray, species: np.ndarray
                  ) -> np.ndarray:
        """Novelty of atoms with mean k-NN distance ``mean_dist`` (n,), neighbours ``indices``
        (n, k) and atomic numbers ``species`` (n,)."""
        if self.novelty == "local":
            denom = self.knn_distance_[indices].mean(axis=1)
        else:
            species = np.asarray(species, dtype=np.int64)
            known = (species >= 0) & (species < self._scale_table.size)
            denom = np.where(known, self._scale_table[np.where(known, species, 0)], 0.0)
        return (np.asarray(mean_dist, np.float64)
                / np.maximum(denom, self._dist_floor)).astype(np.float64)

    def novelty_of(self, distances: np.ndarray, indices: np.ndarray,
                   species: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(novelty (n,), p-value (n,)) of query atoms from their k-NN ``distances`` and
        ``indices`` (n, k). ``species`` (n,) defaults to the element of each atom's nearest
        training atom. The p-value is (1 + #training atoms of the element with leave-one-out
        novelty >= the atom's) / (1 + #training atoms of the element)."""
        check_is_fitted(self)
        indices = np.asarray(indices)
        if species is None:
            species = self.summary_.species[indices[:, 0]]
        species = np.asarray(species, dtype=np.int64)
        nov = self._relative(np.asarray(distances).mean(axis=1), indices, species)
        pval = np.ones_like(nov)
        for z in np.unique(species):
            ref = self._novelty_ref.get(int(z))
            if ref is None:  # an element outside the training set: as novel as can be
                pval[species == z] = 0.0
                continue
            m = species == z
            n_ge = ref.size - np.searchsorted(ref, nov[m], side="left")
            pval[m] = (1.0 + n_ge) / (1.0 + ref.size)
        return nov, pval

    def _set_threads(self) -> None:
        if self.n_threads:
            faiss.omp_set_num_threads(int(self.n_threads))

    def _build_index(self, x: np.ndarray, kind: str) -> faiss.Index:
        n, d = x.shape
        if kind == "flat":
            index = faiss.IndexFlatL2(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(self.hnsw_m))
            index.hnsw.efConstruction = int(self.ef_construction)
        else:
            nlist = int(self.ivf_nlist or max(1, min(n // 39, int(4 * np.sqrt(n)))))
            if d % int(self.pq_m):
                raise InvalidParameterError(
                    f"pq_m={self.pq_m} must divide the descriptor dimension {d}")
            index = faiss.index_factory(d, f"IVF{nlist},PQ{int(self.pq_m)}x{int(self.pq_nbits)}")
            rng = np.random.default_rng(0)
            n_train = min(n, max(256 * nlist, 10_000), 500_000)
            sample = np.sort(rng.choice(n, n_train, replace=False))
            index.train(check_descriptors(x[sample], d, "training descriptors"))
        # one add call: HNSW graphs built from several add() calls connect clustered data
        # badly (recall 0.96 -> 0.83 on 4 chunks); a float32 memmap is read in place
        index.add(check_descriptors(x, d, "training descriptors"))
        self._configure_search(index, kind)
        return index

    def _configure_search(self, index: faiss.Index, kind: str) -> None:
        if kind == "hnsw":
            index.hnsw.efSearch = max(int(self.ef_search), int(self.k))
        elif kind == "ivfpq":
            faiss.extract_index_ivf(index).nprobe = int(self.nprobe)

    # ------------------------------------------------------------------ prediction
    def kneighbors(self, descriptors: np.ndarray, species: np.ndarray | None = None, *,
                   confirm: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(distances (n,k), indices (n,k)) of the k nearest training atoms; distances are
        Euclidean in descriptor units. With ``confirm`` (and ``confirm_pvalue`` > 0), atoms
        that look novel are searched again broadly (:meth:`confirm_novel`)."""
        check_is_fitted(self)
        x = check_descriptors(descriptors, self.dim_)
        self._configure_search(self.index_, self.index_kind_)
        d2, idx = self.index_.search(x, int(self.k))
        if np.any(idx < 0):
            raise LTAUError("FAISS returned fewer than k neighbours; raise nprobe or ef_search")
        dist = np.sqrt(np.maximum(d2, 0.0))
        if confirm:
            dist, idx = self.confirm_novel(x, dist, idx, species)
        return dist, idx

    def confirm_novel(self, descriptors: np.ndarray, distances: np.ndarray, indices: np.ndarray,
                      species: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Search again, broadly, the atoms whose novelty p-value is below ``confirm_pvalue``
        and keep whichever neighbour set is closer. An approximate index (HNSW, IVF-PQ) now
        and then lands an atom in the wrong region of descriptor space; its neighbours are
        then far away and it looks novel. HNSW: efSearch max(256, 8k); IVF-PQ: 8x nprobe (at
        most all lists); at most :data:`CONFIRM_MAX_ATOMS` atoms, the most novel first. An
        exact (flat) index needs no confirmation."""
        if self.index_kind_ == "flat" or not self.confirm_pvalue:
            return distances, indices
        nov, pval = self.novelty_of(distances, indices, species)
        rows = np.flatnonzero(pval < self.confirm_pvalue)
        if rows.size == 0:
            return distances, indices
        if rows.size > CONFIRM_MAX_ATOMS:
            rows = rows[np.argsort(-nov[rows], kind="stable")[:CONFIRM_MAX_ATOMS]]
        x = check_descriptors(descriptors, self.dim_)[rows]
        k = int(self.k)
        if self.index_kind_ == "hnsw":
            old = self.index_.hnsw.efSearch
            self.index_.hnsw.efSearch = max(256, 8 * k, old)
            try:
                d2, idx = self.index_.search(x, k)
            finally:
                self.index_.hnsw.efSearch = old
        else:
            ivf = faiss.extract_index_ivf(self.index_)
            old = ivf.nprobe
            ivf.nprobe = min(int(ivf.nlist), 8 * int(old))
            try:
                d2, idx = self.index_.search(x, k)
            finally:
                ivf.nprobe = old
        d = np.sqrt(np.maximum(d2, 0.0))
        better = (idx >= 0).all(axis=1) & (d.mean(axis=1) < distances[rows].mean(axis=1))
        if better.any():
            distances, indices = distances.copy(), indices.copy()
            distances[rows[better]], indices[rows[better]] = d[better], idx[better]
        return distances, indices

    def training_confidence(self, s: float | None = None, group: Any = None
                            ) -> tuple[np.ndarray, np.ndarray]:
        """(mu_M(p_i), sigma_M(p_i)) of all training atoms at tolerance atol*s (default
        :meth:`effective_s` of ``group``); cached per s."""
        s = self.resolve_scale(s, group)
        if s not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            self._cache[s] = self.summary_.confidence(s)
        return self._cache[s]

    def confidence_from_neighbors(self, indices: np.ndarray, s: float | None = None,
                                  group: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(confidence, confidence_std) of query atoms with neighbours ``indices`` (n, k) at
        tolerance atol*s (default :meth:`effective_s` of ``group``), without a new search.
        Only the neighbours' histograms are read, so re-scoring at many s is cheap."""
        s = self.resolve_scale(s, group)
        indices = np.asarray(indices)
        if s in self._cache or s == self.scale_:
            mu, sig = self.training_confidence(s)
            return mu[indices].mean(axis=1), sig[indices].mean(axis=1)
        uniq, inv = np.unique(indices, return_inverse=True)
        mu, sig = self.summary_.confidence(s, rows=uniq)
        inv = inv.reshape(indices.shape)
        return mu[inv].mean(axis=1), sig[inv].mean(axis=1)

    def predict(self, descriptors: np.ndarray, *, s: float | None = None, group: Any = None,
                species: np.ndarray | None = None) -> Prediction:
        """LTAU prediction for query atoms' descriptors (n, D).

        Parameters
        ----------
        s : float, optional
            Scale of the tolerance (atol*s); default :meth:`effective_s` of ``group``.
        group : str, optional
            Group label of all query atoms (e.g. the structure's ``config_type``): its fitted
            per-group scale is used (the global calibrated scale for an unknown group). Ignored
            when ``s`` or the ``s`` parameter is set.
        species : (n,) int array, optional
            Atomic numbers, checked against the training species (SpeciesError); they select
            each atom's novelty reference (default: the element of its nearest training atom).
        """
        check_is_fitted(self)
        if species is not None:
            species = np.asarray(species)
            self.check_species(species)
            if species.shape != (np.shape(descriptors)[0],):
                raise DescriptorError(f"species has shape {species.shape}, expected "
                                      f"({np.shape(descriptors)[0]},) (one per descriptor row)")
        dist, idx = self.kneighbors(descriptors, species)
        return self.predict_from_neighbors(dist, idx, s=s, group=group, species=species)

    def predict_from_neighbors(self, distances: np.ndarray, indices: np.ndarray, *,
                               s: float | None = None, group: Any = None,
                               species: np.ndarray | None = None) -> Prediction:
        """Prediction from an already computed neighbour search (``s``, ``group``,
        ``species`` as in :meth:`predict`)."""
        s = self.resolve_scale(s, group)
        conf, std = self.confidence_from_neighbors(indices, s)
        err = self.train_error_[indices].mean(axis=1)
        nov, pval = self.novelty_of(distances, indices, species)
        return Prediction(confidence=conf, confidence_std=std, uncertainty=1.0 - conf,
                          predicted_error=err, distances=distances, indices=indices,
                          novelty=nov, novelty_pvalue=pval, s=s)

    def check_species(self, species: np.ndarray) -> None:
        """Raise SpeciesError naming atomic numbers absent from the training set."""
        check_is_fitted(self)
        check_species(species, self.species_, "the estimator's training set")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the estimator to directory ``path``: ``index.faiss``, the summary arrays
        (``*.npy``) and ``manifest.json`` (format, version, parameters, index kind, shapes,
        species, the summary's atol/rtol/fingerprint, SHA-256 of every file, the
        ``"calibration"`` section if calibrated, and ``manifest_sha256``, the digest of the
        manifest's own canonical JSON).

        The directory is written under a temporary name and renamed into place, so an existing
        estimator at ``path`` is replaced only by a complete one; any other non-empty directory
        is refused (OutputExistsError) and left untouched."""
        check_is_fitted(self)
        self._validate_params()
        with atomic_dir(path, FORMAT, overwrite=True) as tmp:
            faiss.write_index(self.index_, str(tmp / "index.faiss"))
            for name, arr in self.summary_.arrays().items():
                np.save(tmp / f"{name}.npy", arr)
            np.save(tmp / "knn_distance.npy", self.knn_distance_.astype(np.float32))
            np.save(tmp / "train_novelty.npy", self.train_novelty_.astype(np.float32))
            # atol in canonical JSON form ({"Z": eV/A}, increasing Z) in the manifest
            params = {**self.get_params(), "atol": check_atol(self.atol)}
            params["window"] = list(params["window"])
            manifest: dict[str, Any] = {
                "format": FORMAT, "version": VERSION, "ltau_md_version": __version__,
                "params": params, "index_kind": self.index_kind_, "dim": self.dim_,
                "n_train": self.n_train_, "species": self.species_,
                "n_members": self.summary_.n_members,
                "n_epochs": self.summary_.n_epochs.tolist(),
                "summary": self.summary_.scalars(),
                "files": {f.name: sha256_file(f) for f in sorted(tmp.iterdir())},
            }
            if self.calibration_ is not None:
                manifest["calibration"] = self.calibration_.to_dict()
            manifest[MANIFEST_DIGEST_KEY] = manifest_digest(manifest)
            write_json_atomic(tmp / "manifest.json", manifest)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, verify: bool = True, mmap: bool = False
             ) -> LTAUEstimator:
        """Load an estimator saved by :meth:`save`.

        The manifest's own digest, its parameters (the validation of ``fit``), and the
        consistency of its counts, dimension, species, index kind and calibration with the
        stored arrays and index are always checked; with ``verify`` every file's SHA-256 is
        checked too (reads every byte once). ``mmap`` memory-maps the summary arrays. Any
        problem raises ArtifactError with the reason; artifacts of format version 1 must be
        re-fitted."""
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(f"no estimator directory at {path}")
        m = read_manifest(path, FORMAT, VERSION, "estimator")
        mf = path / "manifest.json"
        if m.get("version") != VERSION:
            raise ArtifactError(
                f"estimator {path} has format version {m.get('version')}, from before the "
                f"checksummed manifest and fitted calibration (version {VERSION}): re-fit it "
                "(`ltau-md fit`) and calibrate it again (`ltau-md calibrate`)")
        if m.get(MANIFEST_DIGEST_KEY) != manifest_digest(m):
            raise ArtifactError(f"estimator manifest {mf} was edited or is corrupt (its "
                                f"{MANIFEST_DIGEST_KEY} does not match its content)")
        need = {"params": dict, "index_kind": str, "dim": int, "n_train": int, "species": list,
                "n_members": int, "n_epochs": list, "summary": dict, "files": dict}
        for key, typ in need.items():
            if not isinstance(m.get(key), typ):
                raise ArtifactError(f"estimator manifest {mf} lacks {key!r} or it is not a "
                                    f"{typ.__name__}")
        files = m["files"]
        if set(files) != _FILES:
            raise ArtifactError(f"estimator manifest {mf} lists files {sorted(files)}, "
                                f"expected {sorted(_FILES)}")
        for name, digest in files.items():
            f = path / name
            if not f.exists():
                raise ArtifactError(f"estimator {path} is incomplete: {name} is missing")
            if verify and sha256_file(f) != digest:
                raise ArtifactError(f"estimator file {f} is corrupt (checksum mismatch)")
        params = dict(m["params"])
        if set(params) != set(_PARAMS):
            raise ArtifactError(f"estimator manifest {mf}: parameters "
                                f"{sorted(set(params) ^ set(_PARAMS))} are unknown or missing")
        if isinstance(params["window"], list):
            params["window"] = tuple(params["window"])
        if isinstance(params["atol"], dict):  # JSON keys are strings; Z is an int in Python
            params["atol"] = {int(z) if str(z).isdigit() else z: v
                              for z, v in params["atol"].items()}
        est = cls(**params)
        try:
            est._validate_params()
            calibration = (Calibration.from_dict(m["calibration"]) if "calibration" in m
                           else None)
        except InvalidParameterError as exc:
            raise ArtifactError(f"estimator {path}: {exc}") from exc
        kind = m["index_kind"]
        try:
            index = faiss.read_index(str(path / "index.faiss"))
        except RuntimeError as exc:
            raise ArtifactError(f"cannot read FAISS index {path / 'index.faiss'}: {exc}") from exc
        expected = {"flat": faiss.IndexFlat, "hnsw": faiss.IndexHNSW, "ivfpq": faiss.IndexIVFPQ}
        if kind not in expected or not isinstance(index, expected[kind]):
            raise ArtifactError(f"estimator {path}: index_kind {kind!r} does not match the "
                                f"stored {type(index).__name__}")
        try:
            arrays = {n: np.load(path / f"{n}.npy", mmap_mode="r" if mmap else None)
                      for n in _ARRAYS}
            novelty = {n: np.load(path / f"{n}.npy") for n in _NOVELTY_ARRAYS}
        except (OSError, ValueError, EOFError) as exc:
            raise ArtifactError(f"estimator {path}: cannot read the summary arrays: {exc}"
                                ) from exc
        summary = ErrorSummary.from_arrays(arrays, m["summary"])
        problems = []
        if not (index.ntotal == summary.n_atoms == m["n_train"]):
            problems.append(f"n_train {m['n_train']}, index holds {index.ntotal} vectors, "
                            f"arrays {summary.n_atoms} atoms")
        if index.d != m["dim"]:
            problems.append(f"dim {m['dim']}, index dimension {index.d}")
        if summary.n_members != m["n_members"] or summary.n_epochs.tolist() != m["n_epochs"]:
            problems.append(f"members/epochs {m['n_members']}/{m['n_epochs']}, arrays "
                            f"{summary.n_members}/{summary.n_epochs.tolist()}")
        species = sorted(int(z) for z in np.unique(summary.species))
        if species != m["species"]:
            problems.append(f"species {m['species']}, species.npy holds {species}")
        try:
            edges_ok = np.allclose(summary.edges, make_edges(summary.atol, summary.hist.shape[-1]),
                                   rtol=1e-12, atol=0.0)
        except LTAUError:
            edges_ok = False
        if not edges_ok:
            problems.append(f"atol {summary.atol} does not match the histogram edges")
        if int(params["k"]) > summary.n_atoms:
            problems.append(f"k={params['k']} exceeds the {summary.n_atoms} training atoms")
        for name, arr in novelty.items():
            if arr.shape != (summary.n_atoms,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
                problems.append(f"{name}.npy must hold {summary.n_atoms} finite values >= 0")
        if problems:
            raise ArtifactError(f"estimator {path} is inconsistent: " + "; ".join(problems))
        est._set_threads()
        est._configure_search(index, kind)
        est.index_, est.index_kind_, est.summary_ = index, kind, summary
        est.dim_, est.n_train_ = int(m["dim"]), int(m["n_train"])
        est.atol_, est.species_ = float(summary.atol), species
        est.fingerprint_ = summary.fingerprint
        est.train_error_ = summary.predicted_error()
        est.calibration_ = calibration
        est.knn_distance_ = novelty["knn_distance"].astype(np.float32)
        est.train_novelty_ = novelty["train_novelty"].astype(np.float64)
        est._set_novelty_scales()
        est._set_novelty_reference()
        return est

    def __repr__(self) -> str:
        state = ""
        if self.is_fitted:
            cal = "" if self.calibration_ is None else ", calibrated"
            state = (f", fitted on {self.n_train_} atoms x {self.summary_.n_members} member(s) "
                     f"({self.index_kind_}), atol={self.atol_:.4g} eV/A, "
                     f"scale_={self.scale_:.4g}{cal}")
        return f"LTAUEstimator(k={self.k}, index={self.index!r}, s={self.s}{state})"


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
        check_is_fitted(estimator)
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

    def kneighbors(self, descriptors: np.ndarray, species: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(distances (n,k), indices (n,k)) as :meth:`LTAUEstimator.kneighbors`, including
        the broad re-search of atoms that look novel (so a miss is not carried forward)."""
        est = self.estimator
        x = check_descriptors(descriptors, est.dim_)
        n, k = x.shape[0], int(est.k)
        warm = (est.index_kind_ == "hnsw" and self._prev is not None and self._prev.shape == (n, k)
                and self._since_cold < self.refresh_every)
        if not warm:
            dist, idx = est.kneighbors(x, species)
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
                dist, idx = est.kneighbors(x, species)
                self._since_cold = 0
            else:
                dist, idx = est.confirm_novel(x, np.sqrt(np.maximum(d2, 0.0)), idx, species)
                self._since_cold += 1
        self._prev = idx
        return dist, idx

    def predict(self, descriptors: np.ndarray, *, s: float | None = None, group: Any = None,
                species: np.ndarray | None = None) -> Prediction:
        """As :meth:`LTAUEstimator.predict`, warm-started."""
        dist, idx = self.kneighbors(descriptors, species)
        return self.estimator.predict_from_neighbors(dist, idx, s=s, group=group,
                                                     species=species)
