"""Atom selections of a frame statistic: a boolean mask, an index array or ``"tags=T[,T...]"``
(OC20 tags)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ltau_md.core.exceptions import DataError, InvalidParameterError

__all__ = ["parse_selection", "selection_mask"]


def parse_selection(select: str) -> tuple[str, tuple[int, ...]]:
    """``"tags=2"`` or ``"tags=1,2"`` -> ("tags", (1, 2)) (sorted, unique): OC20 tags, 0 fixed
    subsurface, 1 surface, 2 adsorbate. InvalidParameterError for anything else."""
    name, sep, rest = str(select).partition("=")
    try:
        vals = tuple(sorted({int(t) for t in rest.split(",")})) if sep else ()
    except ValueError:
        vals = ()
    if name.strip() != "tags" or not vals:
        raise InvalidParameterError(
            f"select must be a boolean mask, an index array or 'tags=T[,T...]' (e.g. 'tags=2' "
            f"for OC20 adsorbate atoms), got {select!r}")
    return "tags", vals


def selection_mask(select: Any, n_atoms: int, tags: Any = None) -> np.ndarray | None:
    """The atoms a statistic is taken over, as a boolean mask (n_atoms,), or None for all.

    ``select``: None (all atoms), a boolean mask (n_atoms,), an integer index array, or a
    string ``"tags=2"`` / ``"tags=1,2"`` resolved with ``tags`` (n_atoms,) integer tags (e.g.
    ``atoms.get_tags()``; resolved again at every call, so it follows the structure). One rule
    for the observers (per step) and for fitting in-domain alarm statistics."""
    if select is None:
        return None
    if isinstance(select, str):
        _, vals = parse_selection(select)
        if tags is None:
            raise DataError(f"select={select!r} needs the atoms' tags")
        t = np.asarray(tags)
        if t.shape != (n_atoms,):
            raise DataError(f"tags have shape {t.shape}, expected ({n_atoms},)")
        return np.isin(t, vals)
    sel = np.asarray(select)
    if sel.dtype == bool:
        if sel.shape != (n_atoms,):
            raise DataError(f"a boolean select mask must have shape ({n_atoms},), got "
                            f"{sel.shape}")
        return sel
    if sel.ndim != 1 or (sel.size and not np.issubdtype(sel.dtype, np.integer)):
        raise DataError(f"select must be a boolean mask, integer indices or 'tags=...', got "
                        f"an array of shape {sel.shape} dtype {sel.dtype}")
    sel = sel.astype(np.int64)
    if sel.size and (sel.min() < -n_atoms or sel.max() >= n_atoms):
        raise DataError(f"select indices out of range for {n_atoms} atoms")
    mask = np.zeros(n_atoms, dtype=bool)
    mask[sel] = True
    return mask
