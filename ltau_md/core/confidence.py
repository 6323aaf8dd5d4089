"""Per-atom confidence from logged errors (LTAU Algorithm 1).

For training atom i and ensemble member m, over the epoch window W,

    p_i^m = |{t in W : eps_i^t <= atol + rtol * |F_i|}| / |W|

and mu_M(p_i), sigma_M(p_i) are the mean and (population) standard deviation over members.

:class:`ErrorSummary` keeps, per member and atom, everything the estimator needs after fitting,
without the raw log:

* ``p0``   float32: exact p at the fitted tolerance (s = 1),
* ``mean`` float32: mean logged error (the predicted error, eV/A),
* ``hist`` uint8/uint16: counts of the logged errors over ``n_bins`` fixed log-spaced bins
  spanning atol*1e-2 .. atol*1e2 (atol is a bin edge), from which p at any tolerance atol*s is
  interpolated (exact at bin edges, in particular at s = 1 with rtol = 0).

Per-species tolerance (``atol="per_species"`` or ``atol={Z: atol_Z}``, eV/A): atom i is judged
at its own element's tolerance, p_i^m = |{t : eps_i^t <= atol_{Z_i}*s + rtol*|F_i|}| / |W|,
and its histogram edges are relative to that tolerance (:func:`make_edges` of atol_{Z_i}, so
atol_{Z_i}*s is read exactly at every edge s, as in the global case). ``"per_species"`` takes
atol_Z = the final training force MAE over the atoms of element Z (averaged over members).
Only the small {Z: atol_Z} table is stored besides the global state (the scalar ``atol`` is
then the atom-weighted mean of atol_{Z_i}, the reference tolerance: stored ``edges``,
the estimator's ``atol_``, the calibration's default target).

That is ``n_bins + 8`` bytes per training atom and member (72 B for the default 64 bins and
fewer than 256 epochs), plus 4 B per atom for |F_i| and 4 B for the species.
The log is read one epoch at a time, so memory is O(N * n_bins), never O(N * epochs).

:func:`cartography` (LTAU paper, App. E): mu_M(p_i) vs sigma_M(p_i) of the training atoms over
ensemble members, labelling atoms easy / ambiguous / hard (:func:`cartography_from` reads them
from an ErrorSummary or a fitted estimator).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

from ltau_md.core.errorlog import ErrorLog, check_same_dataset
from ltau_md.core.exceptions import ArtifactError, DataError, InvalidParameterError
from ltau_md.core.validation import check_is_fitted

if TYPE_CHECKING:
    from ltau_md.core.estimator import LTAUEstimator

__all__ = [
    "CARTOGRAPHY_LABELS",
    "Cartography",
    "DEFAULT_BINS",
    "ErrorSummary",
    "PER_SPECIES",
    "SPAN_DECADES",
    "bin_index",
    "cartography",
    "cartography_from",
    "check_atol",
    "fraction_below",
    "make_edges",
]

DEFAULT_BINS = 64
SPAN_DECADES = 2.0  # bins span atol * 10**-2 .. atol * 10**2
_CHUNK = 1 << 16  # atoms per block when scoring every training atom
#: ``atol`` option: each element's own final training force MAE as its tolerance
PER_SPECIES = "per_species"
#: an ``atol`` option: None (final training force MAE over all atoms), a float (eV/A),
#: :data:`PER_SPECIES`, or a mapping {atomic number: atol_Z in eV/A}
AtolOption = float | str | Mapping[Any, float] | None


def check_atol(atol: AtolOption) -> AtolOption:
    """Validate an ``atol`` option and return it in canonical form.

    None and :data:`PER_SPECIES` are returned as they are, a positive finite number unchanged,
    a mapping {Z: atol_Z} (Z an atomic number >= 1 as int or digit string, atol_Z > 0 finite,
    eV/A) as a new dict {str(Z): float(atol_Z)} in increasing Z (JSON-stable). Anything else
    raises :class:`InvalidParameterError`.
    """
    if atol is None or (isinstance(atol, str) and atol == PER_SPECIES):
        return atol
    if isinstance(atol, str):
        raise InvalidParameterError(
            f"atol must be a number (eV/A), None, {PER_SPECIES!r} or a dict {{Z: atol_Z}}, "
            f"got {atol!r}")
    if isinstance(atol, Mapping):
        if not atol:
            raise InvalidParameterError("atol dict {Z: atol_Z} is empty")
        out: dict[int, float] = {}
        for key, value in atol.items():
            z = _atomic_number(key)
            if z in out:
                raise InvalidParameterError(f"atol dict names element {z} twice")
            out[z] = _positive(f"atol of element {z} (eV/A)", value)
        return {str(z): out[z] for z in sorted(out)}
    _positive("atol (eV/A)", atol)
    return atol


def _atomic_number(key: Any) -> int:
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, Integral) or key < 1:
        raise InvalidParameterError(f"atol dict keys must be atomic numbers >= 1, got {key!r}")
    return int(key)


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise InvalidParameterError(f"{name} must be positive and finite, got {value}")
    return float(value)


def make_edges(atol: float, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """Bin edges (n_bins + 1,): 0, log-spaced atol*1e-2 .. atol*1e2 with atol an exact edge, inf.

    Bin b holds errors in (edges[b], edges[b+1]].
    """
    if not (np.isfinite(atol) and atol > 0):
        raise DataError(f"atol must be a positive finite number in eV/A, got {atol}")
    if n_bins < 4 or n_bins % 2:
        raise DataError(f"n_bins must be an even number >= 4, got {n_bins}")
    inner = atol * 10.0 ** np.linspace(-SPAN_DECADES, SPAN_DECADES, n_bins - 1)
    inner[(n_bins - 2) // 2] = atol
    return np.concatenate([[0.0], inner, [np.inf]])


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value: b with edges[b] < v <= edges[b+1] (0 for v <= 0)."""
    idx = np.searchsorted(edges, values, side="left") - 1
    return np.clip(idx, 0, len(edges) - 2)


def fraction_below(hist: np.ndarray, edges: np.ndarray, tol: np.ndarray,
                   n_epochs: np.ndarray) -> np.ndarray:
    """Fraction of logged errors <= tol from histograms.

    hist: (..., n, B) counts; tol: (n,) tolerances in eV/A; n_epochs: (...,) counts per member.
    Within a bin the count is interpolated in log(error) (linearly in the first bin, none in the
    open last bin), so the result is exact whenever tol is a bin edge.
    """
    tol = np.asarray(tol, dtype=np.float64)
    j = bin_index(edges, tol)  # tol lies in (edges[j], edges[j+1]]
    cum = np.cumsum(hist, axis=-1, dtype=np.int64)
    below = np.where(j > 0, _take_last(cum, np.maximum(j - 1, 0)), 0)
    lo, hi = edges[j], edges[j + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(
            j == 0,
            np.clip(tol / hi, 0.0, 1.0),
            np.where(np.isinf(hi), 0.0, np.log(np.maximum(tol, lo) / lo) / np.log(hi / lo)),
        )
    inbin = _take_last(hist, j)
    counts = below + frac * inbin
    ne = np.asarray(n_epochs, dtype=np.float64).reshape(np.shape(n_epochs) + (1,))
    return (counts / ne).astype(np.float32)


def _take_last(a: np.ndarray, j: np.ndarray) -> np.ndarray:
    """a[..., r, j[r]] for every row r (a: (..., n, B), j: (n,))."""
    idx = np.broadcast_to(j[:, None], a.shape[:-1] + (1,))
    return np.take_along_axis(a, idx, -1)[..., 0]


@dataclass
class ErrorSummary:
    """Compact per-atom error statistics of M members (see module docstring).

    Arrays: hist (M, N, B), p0 (M, N), mean (M, N) eV/A, n_epochs (M,), edges (B+1,) eV/A,
    ref_force_norm (N,) eV/A, species (N,). Scalars: atol (eV/A), rtol, fingerprint, window,
    atol_per_species ({Z: atol_Z} in eV/A, or None for one global atol).

    With ``atol_per_species`` atom i's tolerance is atol_{Z_i}*s (+ rtol*|F_i|) and its
    histogram bins are ``make_edges(atol_{Z_i})`` (:meth:`edges_of`); ``atol`` and ``edges``
    are then the reference (atom-weighted mean) tolerance and its bins.
    """

    hist: np.ndarray
    p0: np.ndarray
    mean: np.ndarray
    n_epochs: np.ndarray
    edges: np.ndarray
    ref_force_norm: np.ndarray
    species: np.ndarray
    atol: float
    rtol: float
    fingerprint: str
    window: tuple[int | None, int | None] = (None, None)
    atol_per_species: dict[int, float] | None = None

    @property
    def n_atoms(self) -> int:
        return int(self.p0.shape[1])

    @property
    def n_members(self) -> int:
        return int(self.p0.shape[0])

    @property
    def nbytes_per_atom(self) -> float:
        """Bytes of stored state per training atom (all members)."""
        total = sum(a.nbytes for a in (self.hist, self.p0, self.mean, self.ref_force_norm,
                                       self.species))
        return total / self.n_atoms

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_logs(
        cls,
        logs: ErrorLog | Sequence[ErrorLog],
        *,
        atol: AtolOption = None,
        rtol: float = 0.0,
        start: int | None = None,
        stop: int | None = None,
        n_bins: int = DEFAULT_BINS,
    ) -> ErrorSummary:
        """Summarise every member of every log (all logs must share the dataset fingerprint).

        atol (eV/A) defaults to the force MAE of the last logged epoch (mean over atoms of
        eps_i, averaged over members). ``atol="per_species"``: a tolerance per element, its
        atoms' force MAE of the last logged epoch (averaged over members); ``atol={Z: atol_Z}``
        (eV/A): given per element (every element of the log must be listed; others are
        ignored). ``start``/``stop`` select the epoch window as a slice over each member's
        logged epochs.
        """
        logs = [logs] if isinstance(logs, ErrorLog) else list(logs)
        if not logs:
            raise DataError("no error logs given")
        check_same_dataset(logs)
        ref = logs[0]
        sources = [(lg, m) for lg in logs for m in lg.members]
        if not sources:
            raise ArtifactError(f"error log(s) {[str(lg.path) for lg in logs]} hold no epochs")
        windows = [lg.window(m, start, stop) for lg, m in sources]
        for (lg, m), w in zip(sources, windows, strict=True):
            if not w:
                raise DataError(f"epoch window {start}:{stop} is empty for member {m} of {lg.path}")
        per_species = None
        if isinstance(atol, (str, Mapping)):
            per_species = _species_atol(check_atol(atol), ref.species, sources)
            atol = _reference_atol(per_species, ref.species)
        elif atol is None:
            atol = float(np.mean([
                lg.read_epoch(lg.epochs(m)[-1], m).mean(dtype=np.float64) for lg, m in sources
            ]))
        rtol = float(rtol)
        if rtol < 0 or not np.isfinite(rtol):
            raise DataError(f"rtol must be >= 0, got {rtol}")
        edges = make_edges(atol, n_bins)
        n, m_count = ref.n_atoms, len(sources)
        max_e = max(len(w) for w in windows)
        hdtype = np.uint8 if max_e < 256 else (np.uint16 if max_e < 65536 else np.uint32)
        hist = np.zeros((m_count, n, n_bins), dtype=hdtype)
        p0 = np.empty((m_count, n), dtype=np.float32)
        mean = np.empty((m_count, n), dtype=np.float32)
        species = ref.species.astype(np.int32)
        if per_species is None:
            tol = atol + rtol * ref.ref_force_norm.astype(np.float64)
            groups = [(slice(None), edges)]
        else:  # each element's atoms binned relative to its own tolerance
            tol = (_lookup(per_species, species)
                   + rtol * ref.ref_force_norm.astype(np.float64))
            groups = [(np.flatnonzero(species == z), make_edges(a, n_bins))
                      for z, a in per_species.items()]
        rows = np.arange(n, dtype=np.int64) * n_bins
        for k, ((lg, m), w) in enumerate(zip(sources, windows, strict=True)):
            hits = np.zeros(n, dtype=np.int64)
            sums = np.zeros(n, dtype=np.float64)
            flat = hist[k].reshape(-1)
            b = np.empty(n, dtype=np.int64)
            for e in w:
                err = np.asarray(lg.read_epoch(e, m))
                hits += err <= tol
                sums += err
                for sel, ed in groups:
                    b[sel] = bin_index(ed, err[sel])
                flat[rows + b] += 1  # one increment per atom: no collisions
            p0[k] = hits / len(w)
            mean[k] = sums / len(w)
        return cls(hist=hist, p0=p0, mean=mean,
                   n_epochs=np.array([len(w) for w in windows], dtype=np.int64), edges=edges,
                   ref_force_norm=ref.ref_force_norm.astype(np.float32),
                   species=species, atol=float(atol), rtol=rtol,
                   fingerprint=ref.fingerprint, window=(start, stop),
                   atol_per_species=per_species)

    # ------------------------------------------------------------------ queries
    def atol_of(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Per-atom absolute tolerance at s = 1 in eV/A (float64, for ``rows`` or all atoms):
        atol_{Z_i} with a per-species tolerance, else atol for every atom."""
        species = self.species if rows is None else self.species[rows]
        if self.atol_per_species is None:
            return np.full(np.shape(species), self.atol, dtype=np.float64)
        return _lookup(self.atol_per_species, species)

    def edges_of(self, z: int) -> np.ndarray:
        """Histogram bin edges (B+1,) in eV/A of the atoms of element ``z``: ``edges`` with one
        global atol, ``make_edges(atol_z)`` with a per-species tolerance."""
        if self.atol_per_species is None:
            return self.edges
        return make_edges(self.atol_per_species[int(z)], self.hist.shape[-1])

    def tolerance(self, s: float = 1.0, rows: np.ndarray | None = None) -> np.ndarray:
        """Per-atom tolerance atol*s + rtol*|F_i| in eV/A (for ``rows`` or all atoms); atol is
        atol_{Z_i} with a per-species tolerance."""
        ref = self.ref_force_norm if rows is None else self.ref_force_norm[rows]
        atol = self.atol if self.atol_per_species is None else self.atol_of(rows)
        return atol * float(s) + self.rtol * ref.astype(np.float64)

    def member_confidence(self, s: float = 1.0, rows: np.ndarray | None = None) -> np.ndarray:
        """p_i^m (M, n) at tolerance atol*s (+ rtol*|F_i|) for ``rows`` (default all atoms);
        atol is atol_{Z_i} with a per-species tolerance."""
        if not (np.isfinite(s) and s > 0):
            raise DataError(f"scaling factor s must be positive and finite, got {s}")
        if s == 1.0:
            return self.p0 if rows is None else self.p0[:, rows]
        if rows is None:  # all atoms, in chunks: the cumulative histogram is int64
            out = np.empty(self.p0.shape, dtype=np.float32)
            for a in range(0, self.n_atoms, _CHUNK):
                r = np.arange(a, min(a + _CHUNK, self.n_atoms))
                out[:, r] = self.member_confidence(s, r)
            return out
        if self.atol_per_species is None:
            return fraction_below(self.hist[:, rows], self.edges, self.tolerance(s, rows),
                                  self.n_epochs)
        rows = np.asarray(rows)
        tol = self.tolerance(s, rows)
        species = self.species[rows]
        out = np.empty((self.n_members, rows.size), dtype=np.float32)
        for z in np.unique(species):
            sel = np.flatnonzero(species == z)
            out[:, sel] = fraction_below(self.hist[:, rows[sel]], self.edges_of(z), tol[sel],
                                         self.n_epochs)
        return out

    def confidence(self, s: float = 1.0, rows: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(mu_M(p_i), sigma_M(p_i)) over members at tolerance atol*s, each (n,)."""
        p = self.member_confidence(s, rows)
        return p.mean(axis=0), p.std(axis=0)

    def predicted_error(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Expected |error| per training atom in eV/A: mean logged error, averaged over members."""
        m = self.mean if rows is None else self.mean[:, rows]
        return m.mean(axis=0)

    # ------------------------------------------------------------------ persistence
    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays to persist (see :meth:`from_arrays`)."""
        return {"hist": self.hist, "p0": self.p0, "mean": self.mean, "n_epochs": self.n_epochs,
                "edges": self.edges, "ref_force_norm": self.ref_force_norm,
                "species": self.species}

    def scalars(self) -> dict:
        """JSON-able scalars to persist: atol (eV/A), rtol, fingerprint, window and
        atol_per_species ({"Z": atol_Z} in eV/A with string keys, or None)."""
        per = (None if self.atol_per_species is None
               else {str(z): float(a) for z, a in sorted(self.atol_per_species.items())})
        return {"atol": self.atol, "rtol": self.rtol, "fingerprint": self.fingerprint,
                "window": list(self.window), "atol_per_species": per}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], scalars: dict) -> ErrorSummary:
        """Rebuild from :meth:`arrays` and :meth:`scalars`, validating shapes (and that a
        per-species tolerance covers every element)."""
        per = scalars.get("atol_per_species")
        if per is not None:
            if not isinstance(per, Mapping):
                raise ArtifactError(f"error summary atol_per_species must be a dict, got {per!r}")
            try:
                per = {int(z): float(a) for z, a in check_atol(per).items()}
            except InvalidParameterError as exc:
                raise ArtifactError(f"error summary atol_per_species: {exc}") from exc
        try:
            s = cls(**{k: arrays[k] for k in ("hist", "p0", "mean", "n_epochs", "edges",
                                              "ref_force_norm", "species")},
                    atol=float(scalars["atol"]), rtol=float(scalars["rtol"]),
                    fingerprint=str(scalars["fingerprint"]),
                    window=tuple(scalars.get("window", (None, None))), atol_per_species=per)
        except KeyError as exc:
            raise ArtifactError(f"error summary is missing {exc}") from exc
        if per is not None:
            missing = sorted(set(np.unique(s.species).tolist()) - set(per))
            if missing:
                raise ArtifactError(f"error summary atol_per_species lacks elements {missing}")
        m, n = s.p0.shape
        if (s.hist.shape[:2] != (m, n) or s.mean.shape != (m, n) or s.n_epochs.shape != (m,)
                or s.ref_force_norm.shape != (n,) or s.species.shape != (n,)
                or s.hist.shape[2] + 1 != s.edges.shape[0]):
            raise ArtifactError("error summary arrays have inconsistent shapes")
        return s


def _lookup(table: Mapping[int, float], species: np.ndarray) -> np.ndarray:
    """table[Z_i] for every atom (float64); every Z must be in the table."""
    zs = np.array(sorted(table), dtype=np.int64)
    vals = np.array([table[int(z)] for z in zs], dtype=np.float64)
    return vals[np.searchsorted(zs, species)]


def _species_atol(option: str | Mapping[str, float], species: np.ndarray,
                  sources: list[tuple[ErrorLog, int]]) -> dict[int, float]:
    """{Z: atol_Z} (eV/A) for the elements of ``species``: given (checked to cover them) or,
    for :data:`PER_SPECIES`, each element's mean error of the last logged epoch averaged over
    members (read one member at a time)."""
    present, inv = np.unique(species, return_inverse=True)
    if option == PER_SPECIES:
        counts = np.bincount(inv, minlength=present.size)
        acc = np.zeros(present.size, dtype=np.float64)
        for lg, m in sources:
            err = np.asarray(lg.read_epoch(lg.epochs(m)[-1], m), dtype=np.float64)
            acc += np.bincount(inv, weights=err, minlength=present.size) / counts
        table = {int(z): float(a / len(sources)) for z, a in zip(present, acc, strict=True)}
        bad = {z: a for z, a in table.items() if not (np.isfinite(a) and a > 0)}
        if bad:
            raise DataError(f"per-species atol must be positive: the last logged epoch has force "
                            f"MAE {bad} eV/A for these elements; pass atol={{Z: atol_Z}}")
        return table
    given = {int(z): a for z, a in dict(option).items()}
    missing = sorted(set(present.tolist()) - set(given))
    if missing:
        raise DataError(f"atol dict lacks elements {missing} of the training set (eV/A per "
                        f"element, e.g. {{{int(present[0])}: 0.05}})")
    return {int(z): given[int(z)] for z in present}


def _reference_atol(table: Mapping[int, float], species: np.ndarray) -> float:
    """Atom-weighted mean of atol_{Z_i} (eV/A): the reference tolerance of a per-species
    summary (for "per_species" it is the global final training force MAE)."""
    zs, counts = np.unique(species, return_counts=True)
    return float(sum(table[int(z)] * int(c) for z, c in zip(zs, counts, strict=True))
                 / counts.sum())


# ---------------------------------------------------------------------------- cartography
CARTOGRAPHY_LABELS = ("easy", "ambiguous", "hard")


@dataclass
class Cartography:
    """Dataset cartography of training atoms: ``mu`` = mu_M(p_i), ``sigma`` = sigma_M(p_i)
    over ensemble members, ``labels`` (n,) int codes into :data:`CARTOGRAPHY_LABELS`
    (0 easy, 1 ambiguous, 2 hard), ``weights`` (n,) suggested resampling weights (mean 1),
    and the thresholds used."""

    mu: np.ndarray
    sigma: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    sigma_threshold: float
    mu_threshold: float

    def label_names(self) -> np.ndarray:
        return np.asarray(CARTOGRAPHY_LABELS)[self.labels]

    def fractions(self) -> dict[str, float]:
        """Fraction of atoms per label, in the order of :data:`CARTOGRAPHY_LABELS`."""
        n = max(self.labels.size, 1)
        return {name: float(np.sum(self.labels == i) / n)
                for i, name in enumerate(CARTOGRAPHY_LABELS)}


def cartography(
    mu: np.ndarray,
    sigma: np.ndarray,
    *,
    ambiguous_quantile: float = 2.0 / 3.0,
    min_ambiguous_sigma: float = 0.05,
    mu_threshold: float = 0.5,
) -> Cartography:
    """Label training atoms from their ensemble mean mu and spread sigma of p (Swayamdipta et
    al. 2020 cartography applied to LTAU, paper App. E).

    ambiguous: sigma >= max(quantile(sigma, ``ambiguous_quantile``), ``min_ambiguous_sigma``)
    (members disagree); otherwise easy if mu >= ``mu_threshold`` else hard (consistently
    learnt / consistently not learnt). weights = (1 - mu) + sigma normalised to mean 1
    (uniform if all zero): emphasis for hard and ambiguous atoms when resampling.
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or mu.shape != sigma.shape or mu.size == 0:
        raise DataError(f"mu and sigma must be non-empty 1-D of equal shape, got {mu.shape}, "
                        f"{sigma.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise DataError("mu/sigma contain NaN/inf")
    if not 0 <= ambiguous_quantile <= 1:
        raise InvalidParameterError(
            f"ambiguous_quantile must be in [0, 1], got {ambiguous_quantile}")
    thr = max(float(np.quantile(sigma, ambiguous_quantile)), float(min_ambiguous_sigma))
    amb = (sigma >= thr) & (sigma > 0)
    labels = np.where(amb, 1, np.where(mu >= mu_threshold, 0, 2)).astype(np.int8)
    w = (1.0 - mu) + sigma
    w = w / w.mean() if w.sum() > 0 else np.ones_like(w)
    return Cartography(mu=mu, sigma=sigma, labels=labels, weights=w, sigma_threshold=thr,
                       mu_threshold=float(mu_threshold))


def cartography_from(source: LTAUEstimator | ErrorSummary, s: float | None = None,
                     **kwargs: Any) -> Cartography:
    """:func:`cartography` of the training atoms of a fitted estimator or an ErrorSummary at
    tolerance atol*s (default: the estimator's scale ``scale_``, or 1 for a summary)."""
    if isinstance(source, ErrorSummary):
        summary, s = source, 1.0 if s is None else s
    else:
        check_is_fitted(source)
        summary, s = source.summary_, source.scale_ if s is None else s
    mu, sigma = summary.confidence(float(s))
    return cartography(mu, sigma, **kwargs)
