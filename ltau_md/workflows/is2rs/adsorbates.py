"""OC20's adsorbates (Chanussot et al., ACS Catal. 2021) for the IS2RS generator.

The 86 C/H/N/O adsorbates of OC20 ship inside the ``fairchem-data-oc`` wheel as
``fairchem/data/oc/databases/pkls/adsorbates.pkl``: a dict ``index -> (ase.Atoms, name such as
"*CH2OH", binding-atom indices, reaction)``. Reading it needs only ase and pickle (no
fairchem import). :func:`oc20_adsorbates` reads it from the ``.pkl`` or the downloaded wheel
(``pip download fairchem-data-oc --no-deps``) and returns geometries in the generator's
convention; :func:`oc20_split` holds out C2 chemistry (adsorbates with two or more carbon
atoms) as the out-of-domain adsorbates, so every element is still seen in training.
Unpickling runs code from the file: read only a wheel you downloaded from PyPI.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ltau_md.core.exceptions import DataError
from ltau_md.workflows.is2rs.generate import axis_rotation

__all__ = [
    "ELEMENTS",
    "PKL_IN_WHEEL",
    "oc20_adsorbates",
    "oc20_generator_settings",
    "oc20_split",
    "orient",
]

PKL_IN_WHEEL = "fairchem/data/oc/databases/pkls/adsorbates.pkl"
ELEMENTS = frozenset({"C", "H", "N", "O"})

Geometry = tuple[str, list[tuple[float, float, float]]]


def _rotation_to_z(v: np.ndarray) -> np.ndarray:
    """Rotation matrix taking the unit vector along ``v`` to +z (Rodrigues)."""
    v = v / np.linalg.norm(v)
    z = np.array([0.0, 0.0, 1.0])
    c = float(v @ z)
    if c > 1 - 1e-12:
        return np.eye(3)
    if c < -1 + 1e-12:
        return np.diag([1.0, -1.0, -1.0])
    axis = np.cross(v, z)
    s = float(np.linalg.norm(axis))
    return axis_rotation(axis / s, s, c)


def orient(symbols: list[str], positions: np.ndarray, binding: list[int]) -> Geometry:
    """Generator geometry of one adsorbate (A): binding atoms first, their centre at the
    origin, the centroid of the other atoms along +z (the fragment points away from the
    surface)."""
    pos = np.asarray(positions, float)
    b = [int(i) for i in binding]
    if not b or any(i < 0 or i >= len(symbols) for i in b):
        raise DataError(f"binding indices {b} out of range for {len(symbols)} atoms")
    anchor = pos[b].mean(axis=0)
    rest = [i for i in range(len(symbols)) if i not in b]
    rot = np.eye(3)
    if rest:
        d = pos[rest].mean(axis=0) - anchor
        if np.linalg.norm(d) > 1e-8:
            rot = _rotation_to_z(d)
    local = (pos - anchor) @ rot.T
    order = b + rest
    return ("".join(symbols[i] for i in order),
            [tuple(float(x) for x in local[i]) for i in order])


def _load_pickle(source: Path) -> dict:
    if not source.exists():
        raise DataError(f"{source}: no such file (the fairchem-data-oc wheel or its "
                        "adsorbates.pkl; `pip download fairchem-data-oc --no-deps`)")
    try:
        if source.suffix == ".whl":
            with zipfile.ZipFile(source) as z:
                if PKL_IN_WHEEL not in z.namelist():
                    raise DataError(f"{source}: wheel has no {PKL_IN_WHEEL}")
                raw = z.read(PKL_IN_WHEEL)
        else:
            raw = source.read_bytes()
        return pickle.load(io.BytesIO(raw))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{source}: not a readable adsorbates.pkl or fairchem-data-oc wheel "
                        f"({type(exc).__name__}: {exc})") from exc


def oc20_adsorbates(source: str | Path) -> dict[str, Geometry]:
    """OC20's adsorbates by name (e.g. ``"*CH2OH"``) from ``adsorbates.pkl`` or the
    ``fairchem-data-oc`` wheel, oriented by :func:`orient`. Raises DataError naming the
    problem (missing file, wrong content, elements other than C/H/N/O)."""
    source = Path(source)
    data = _load_pickle(source)
    if not isinstance(data, dict) or not data:
        raise DataError(f"{source}: expected a non-empty dict of adsorbates, got "
                        f"{type(data).__name__}")
    out: dict[str, Geometry] = {}
    for key, entry in data.items():
        try:
            atoms, name, binding = entry[0], str(entry[1]), list(np.ravel(entry[2]))
            symbols = list(atoms.get_chemical_symbols())
            positions = np.asarray(atoms.positions, float)
        except Exception as exc:
            raise DataError(f"{source}: entry {key!r} is not (Atoms, name, binding indices, "
                            f"...): {type(exc).__name__}: {exc}") from exc
        if bad := set(symbols) - ELEMENTS:
            raise DataError(f"{source}: adsorbate {name!r} has elements {sorted(bad)} "
                            "(OC20 adsorbates are C/H/N/O)")
        out[name] = orient(symbols, positions, binding)
    return out


def oc20_split(table: dict[str, Geometry]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(in-domain, out-of-domain) adsorbate names: out of domain = two or more carbon atoms
    (C2 chemistry absent from training); in domain = the rest (C1, N, O, H)."""
    ood = tuple(sorted(n for n, (sym, _) in table.items() if sym.count("C") >= 2))
    idd = tuple(sorted(n for n in table if n not in ood))
    if not idd or not ood:
        raise DataError(f"OC20 adsorbate split needs C1 and C2 adsorbates; got {len(idd)} "
                        f"and {len(ood)}")
    return idd, ood


def oc20_generator_settings(source: str | Path) -> dict:
    """:class:`~ltau_md.workflows.is2rs.generate.GeneratorConfig` settings for OC20's
    adsorbates from ``source`` (:func:`oc20_adsorbates`), split by :func:`oc20_split`:
    ``{"extra_adsorbates", "id_adsorbates", "ood_adsorbates"}``."""
    table = oc20_adsorbates(source)
    id_ads, ood_ads = oc20_split(table)
    return {"extra_adsorbates": table, "id_adsorbates": id_ads, "ood_adsorbates": ood_ads}
