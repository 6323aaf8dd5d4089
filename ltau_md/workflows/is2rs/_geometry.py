"""Geometry of the IS2RS generator: fcc slabs with OC20 tags, adsorbate placement, rotations."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.build import fcc100, fcc110, fcc111
from ase.constraints import FixAtoms
from ase.geometry import get_distances

from ltau_md.core.exceptions import DataError
from ltau_md.workflows.is2rs.reference import DEFAULT_REFERENCE, cached_reference

if TYPE_CHECKING:
    from ltau_md.workflows.is2rs.generate import GeneratorConfig

__all__ = ["FACETS", "adsorbate_fragments", "axis_rotation", "emt_lattice_constant",
           "lattice_constant"]

FACETS: dict[str, Callable[..., Atoms]] = {"fcc111": fcc111, "fcc100": fcc100, "fcc110": fcc110}
"""The slab builders of ``ase.build`` by facet name."""


def fan(n: int, bond: float, polar: float, z0: float = 0.0) -> list[tuple[float, float, float]]:
    """``n`` atoms ``bond`` A from (0, 0, z0), ``polar`` rad from +z, evenly in azimuth.

    Parameters
    ----------
    n
        Number of atoms.
    bond
        Distance from (0, 0, z0) (A).
    polar
        Angle from +z (rad).
    z0
        Height of the centre (A).

    Returns
    -------
    list[tuple[float, float, float]]
        The ``n`` positions (A).
    """
    return [
        (
            bond * np.sin(polar) * np.cos(2 * np.pi * j / n),
            bond * np.sin(polar) * np.sin(2 * np.pi * j / n),
            z0 + bond * np.cos(polar),
        )
        for j in range(n)
    ]


@functools.cache
def lattice_constant(symbol: str, reference: str = DEFAULT_REFERENCE) -> float:
    """fcc lattice constant (A) minimising the reference calculator's energy of ``symbol``.

    Parameters
    ----------
    symbol
        Chemical symbol of a metal the reference knows (e.g. ``"Cu"``).
    reference
        The reference calculator's import path
        (:mod:`ltau_md.workflows.is2rs.reference`), EMT by default.

    Returns
    -------
    float
        The lattice constant (A); cached per symbol and reference.
    """
    from ase.build import bulk
    from scipy.optimize import minimize_scalar

    calc = cached_reference(reference)

    def energy(a: float) -> float:
        at = bulk(symbol, "fcc", a=a)
        at.calc = calc
        calc.reset()
        return float(at.get_potential_energy())

    res = minimize_scalar(energy, bounds=(3.0, 4.8), method="bounded", options={"xatol": 1e-5})
    return float(res.x)


def emt_lattice_constant(symbol: str) -> float:
    """:func:`lattice_constant` of ``symbol`` with ASE's EMT (A)."""
    return lattice_constant(symbol, DEFAULT_REFERENCE)


@dataclass
class Catalyst:
    """A catalyst to cut a slab of: one or two ``elements``, the fraction of ``elements[0]``
    (set to the realised fraction by :func:`build_slab`) and the facet name."""

    elements: tuple[str, ...]
    fraction: float  # fraction of elements[0]
    facet: str

    @property
    def name(self) -> str:
        """E.g. ``"Cu"`` or ``"Au0.50Cu0.50"``."""
        if len(self.elements) == 1:
            return self.elements[0]
        return f"{self.elements[0]}{self.fraction:.2f}{self.elements[1]}{1 - self.fraction:.2f}"


def build_slab(cat: Catalyst, rng: np.random.Generator, cfg: GeneratorConfig) -> Atoms:
    """Slab with OC20 tags (0 fixed, 1 free surface) and FixAtoms on the fixed layers.

    Parameters
    ----------
    cat
        The catalyst; for an alloy its ``fraction`` becomes the realised one.
    rng
        Draws the alloy's atom order.
    cfg
        ``size``, ``layers``, ``free_layers`` and ``vacuum`` (A).

    Returns
    -------
    Atoms
        The slab (lattice constant: Vegard's law over :func:`lattice_constant` of the
        reference, A).
    """
    if cat.facet not in FACETS:
        raise DataError(f"unknown facet {cat.facet!r}; known: {sorted(FACETS)}")
    n_layers = cfg.layers[cat.facet]
    n_free = cfg.free_layers[cat.facet]
    if not 0 < n_free < n_layers:
        raise DataError(f"free_layers[{cat.facet}]={n_free} must be in 1..{n_layers - 1}")
    if len(cat.elements) == 1:
        a = lattice_constant(cat.elements[0], cfg.reference)
    else:
        x = cat.fraction
        a = (x * lattice_constant(cat.elements[0], cfg.reference)
             + (1 - x) * lattice_constant(cat.elements[1], cfg.reference))
    slab = FACETS[cat.facet](
        cat.elements[0], size=(*cfg.size, n_layers), a=a, vacuum=cfg.vacuum
    )
    if len(cat.elements) == 2:
        n = len(slab)
        n_a = int(np.clip(round(cat.fraction * n), 1, n - 1))
        symbols = np.array([cat.elements[1]] * n, dtype=object)
        symbols[rng.permutation(n)[:n_a]] = cat.elements[0]
        slab.set_chemical_symbols(list(symbols))
        cat.fraction = n_a / n
    layer = slab.get_tags()  # ase.build: 1 = top layer ... n_layers = bottom
    tags = np.where(layer <= n_free, 1, 0)
    slab.set_tags(tags)
    slab.set_constraint(FixAtoms(mask=tags == 0))
    return slab


def axis_rotation(u: np.ndarray, sin: float, cos: float) -> np.ndarray:
    """Rotation matrix about the unit vector ``u`` by the angle with this sine and cosine
    (Rodrigues' formula).

    Parameters
    ----------
    u
        Unit vector (3,) of the axis.
    sin, cos
        Sine and cosine of the angle.

    Returns
    -------
    np.ndarray
        The rotation matrix (3, 3).
    """
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.eye(3) + sin * k + (1 - cos) * k @ k


def _rotation(rng: np.random.Generator, max_tilt: float) -> np.ndarray:
    """Random rotation about z followed by a tilt of at most ``max_tilt`` rad.

    Parameters
    ----------
    rng
        Draws the azimuth, the tilt and the tilt axis.
    max_tilt
        Largest tilt (rad).

    Returns
    -------
    np.ndarray
        The rotation matrix (3, 3).
    """
    phi = rng.uniform(0, 2 * np.pi)
    rz = np.array([[np.cos(phi), -np.sin(phi), 0], [np.sin(phi), np.cos(phi), 0], [0, 0, 1]])
    tilt = rng.uniform(0, max_tilt)
    ax = rng.uniform(0, 2 * np.pi)
    u = np.array([np.cos(ax), np.sin(ax), 0.0])
    return axis_rotation(u, np.sin(tilt), np.cos(tilt)) @ rz


def place_adsorbate(
    slab: Atoms, name: str, rng: np.random.Generator, cfg: GeneratorConfig
) -> tuple[Atoms, str]:
    """The adsorbate ``name`` (tag 2) above a random site of ``slab``, raised in 0.2 A steps
    until it clears every slab atom by ``cfg.min_clearance``.

    Parameters
    ----------
    slab
        Slab from :func:`build_slab` (its ``info["adsorbate_info"]`` names the sites).
    name
        Adsorbate of ``cfg.adsorbate_table``.
    rng
        Draws the site, the lateral jitter (A), the height (A) and the rotation.
    cfg
        ``size``, ``lateral_jitter``, ``height_range``, ``max_tilt_deg`` and
        ``min_clearance`` (lengths in A, angle in degrees).

    Returns
    -------
    tuple[Atoms, str]
        The system (FixAtoms on the tag-0 atoms) and the site name.
    """
    symbols, geom = cfg.adsorbate_table[name]
    info = slab.info["adsorbate_info"]
    site = str(rng.choice(sorted(info["sites"])))
    spos = np.asarray(info["sites"][site], float) + rng.integers(0, cfg.size)
    xy = spos @ np.asarray(info["cell"]) + rng.normal(0.0, cfg.lateral_jitter, 2)
    top = slab.positions[slab.get_tags() == 1, 2].max()
    height = rng.uniform(*cfg.height_range)
    rot = _rotation(rng, np.deg2rad(cfg.max_tilt_deg))
    local = np.asarray(geom, float) @ rot.T
    ads = Atoms(symbols, positions=local)
    for _ in range(20):
        ads.positions = local + np.array([xy[0], xy[1], top + height])
        _, d = get_distances(ads.positions, slab.positions, cell=slab.cell, pbc=slab.pbc)
        if d.min() >= cfg.min_clearance:
            break
        height += 0.2
    system = slab.copy()
    system.info.pop("adsorbate_info", None)
    ads.set_tags(2)
    system += ads
    system.set_constraint(FixAtoms(mask=system.get_tags() == 0))
    return system, site


def desorbed(atoms: Atoms, cfg: GeneratorConfig) -> bool:
    """Whether the adsorbate ended farther than ``cfg.desorption_distance`` (A) from every
    slab atom: none of its atoms that close to one (minimum image). As OC20's desorption
    anomaly (fairchem's ``DetectTrajAnomaly``: no adsorbate atom bonded to the slab), an
    upright molecule whose far atoms stand more than that above the surface stays bound."""
    tags = atoms.get_tags()
    if not (tags == 2).any():
        return False
    _, d = get_distances(
        atoms.positions[tags == 2], atoms.positions[tags < 2], cell=atoms.cell, pbc=atoms.pbc
    )
    return bool(d.min() > cfg.desorption_distance)


def adsorbate_fragments(atoms: Atoms, bond_scale: float = 1.25) -> int:
    """Number of connected fragments of the adsorbate (tag-2 atoms), two atoms bonded when
    closer than ``bond_scale`` x the sum of their covalent radii (A).

    Parameters
    ----------
    atoms
        A system with OC20 tags.
    bond_scale
        Bond cut-off in units of the sum of covalent radii.

    Returns
    -------
    int
        Number of fragments (0 without adsorbate atoms).
    """
    from ase.data import covalent_radii
    from scipy.sparse.csgraph import connected_components

    ads = atoms[atoms.get_tags() == 2]
    if len(ads) <= 1:
        return len(ads)
    r = covalent_radii[ads.numbers]
    d = ads.get_all_distances(mic=True)
    n, _ = connected_components(d < bond_scale * (r[:, None] + r[None, :]), directed=False)
    return int(n)
