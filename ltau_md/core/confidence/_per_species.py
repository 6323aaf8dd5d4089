"""Per-species tolerances: the {Z: atol_Z} table (eV/A) of a summary, its per-atom lookup and
the reference (atom-weighted mean) tolerance."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ltau_md.core.confidence._atol import PER_SPECIES
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.exceptions import DataError

__all__: list[str] = []


def lookup_species(table: Mapping[int, float], species: np.ndarray) -> np.ndarray:
    """table[Z_i] for every atom (float64); every Z must be in the table."""
    zs = np.array(sorted(table), dtype=np.int64)
    vals = np.array([table[int(z)] for z in zs], dtype=np.float64)
    return vals[np.searchsorted(zs, species)]


def species_atol(option: str | Mapping[str, float], species: np.ndarray,
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


def reference_atol(table: Mapping[int, float], species: np.ndarray) -> float:
    """Atom-weighted mean of atol_{Z_i} (eV/A): the reference tolerance of a per-species
    summary (for "per_species" it is the global final training force MAE)."""
    zs, counts = np.unique(species, return_counts=True)
    return float(sum(table[int(z)] * int(c) for z, c in zip(zs, counts, strict=True))
                 / counts.sum())
