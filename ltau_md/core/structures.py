"""Input structures: reading ASE structures with one clear error per problem, their reference
forces, and the atoms free to move (not held by :class:`~ase.constraints.FixAtoms`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ltau_md.core.exceptions import DataError

__all__ = ["free_atoms", "read_structures", "reference_forces", "thermalize"]


def read_structures(data: str | os.PathLike | Any) -> list:
    """A list of ase.Atoms from a list of them, or from any ASE-readable file (all frames, or
    those of ASE's index syntax: ``file.xyz@:100``, ``file.xyz@-1``, ``file.xyz@::10``).

    DataError, naming the file (or item) and the problem, for: a missing file, a directory that
    is not an ASE BundleTrajectory, a file ASE cannot read or that holds no structures (e.g. a
    text file), an index that selects nothing or is out of range, an item that is not an
    Atoms, and a structure without atoms."""
    from ase import Atoms

    if isinstance(data, (str, os.PathLike)):
        import ase.io
        from ase.io.bundletrajectory import BundleTrajectory

        p, index = _split_index(data)
        if not p.exists():
            raise DataError(f"structure file {p} does not exist")
        if p.is_dir() and not BundleTrajectory.is_bundle(str(p)):
            raise DataError(f"structure file {p} is a directory; pass a structure file "
                            "(e.g. extxyz, traj)")
        if p.is_file() and p.stat().st_size == 0:
            raise DataError(f"structure file {p} is empty")
        try:
            out = ase.io.read(p, index=index, do_not_split_by_at_sign=True)
        except PermissionError:
            raise
        except (IndexError, StopIteration) as exc:  # extxyz: StopIteration past the end
            if index == ":":
                raise DataError(f"cannot read structures from {p}: {exc!r}") from exc
            raise DataError(f"{data}: index {index!r} is out of range of the frames of "
                            f"{p}") from exc
        except Exception as exc:  # ASE raises many kinds for an unreadable or empty file
            raise DataError(f"cannot read structures from {p}: "
                            f"{str(exc) or type(exc).__name__}") from exc
        out = list(out) if isinstance(out, list) else [out]
        if not out:
            what = f"selects no frames of {p}" if index != ":" else (
                "holds no structures (is it an ASE-readable structure file, e.g. extxyz or "
                "traj?)")
            raise DataError(f"{data} {what}")
        where = f" of {data}"
    else:
        out = list(data)
        where = ""
    for i, a in enumerate(out):
        if not isinstance(a, Atoms):
            raise DataError(f"item {i} is a {type(a).__name__}, expected ase.Atoms")
        if len(a) == 0:
            raise DataError(f"structure {i}{where} has no atoms")
    return out


def _split_index(data: str | os.PathLike) -> tuple[Path, Any]:
    """``(file, index)`` of ``file@index`` (ASE's syntax; index ":" when none). A path that
    exists as given is a file, whatever characters it holds."""
    p = Path(data)
    if p.exists() or "@" not in p.name:
        return p, ":"
    from ase.io.formats import parse_filename

    name, index = parse_filename(os.fspath(data))
    if index is None:
        return p, ":"
    if isinstance(index, str):
        raise DataError(f"{data}: {index!r} is not a frame index (ASE's syntax: FILE@N, "
                        "FILE@START:STOP:STEP)")
    return Path(name), index


def reference_forces(atoms: Any, index: int = 0, purpose: str = "this") -> np.ndarray:
    """Reference forces (n, 3) eV/A of a labelled structure: its calculator's results (e.g.
    extxyz ``forces`` read back into a SinglePointCalculator), else ``arrays["forces"]``;
    DataError naming structure ``index`` and the ``purpose`` if it has none."""
    res = getattr(getattr(atoms, "calc", None), "results", None) or {}
    if "forces" in res:
        return np.asarray(res["forces"], dtype=np.float64)
    if "forces" in getattr(atoms, "arrays", {}):
        return np.asarray(atoms.arrays["forces"], dtype=np.float64)
    raise DataError(f"structure {index} has no reference forces (needed for {purpose})")


def free_atoms(atoms: Any) -> np.ndarray:
    """(n,) bool: the atoms of ``atoms`` not held by a :class:`~ase.constraints.FixAtoms`
    constraint (the one definition of the free-atom mask: the monitor's aggregates, alarm
    statistics, IS2RS)."""
    from ase.constraints import FixAtoms

    free = np.ones(len(atoms), dtype=bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            free[c.get_indices()] = False
    return free


def thermalize(atoms: Any, temperature_K: float, rng: np.random.Generator, *,
               stationary: bool = True) -> None:
    """Draw ``atoms``' momenta from the Maxwell-Boltzmann distribution at ``temperature_K``
    (K) with ``rng``, then, if ``stationary``, remove the centre-of-mass drift (not for a
    single atom, whose only motion is the drift: ASE's ``Stationary`` would rescale its zero
    kinetic energy to NaN)."""
    from ase.md import velocitydistribution as vd

    draw = getattr(vd, "thermalize_momenta", None)  # ASE >= 3.26; the older name is deprecated
    if draw is not None:
        draw(atoms, temperature_K, rng=rng)
    else:  # pragma: no cover
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    if stationary and len(atoms) > 1:
        vd.Stationary(atoms)
