""":class:`ErrorSummary`: the compact per-member, per-atom error statistics (exact p at the
fitted tolerance, mean error, error histograms) read from the error logs one epoch at a time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ltau_md.core._param_validation import check_positive
from ltau_md.core.confidence._atol import AtolOption, check_atol
from ltau_md.core.confidence._binning import DEFAULT_BINS, bin_index, fraction_below, make_edges
from ltau_md.core.confidence._per_species import lookup_species, reference_atol, species_atol
from ltau_md.core.errorlog import ErrorLog, check_same_dataset
from ltau_md.core.exceptions import ArtifactError, DataError, InvalidParameterError

__all__ = ["ErrorSummary"]


_CHUNK = 1 << 16  # atoms per block when scoring every training atom


@dataclass
class ErrorSummary:
    """Compact per-atom error statistics of M members (see the package docstring).

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
            per_species = species_atol(check_atol(atol), ref.species, sources)
            atol = reference_atol(per_species, ref.species)
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
            tol = (lookup_species(per_species, species)
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
        return lookup_species(self.atol_per_species, species)

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
        if s == 1.0:  # the common case, checked by the comparison itself
            return self.p0 if rows is None else self.p0[:, rows]
        check_positive("scaling factor s", s, DataError)
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
