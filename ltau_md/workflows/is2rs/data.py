"""Reading IS2RS systems (pairs of initial and reference-relaxed structures).

Input contract (the generator writes the first form; real OC20 structures converted to ASE
files fit any of them):

* a directory holding ``initial.<ext>`` and ``relaxed.<ext>`` (``ext`` one of extxyz, xyz,
  traj, db, json) with the same systems in the same order, or matched by ``atoms.info["sid"]``
  when both carry it; the split is ``info["split"]`` or else the directory name;
* a directory of such directories, one per split (e.g. the generator's output);
* a single extxyz file whose frames are the initial structures and carry the relaxed
  positions as the per-atom array ``pos_relaxed`` (OC20's LMDB field name).

Every structure needs OC20 tags (0 fixed subsurface, 1 surface, 2 adsorbate). When a structure
has no :class:`~ase.constraints.FixAtoms`, one is added on the tag-0 atoms.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.io import read

from ltau_md.core.exceptions import DataError
from ltau_md.core.structures import free_atoms

__all__ = [
    "EXTENSIONS",
    "System",
    "fixed_mask",
    "load_systems",
    "prepare_structure",
    "restore_names",
]

EXTENSIONS: tuple[str, ...] = ("extxyz", "xyz", "traj", "db", "json")


@dataclass
class System:
    """One IS2RS system: the initial structure and the reference-relaxed one (same atoms)."""

    sid: str
    split: str
    initial: Atoms
    relaxed: Atoms
    info: dict = field(default_factory=dict)

    def input_hash(self) -> str:
        """Hash of numbers, tags, cell, pbc, fixed mask, initial and relaxed positions
        (rounded to 1e-6 A): identifies the task for resuming a campaign."""
        h = hashlib.sha256()
        a, r = self.initial, self.relaxed
        h.update(self.sid.encode())
        h.update(np.ascontiguousarray(a.numbers, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(a.get_tags(), dtype=np.int64).tobytes())
        h.update(np.asarray(a.pbc, dtype=np.int8).tobytes())
        h.update(fixed_mask(a).astype(np.int8).tobytes())
        for arr in (a.cell.array, a.positions, r.positions):
            h.update(np.round(np.asarray(arr, dtype=float) * 1e6).astype(np.int64).tobytes())
        return h.hexdigest()[:24]


def fixed_mask(atoms: Atoms) -> np.ndarray:
    """Atoms held by FixAtoms constraints (the complement of
    :func:`ltau_md.core.structures.free_atoms`)."""
    return ~free_atoms(atoms)


def prepare_structure(atoms: Atoms, where: str) -> Atoms:
    """Check OC20 tags and make sure the tag-0 atoms are fixed (adds FixAtoms if absent)."""
    tags = atoms.get_tags()
    if not np.isin(tags, (0, 1, 2)).all():
        bad = sorted(set(tags.tolist()) - {0, 1, 2})
        raise DataError(f"{where}: tags {bad} are not OC20 tags (0 fixed, 1 surface, 2 adsorbate)")
    if not (tags == 2).any() or not (tags > 0).any():
        raise DataError(
            f"{where}: {atoms.get_chemical_formula()} has no adsorbate (tag 2) atoms; IS2RS "
            "structures need OC20 tags (0 fixed subsurface, 1 surface, 2 adsorbate)"
        )
    if not any(isinstance(c, FixAtoms) for c in atoms.constraints):
        atoms.set_constraint([*atoms.constraints, FixAtoms(mask=tags == 0)])
    atoms.calc = None
    return atoms


def _find(directory: Path, stem: str) -> Path | None:
    hits = [directory / f"{stem}.{e}" for e in EXTENSIONS if (directory / f"{stem}.{e}").exists()]
    if len(hits) > 1:
        raise DataError(f"{directory} has several {stem} files {[h.name for h in hits]}; keep one")
    return hits[0] if hits else None


#: ``info`` fields that hold names (adsorbate, site, element symbols): extxyz reads the bare
#: strings "T" and "F" as booleans (fluorine would become False), so they are restored
NAME_INFO_KEYS: tuple[str, ...] = ("adsorbate", "site", "metal", "elements", "catalyst")


def restore_names(atoms: Atoms) -> Atoms:
    """``atoms`` with the :data:`NAME_INFO_KEYS` fields that extxyz turned into booleans
    back as the strings "T" / "F" (in place)."""
    for key in NAME_INFO_KEYS:
        if isinstance(atoms.info.get(key), (bool, np.bool_)):
            atoms.info[key] = "T" if atoms.info[key] else "F"
    return atoms


def _read_all(path: Path) -> list[Atoms]:
    try:
        images = read(path, index=":")
    except Exception as exc:  # ase raises many types for unreadable files
        raise DataError(f"cannot read structures from {path}: {exc}") from exc
    return [restore_names(a) for a in (images if isinstance(images, list) else [images])]


def _load_pair_dir(directory: Path) -> list[System]:
    ini_path, rel_path = _find(directory, "initial"), _find(directory, "relaxed")
    if ini_path is None or rel_path is None:
        raise DataError(
            f"{directory} needs both initial.<ext> and relaxed.<ext> (ext in {EXTENSIONS})"
        )
    initials, relaxeds = _read_all(ini_path), _read_all(rel_path)
    have_sid = all("sid" in a.info for a in initials + relaxeds)
    if have_sid:
        by_sid = {str(a.info["sid"]): a for a in relaxeds}
        if len(by_sid) != len(relaxeds):
            raise DataError(f"{rel_path} has duplicate sids")
        missing = [str(a.info["sid"]) for a in initials if str(a.info["sid"]) not in by_sid]
        if missing:
            raise DataError(f"{rel_path} lacks relaxed structures for sids {missing[:5]}")
        pairs = [(a, by_sid[str(a.info["sid"])]) for a in initials]
    else:
        if len(initials) != len(relaxeds):
            raise DataError(
                f"{ini_path} has {len(initials)} structures but {rel_path} has {len(relaxeds)}"
            )
        pairs = list(zip(initials, relaxeds, strict=True))
    systems = []
    for i, (ini, rel) in enumerate(pairs):
        split = str(ini.info.get("split", directory.name))
        sid = str(ini.info.get("sid", f"{split}-{i:05d}"))
        where = f"{ini_path} structure {i} ({sid})"
        if len(ini) != len(rel) or (ini.numbers != rel.numbers).any():
            raise DataError(f"{where}: initial and relaxed structures have different atoms")
        if not rel.get_tags().any():
            rel.set_tags(ini.get_tags())
        if (rel.get_tags() != ini.get_tags()).any():
            raise DataError(f"{where}: initial and relaxed structures have different tags")
        prepare_structure(ini, where)
        prepare_structure(rel, where)
        systems.append(System(sid, split, ini, rel, dict(ini.info)))
    return systems


def _load_single_file(path: Path) -> list[System]:
    systems = []
    for i, ini in enumerate(_read_all(path)):
        if "pos_relaxed" not in ini.arrays:
            raise DataError(
                f"{path} structure {i} has no per-atom array 'pos_relaxed'; give a directory "
                "with initial.<ext> and relaxed.<ext> instead"
            )
        split = str(ini.info.get("split", path.stem))
        sid = str(ini.info.get("sid", f"{split}-{i:05d}"))
        where = f"{path} structure {i} ({sid})"
        rel = ini.copy()
        rel.positions = np.asarray(ini.arrays["pos_relaxed"], dtype=float)
        for a in (ini, rel):
            a.arrays.pop("pos_relaxed", None)
        prepare_structure(ini, where)
        prepare_structure(rel, where)
        systems.append(System(sid, split, ini, rel, dict(ini.info)))
    return systems


def load_systems(path: str | Path, splits: list[str] | None = None) -> list[System]:
    """Read IS2RS systems from ``path`` (see the module docstring for the accepted forms).

    ``splits`` keeps only those splits. Sids must be unique.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"IS2RS systems path {path} does not exist")
    if path.is_file():
        systems = _load_single_file(path)
    elif _find(path, "initial") is not None:
        systems = _load_pair_dir(path)
    else:
        subdirs = sorted(d for d in path.iterdir() if d.is_dir() and _find(d, "initial"))
        if not subdirs:
            raise DataError(
                f"{path} holds neither initial.<ext>/relaxed.<ext> nor split directories "
                "containing them"
            )
        systems = [s for d in subdirs for s in _load_pair_dir(d)]
    if splits is not None:
        known = {s.split for s in systems}
        unknown = sorted(set(splits) - known)
        if unknown:
            raise DataError(f"splits {unknown} not in {path} (has {sorted(known)})")
        systems = [s for s in systems if s.split in splits]
    seen: set[str] = set()
    for s in systems:
        if s.sid in seen:
            raise DataError(f"duplicate system id {s.sid!r} in {path}")
        seen.add(s.sid)
    return systems
