"""Validation (scikit-learn's ``utils.validation`` is the model): the fitted-state check other
modules call (:func:`check_is_fitted`, never an estimator's private method) and the input
checks shared by the core modules, each raising an error that names the problem."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ltau_md.core.exceptions import DataError, NotFittedError

__all__ = ["MIN_DISTANCE", "check_frame_offsets", "check_is_fitted", "check_no_overlap",
           "overlapping_atoms"]


def check_is_fitted(estimator: Any, attributes: str | Sequence[str] | None = None) -> None:
    """Raise :class:`~ltau_md.core.exceptions.NotFittedError` unless ``estimator`` is fitted.

    Parameters
    ----------
    estimator
        An estimator object (e.g. :class:`~ltau_md.core.estimator.LTAUEstimator`).
    attributes
        Fitted attributes that must exist and not be None. Default: the estimator's
        ``is_fitted`` property where it has one, else any public attribute ending in ``_``.

    Raises
    ------
    NotFittedError
        Naming the estimator's class and how to fit it.
    """
    name = type(estimator).__name__
    if attributes is not None:
        names = [attributes] if isinstance(attributes, str) else list(attributes)
        fitted = all(getattr(estimator, a, None) is not None for a in names)
    elif hasattr(type(estimator), "is_fitted"):
        fitted = bool(estimator.is_fitted)
    else:
        fitted = any(k.endswith("_") and not k.startswith("_") and v is not None
                     for k, v in vars(estimator).items())
    if not fitted:
        raise NotFittedError(f"this {name} is not fitted: call fit() or load() first")



def check_frame_offsets(frame_offsets: Any, n_atoms: int | None = None, *,
                        min_frames: int = 1) -> np.ndarray:
    """``frame_offsets`` (F+1,) as int64: the first atom of each structure, then the atom
    count. DataError unless it starts at 0, increases strictly, holds at least ``min_frames``
    frames and (if given) ends at ``n_atoms``."""
    off = np.asarray(frame_offsets)
    if off.ndim != 1 or off.size < min_frames + 1 or not np.issubdtype(off.dtype, np.integer):
        raise DataError(f"frame_offsets must be a 1-D integer array of >= {min_frames + 1} "
                        f"entries, got shape {off.shape} dtype {off.dtype}")
    off = off.astype(np.int64)
    if off[0] != 0 or np.any(np.diff(off) <= 0):
        raise DataError("frame_offsets must start at 0 and increase strictly (no empty frame)")
    if n_atoms is not None and off[-1] != n_atoms:
        raise DataError(f"frame_offsets end at {off[-1]}, expected n_atoms = {n_atoms}")
    return off


#: atoms closer than this (A) are treated as overlapping: no force model is defined there
MIN_DISTANCE = 0.1


def overlapping_atoms(atoms: Any, cutoff: float = MIN_DISTANCE) -> tuple[int, int, float] | None:
    """The closest pair (i, j, distance in A) of atoms of ``atoms`` closer than ``cutoff`` A
    (periodic images included), or None."""
    from ase.neighborlist import neighbor_list

    if len(atoms) < 2 and not atoms.pbc.any():
        return None
    if not np.isfinite(atoms.positions).all():
        return None
    i, j, d = neighbor_list("ijd", atoms, float(cutoff), self_interaction=False)
    if d.size == 0:
        return None
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), float(d[k])


def check_no_overlap(atoms: Any, where: str = "the structure") -> None:
    """DataError naming two atoms of ``atoms`` that (nearly) coincide."""
    pair = overlapping_atoms(atoms)
    if pair is not None:
        i, j, d = pair
        raise DataError(f"{where}: atoms {i} and {j} are {d:.3g} A apart (closer than "
                        f"{MIN_DISTANCE} A: overlapping atoms); fix the structure")
