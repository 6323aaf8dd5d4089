"""The fitted LTAU estimator (Algorithm 2): k-NN in descriptor space over training atoms.

A test atom j gets the mean over its k nearest training atoms (FAISS, L2 in descriptor space) of
mu_M(p_i) (its confidence), sigma_M(p_i) and the atoms' mean logged error (predicted error,
eV/A); the uncertainty is 1 - confidence. The confidence is read at the tolerance atol*s.

Usage follows scikit-learn: parameters in ``__init__``, stored unchanged; fitted state in
attributes ending in ``_`` (``index_``, ``index_kind_``, ``summary_``, ``calibration_``,
``alarm_statistics_``), all set by one setter from a
:class:`~ltau_md.core.estimator.FittedState`; ``fit`` / ``predict``; ``save`` / ``load``
with a versioned, checksummed manifest.

The scale s actually used (:meth:`LTAUEstimator.effective_s`, ``scale_``) is, in this order:
the ``s`` passed to a call, the ``s`` parameter if not None (a user override), the fitted
calibration's scale for the query's group, its global scale, else 1. The calibration
(:class:`Calibration`) is fitted by :func:`ltau_md.core.calibration.fit_scale`, which sets it
with :meth:`LTAUEstimator.set_calibration`.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ltau_md.core._param_validation import (
    check_positive,
    validate_params,
)
from ltau_md.core.confidence import DEFAULT_BINS, ErrorSummary, check_atol
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator._alarm_statistics import (
    SCALE_DEPENDENT_SIGNALS,
    InDomainStatistics,
)
from ltau_md.core.estimator._artifact import read_artifact, write_artifact
from ltau_md.core.estimator._calibration import Calibration
from ltau_md.core.estimator._index import (
    IndexSettings,
    build_index,
    configure_search,
    index_kind_for,
    leave_one_out_search,
    set_threads,
)
from ltau_md.core.estimator._neighbors import NeighborsMixin
from ltau_md.core.estimator._novelty import NoveltyReference, loo_sample
from ltau_md.core.estimator._parameters import ESTIMATOR_CONSTRAINTS
from ltau_md.core.estimator._prediction import Prediction
from ltau_md.core.estimator._signals import LatentSignalsMixin
from ltau_md.core.estimator._state import FittedState
from ltau_md.core.exceptions import (
    DataError,
    DescriptorError,
    InvalidParameterError,
    SpeciesError,
)
from ltau_md.core.model import check_species
from ltau_md.core.signals import LatentSignal, make_signal
from ltau_md.core.validation import check_is_fitted

__all__ = ["LTAUEstimator", "NO_ERROR_LOG"]

#: ``fit`` logs the CPU seconds of each stage here (INFO): summary, index, leave_one_out,
#: signals
logger = logging.getLogger("ltau_md.fit")

#: what an estimator fitted without an error log says when asked for the LTAU confidence
NO_ERROR_LOG = ("this estimator was fitted without an error log (a model trained without the "
                "ltau-md callback): LTAU confidence, uncertainty and predicted error are "
                "absent; novelty and the latent signals are available")

IndexKind = Literal["auto", "flat", "hnsw", "ivfpq"]


def _stage(name: str, t0: float, what: str = "") -> float:
    """Log the CPU seconds since ``t0`` of a fit stage; returns the time now."""
    now = time.process_time()
    logger.info("fit stage %s: %.2f s CPU%s", name, now - t0, f" ({what})" if what else "")
    return now


class LTAUEstimator(NeighborsMixin, LatentSignalsMixin):
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
    signals : tuple of str
        Latent signals of :mod:`ltau_md.core.signals` (``"gmm"``, ``"doptimality"``,
        ``"clustered_doptimality"``, ``"llpr"``) fitted at ``fit`` on the same training
        descriptors, with default parameters (:meth:`add_signals` adds configured ones).
    metadata : dict or None
        Free-form JSON-able provenance (model path, data), stored in the manifest.

    Attributes (after ``fit`` or ``load``)
    --------------------------------------
    index_, index_kind_, summary_ (:class:`~ltau_md.core.confidence.ErrorSummary`), dim_, n_train_,
    atol_ (eV/A), species_, fingerprint_, train_error_ (eV/A per training atom),
    knn_distance_ (each training atom's mean distance to its k nearest other training atoms),
    train_novelty_ (its leave-one-out novelty), loo_rows_ (the training atoms these two hold:
    None for all of them; a seeded per-element sample above
    :data:`~ltau_md.core.estimator.LOO_FULL_MAX_ATOMS` atoms with ``novelty="element"``),
    novelty_scale_ ({Z: median knn_distance_}),
    calibration_ (:class:`Calibration` or None: the scale calibration), signals_ ({name:
    fitted :class:`~ltau_md.core.signals.LatentSignal}),
    alarm_statistics_ (:class:`InDomainStatistics`: in-domain frame statistics for alarm
    rates), scale_ (the scale used by default).

    Parameters are declared in ``_parameter_constraints`` and checked by ``fit``, ``save``
    and ``load``. Bad parameters raise
    :class:`~ltau_md.core.exceptions.InvalidParameterError` (a ValueError); using an
    unfitted estimator raises :class:`~ltau_md.core.exceptions.NotFittedError`.
    """

    #: declared parameter constraints (``atol`` is checked by
    #: :func:`~ltau_md.core.confidence.check_atol`, ``n_bins`` must also be even)
    _parameter_constraints: dict = ESTIMATOR_CONSTRAINTS

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
        ef_search: int = 24,
        ivf_nlist: int | None = None,
        pq_m: int = 8,
        pq_nbits: int = 8,
        nprobe: int = 16,
        n_threads: int | None = None,
        novelty: str = "element",
        confirm_pvalue: float = 0.01,
        signals: tuple[str, ...] = (),
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
        self.signals = signals
        self.metadata: dict = dict(metadata or {})
        self._cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        """The ``__init__`` parameters, in signature order (the one list of them)."""
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """The ``__init__`` parameters, as stored."""
        return {k: getattr(self, k) for k in self._param_names()}

    def check_params(self) -> None:
        """Raise InvalidParameterError naming the first bad parameter (as ``fit`` does first;
        callers with slow work before ``fit``, e.g. descriptor extraction, check first)."""
        validate_params(self._parameter_constraints, self.get_params(), owner="LTAUEstimator")
        check_atol(self.atol)  # None, eV/A, "per_species" or {Z: eV/A}; stored as given
        if self.n_bins % 2:
            raise InvalidParameterError(f"LTAUEstimator: n_bins must be even, got {self.n_bins}")

    def error_summary(self, logs: Any) -> ErrorSummary:
        """The per-atom confidence summary ``fit`` builds from error logs (or per-epoch error
        arrays) with this estimator's ``atol``, ``rtol``, ``window`` and ``n_bins``; pass it to
        ``fit`` in their place. Raises the error naming a window that selects no epochs, an
        ``atol`` that does not apply, before any descriptor is computed."""
        self.check_params()
        start, stop = self.window
        return ErrorSummary.from_logs(logs, atol=check_atol(self.atol), rtol=self.rtol,
                                      start=start, stop=stop, n_bins=self.n_bins)

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "summary_")

    @property
    def has_error_log(self) -> bool:
        """Whether the estimator was fitted with logged training errors: without them
        (``fit(x, None, species=...)``) there is no LTAU confidence, uncertainty or predicted
        error, only novelty and the latent signals."""
        check_is_fitted(self)
        return self.summary_ is not None

    def _require_error_log(self) -> ErrorSummary:
        if self.summary_ is None:
            raise DataError(NO_ERROR_LOG)
        return self.summary_

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
        return self.effective_s(group) if s is None else check_positive("s", s)

    # ------------------------------------------------------------------ fitting
    def fit(self, descriptors: np.ndarray,
            errors: ErrorLog | list[ErrorLog] | ErrorSummary | None,
            *, species: np.ndarray | None = None) -> LTAUEstimator:
        """Index the training atoms and summarise their logged errors.

        Parameters
        ----------
        descriptors : (N, D) array
            Descriptors of the training atoms, in the log's atom order.
        errors : ErrorLog, list of ErrorLog (ensemble members), ErrorSummary or None
            Per-atom training errors (eV/A) logged per epoch. None (a model trained without
            the error-logging callback): no LTAU confidence, uncertainty or predicted error
            (``has_error_log`` False); novelty and the latent signals work as usual.
        species : (N,) int array, optional
            Atomic numbers; if given, they must match the log's (required without one).

        Returns
        -------
        LTAUEstimator
            ``self``, fitted; a previous calibration and alarm statistics are discarded.
        """
        self.check_params()
        x = np.asarray(descriptors)
        if x.ndim != 2 or x.shape[0] == 0:
            raise DescriptorError(f"training descriptors must be (N, D) with N > 0, got {x.shape}")
        summary: ErrorSummary | None
        if errors is None:
            if species is None:
                raise InvalidParameterError("without an error log, pass the training atoms' "
                                            "species= (atomic numbers, one per descriptor row)")
            summary, train_species = None, np.asarray(species, dtype=np.int64)
            if train_species.shape != (x.shape[0],):
                raise DescriptorError(f"species has shape {train_species.shape}, expected "
                                      f"({x.shape[0]},) (one per descriptor row)")
        else:
            t0 = time.process_time()
            summary = errors if isinstance(errors, ErrorSummary) else self.error_summary(errors)
            if not isinstance(errors, ErrorSummary):
                _stage("summary", t0)
            train_species = summary.species
            if x.shape[0] != summary.n_atoms:
                raise DescriptorError(f"{x.shape[0]} training descriptors but the error log "
                                      f"has {summary.n_atoms} atoms")
            if species is not None and not np.array_equal(np.asarray(species), train_species):
                raise SpeciesError("species of the descriptors differ from the error log's "
                                   "atom order")
        n = x.shape[0]
        if int(self.k) > n:
            raise InvalidParameterError(f"k={self.k} exceeds the {n} training atoms")
        kind = index_kind_for(self.index, n)
        settings = IndexSettings(self)
        set_threads(self.n_threads)
        t0 = time.process_time()
        index = build_index(x, kind, settings)
        t0 = _stage("index", t0, f"{kind}, {n} atoms")
        rows = loo_sample(train_species, self.novelty, kind)
        dist, nbrs = leave_one_out_search(index, kind, x, settings, rows)
        novelty = NoveltyReference(self.novelty, dist, train_species, neighbors=nbrs,
                                   rows=rows)
        t0 = _stage("leave_one_out", t0, f"{n if rows is None else rows.size} atoms")
        signals = {n: make_signal(n).fit(x, train_species) for n in self.signals}
        if signals:
            _stage("signals", t0, ", ".join(signals))
        self._set_fitted(FittedState(index=index, index_kind=kind, summary=summary,
                                     novelty=novelty, signals=signals))
        return self

    def _set_fitted(self, state: FittedState) -> None:
        """The one setter of the fitted attributes (``fit`` and ``load``)."""
        summary = state.summary
        configure_search(state.index, state.index_kind, IndexSettings(self))
        self.index_ = state.index
        self.index_kind_ = state.index_kind
        self.summary_: ErrorSummary | None = summary
        self.dim_ = int(state.index.d)
        self.n_train_ = int(state.index.ntotal)
        self.train_species_ = np.asarray(state.novelty.species, dtype=np.int64)
        self.species_ = sorted(int(z) for z in np.unique(self.train_species_))
        self.atol_ = None if summary is None else float(summary.atol)
        self.fingerprint_ = None if summary is None else summary.fingerprint
        self.train_error_ = None if summary is None else summary.predicted_error()
        self.knn_distance_ = state.novelty.knn_distance
        self.train_novelty_ = state.novelty.train_novelty
        self.loo_rows_ = state.novelty.rows
        self.novelty_scale_ = state.novelty.scale
        self.calibration_: Calibration | None = state.calibration
        self.alarm_statistics_ = state.alarm_statistics
        self.signals_: dict[str, LatentSignal] = dict(state.signals)
        self._novelty = state.novelty
        self._cache = {}

    def set_calibration(self, calibration: Calibration | None) -> None:
        """Set (or, with None, remove) the scale calibration ``calibration_``.

        In-domain alarm statistics of signals that depend on the scale
        (:data:`~ltau_md.core.estimator.SCALE_DEPENDENT_SIGNALS`: uncertainty, confidence)
        were computed at the old scale; they are dropped with a warning (fit them again).
        The ``s`` parameter is not changed; setting a calibration while it is set warns,
        since a set ``s`` overrides the calibration at inference.
        """
        check_is_fitted(self)
        if calibration is not None and not isinstance(calibration, Calibration):
            raise InvalidParameterError(f"calibration must be a Calibration or None, got "
                                        f"{type(calibration).__name__}")
        self.calibration_ = calibration
        self._cache = {}
        dropped = self.alarm_statistics_.drop(SCALE_DEPENDENT_SIGNALS)
        if dropped:
            warnings.warn(f"in-domain statistics {dropped} depend on s and were dropped "
                          "with the new s: fit them again (fit_alarm_thresholds, "
                          "calibrate_structures)", UserWarning, stacklevel=3)
        if calibration is not None and self.s is not None:
            warnings.warn(f"the estimator's s parameter ({self.s}) overrides the fitted "
                          "calibration at inference; set estimator.s = None to use it",
                          UserWarning, stacklevel=3)

    def without_calibration(self) -> LTAUEstimator:
        """A copy of this fitted estimator with no scale calibration and no alarm statistics
        (the index, summary and novelty reference are shared, not copied): what an
        evaluation calibrates and fits thresholds on, leaving this estimator as it is."""
        check_is_fitted(self)
        est = copy.copy(self)
        est.calibration_ = None
        est.alarm_statistics_ = InDomainStatistics()
        est.signals_ = dict(self.signals_)
        est._cache = {}
        return est

    # ------------------------------------------------------------------ prediction
    def training_confidence(self, s: float | None = None, group: Any = None
                            ) -> tuple[np.ndarray, np.ndarray]:
        """(mu_M(p_i), sigma_M(p_i)) of all training atoms at tolerance atol*s (default
        :meth:`effective_s` of ``group``); cached per s."""
        s = self.resolve_scale(s, group)
        if s not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            self._cache[s] = self._require_error_log().confidence(s)
        return self._cache[s]

    def confidence_from_neighbors(self, indices: np.ndarray, s: float | None = None,
                                  group: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(confidence, confidence_std) of query atoms with neighbours ``indices`` (n, k) at
        tolerance atol*s (default :meth:`effective_s` of ``group``), without a new search.
        Only the neighbours' histograms are read, so re-scoring at many s is cheap."""
        s = self.resolve_scale(s, group)
        return self._confidence_rows(self._check_indices(indices), s)

    def _confidence_rows(self, indices: np.ndarray, s: float
                         ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`confidence_from_neighbors` for checked ``indices`` at a resolved ``s``."""
        if s in self._cache or s == self.scale_:
            mu, sig = self.training_confidence(s)
            return mu[indices].mean(axis=1), sig[indices].mean(axis=1)
        uniq, inv = np.unique(indices, return_inverse=True)
        mu, sig = self._require_error_log().confidence(s, rows=uniq)
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
        check_is_fitted(self)
        s = self.resolve_scale(s, group)
        indices = self._check_indices(indices)  # once, for the three reads below
        nov, pval = self._novelty_rows(distances, indices, species)
        if self.summary_ is None:  # no error log: the LTAU fields are NaN
            nan = np.full(indices.shape[0], np.nan)
            return Prediction(confidence=nan, confidence_std=nan, uncertainty=nan,
                              predicted_error=nan, distances=distances, indices=indices,
                              novelty=nov, novelty_pvalue=pval, s=s)
        conf, std = self._confidence_rows(indices, s)
        err = self.train_error_[indices].mean(axis=1)
        return Prediction(confidence=conf, confidence_std=std, uncertainty=1.0 - conf,
                          predicted_error=err, distances=distances, indices=indices,
                          novelty=nov, novelty_pvalue=pval, s=s)

    def check_species(self, species: np.ndarray) -> None:
        """Raise SpeciesError naming atomic numbers absent from the training set."""
        check_is_fitted(self)
        check_species(species, self.species_, "the estimator's training set")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the estimator to directory ``path`` (:mod:`ltau_md.core.estimator` artifact:
        ``index.faiss``, the summary and novelty arrays, ``manifest.json`` with parameters,
        shapes, checksums, the calibration and the alarm statistics).

        The directory is written under a temporary name and renamed into place, so an existing
        estimator at ``path`` is replaced only by a complete one; any other non-empty directory
        is refused (OutputExistsError) and left untouched.

        Returns
        -------
        Path
            ``path``.
        """
        check_is_fitted(self)
        self.check_params()
        # atol in canonical JSON form ({"Z": eV/A}, increasing Z) in the manifest
        params = {**self.get_params(), "atol": check_atol(self.atol)}
        params["window"] = list(params["window"])
        params["signals"] = list(params["signals"])
        state = FittedState(index=self.index_, index_kind=self.index_kind_,
                            summary=self.summary_, novelty=self._novelty,
                            calibration=self.calibration_,
                            alarm_statistics=self.alarm_statistics_, signals=self.signals_)
        return write_artifact(path, params, state)

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
        params, state = read_artifact(path, set(cls._param_names()),
                                      lambda p: cls(**p).check_params(),
                                      verify=verify, mmap=mmap)
        est = cls(**params)
        set_threads(est.n_threads)
        est._set_fitted(state)
        return est

    def __repr__(self) -> str:
        state = ""
        if self.is_fitted:
            cal = "" if self.calibration_ is None else ", calibrated"
            if self.summary_ is None:
                return (f"LTAUEstimator(k={self.k}, index={self.index!r}, fitted on "
                        f"{self.n_train_} atoms ({self.index_kind_}) without an error log)")
            state = (f", fitted on {self.n_train_} atoms x {self.summary_.n_members} member(s) "
                     f"({self.index_kind_}), atol={self.atol_:.4g} eV/A, "
                     f"scale_={self.scale_:.4g}{cal}")
        return f"LTAUEstimator(k={self.k}, index={self.index!r}, s={self.s}{state})"
