"""Input checks shared by the core modules; each raises an error that names the problem."""

from __future__ import annotations

from typing import Any

import numpy as np

from .exceptions import DataError


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
