"""Validation (scikit-learn's ``utils.validation`` is the model): the fitted-state check other
modules call (:func:`check_is_fitted`, never an estimator's private method) and the input
checks shared by the core modules, each raising an error that names the problem."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ltau_md.core.exceptions import DataError, NotFittedError

__all__ = ["MAX_PERIODIC_LENGTH", "MIN_DISTANCE", "check_frame_offsets", "check_is_fitted",
           "check_no_overlap", "check_structure", "json_form", "overlapping_atoms",
           "with_defaults"]


def json_form(x: Any) -> Any:
    """``x`` as it reads back from JSON: tuples as lists, paths as strings (recursively)."""
    if isinstance(x, dict):
        return {k: json_form(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_form(v) for v in x]
    return str(x) if isinstance(x, Path) else x


def with_defaults(stored: dict[str, Any], cls: type,
                  sections: Mapping[str, type] | None = None) -> dict[str, Any]:
    """``stored`` settings of the dataclass ``cls`` (written as JSON by an earlier version)
    with every field they lack at its default (:func:`json_form`), so settings saved before a
    field existed compare equal to the same settings now.

    Parameters
    ----------
    stored
        The stored settings, e.g. ``json.load`` of ``dataclasses.asdict(settings)``.
    cls
        Their dataclass.
    sections
        Fields that hold nested settings dataclasses (name -> class), filled likewise.

    Returns
    -------
    dict[str, Any]
        A new dict; ``stored`` is unchanged.
    """
    sections = dict(sections or {})
    out = dict(stored)
    for f in dataclasses.fields(cls):
        if f.name in sections and isinstance(out.get(f.name), dict):
            out[f.name] = with_defaults(out[f.name], sections[f.name], sections)
        elif f.name not in out:
            if f.default is not dataclasses.MISSING:
                out[f.name] = json_form(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
                out[f.name] = json_form(dataclasses.asdict(value) if f.name in sections
                                        else value)
    return out


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


#: longest periodic cell vector accepted (A): a neighbour search over a periodic cell grows
#: as (length / cutoff)^3 (a 4000 A cell: 3.5 s and 3 GB per step for 2 atoms), and a cell
#: this long is almost always a unit slip or vacuum that should be non-periodic
MAX_PERIODIC_LENGTH = 1000.0


def check_structure(atoms: Any, where: str = "the structure") -> None:
    """DataError naming the first problem that makes ``atoms`` unusable for a force model:
    a non-finite position (naming the atom), a non-finite or over-long periodic cell
    (:data:`MAX_PERIODIC_LENGTH`), or two overlapping atoms (:func:`check_no_overlap`)."""
    pos = np.asarray(atoms.positions, dtype=float)
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if bad.size:
        i = int(bad[0])
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        raise DataError(f"{where}: atom {i} ({atoms.get_chemical_symbols()[i]}) has a "
                        f"non-finite position {tuple(float(x) for x in pos[i])}{more}")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any():
        cell = np.asarray(atoms.cell.array, dtype=float)
        if not np.isfinite(cell).all():
            raise DataError(f"{where}: the cell is not finite ({cell.tolist()})")
        lengths = np.linalg.norm(cell, axis=1)
        for axis, (periodic, length) in enumerate(zip(pbc, lengths, strict=True)):
            name = "abc"[axis]
            if periodic and length == 0:
                raise DataError(f"{where}: periodic along {name} but the cell vector {name} "
                                "is zero; give a cell or set pbc False along it")
            if periodic and length > MAX_PERIODIC_LENGTH:
                raise DataError(
                    f"{where}: periodic cell vector {name} is {length:.4g} A long (over "
                    f"{MAX_PERIODIC_LENGTH:g} A: the neighbour search would take minutes and "
                    "GBs of memory per step); is the cell in A? For vacuum, set pbc False "
                    "along it")
    check_no_overlap(atoms, where)
