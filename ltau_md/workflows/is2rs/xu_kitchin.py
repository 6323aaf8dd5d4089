"""A real-DFT IS2RS split: the Xu & Kitchin (2014) DFT-PBE minima of atomic adsorbates on
2x2x4 fcc(111) slabs.

Xu, Z. & Kitchin, J. R. Probing the coverage dependence of site and adsorbate configurational
correlations on (111) surfaces of late transition metals. J. Phys. Chem. C 118, 25597-25602
(2014). The data are the two files ``structures.json`` (DFT-relaxed geometries) and
``energies.json`` (DFT adsorption energies per adsorbate atom, eV) that fairchem's docs ship
(``docs/catalysts/examples_tutorials/``, MIT); give their folder. They are not copied into
ltau-md.

Both files are nested as ``metal -> adsorbate -> site -> coverage``: metals Pt, Ag, Ir, Au,
Pd, Rh, Cu; adsorbates C, F, H, Cl, O, N, S, Br; sites fcc, hcp, bridge, ontop; coverages
0.25, 0.5, 0.75, 1.0 ML and 0.0 (the clean slab).

What the split measures: a model relaxed from a displaced start is scored against the DFT
minimum, so its RMSD is the model's error plus the error of whatever reference the model
was trained on, against real DFT; with an EMT or universal-potential reference the two
cannot be told apart here (``benchmarks/is2rs_reference_dft.py`` measures the reference's
own share).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from ltau_md.core.exceptions import DataError

__all__ = ["COVERAGES", "SITES", "displaced_initial", "read_xu_kitchin", "write_split"]

#: adsorption sites of the data set (the hollow ones: fcc, hcp)
SITES = ("fcc", "hcp", "bridge", "ontop")
#: coverages with an adsorbate (ML); "0.0" is the clean slab
COVERAGES = ("0.25", "0.5", "0.75", "1.0")
#: the split name of these systems in an IS2RS benchmark folder
SPLIT = "val_dft"
#: OC20-style tags: the two bottom metal layers fixed (0), the two top free (1)
FIXED_LAYERS = 2


def _tags(atoms: Atoms, metal: str) -> np.ndarray:
    """OC20 tags by layer: adsorbate atoms 2, the top metal layers 1, the bottom
    :data:`FIXED_LAYERS` metal layers 0 (layers: metal z rounded to 0.5 A)."""
    is_metal = np.array(atoms.get_chemical_symbols()) == metal
    z = atoms.positions[:, 2]
    layers = np.unique(np.round(z[is_metal] * 2) / 2)
    if layers.size <= FIXED_LAYERS:
        raise DataError(f"{atoms.get_chemical_formula()}: {layers.size} metal layers, need more "
                        f"than {FIXED_LAYERS}")
    cut = layers[FIXED_LAYERS - 1] + 0.25
    tags = np.where(is_metal, np.where(z <= cut, 0, 1), 2)
    return tags


def read_xu_kitchin(folder: str | os.PathLike, *, coverages: tuple[str, ...] = COVERAGES,
                    metals: tuple[str, ...] | None = None,
                    adsorbates: tuple[str, ...] | None = None) -> list[Atoms]:
    """The DFT-relaxed structures of ``folder``'s ``structures.json`` with OC20 tags and
    FixAtoms on the tag-0 atoms; ``info``: sid, metal, adsorbate, site, coverage (ML, str),
    n_adsorbate, dft_adsorption_energy (eV per adsorbate atom; NaN where missing) and split.
    ``coverages`` may include "0.0" (the clean slabs, one per metal, adsorbate None).
    DataError naming the file when it is missing or not of this layout."""
    folder = Path(folder)
    paths = {name: folder / f"{name}.json" for name in ("structures", "energies")}
    for p in paths.values():
        if not p.is_file():
            raise DataError(f"{p} does not exist: give the folder holding the Xu-Kitchin "
                            "structures.json and energies.json (fairchem docs data)")
    try:
        structures = json.loads(paths["structures"].read_text())
        energies = json.loads(paths["energies"].read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{folder}: not valid JSON ({exc})") from exc
    out, clean_seen = [], set()
    try:
        for metal in sorted(structures):
            if metals is not None and metal not in metals:
                continue
            for ads in sorted(structures[metal]):
                if adsorbates is not None and ads not in adsorbates:
                    continue
                for site in SITES:
                    for cov in coverages:
                        entry = structures[metal][ads].get(site, {}).get(cov)
                        if entry is None or (cov == "0.0" and metal in clean_seen):
                            continue
                        a = Atoms(entry["symbols"], positions=entry["pos"], cell=entry["cell"],
                                  pbc=True)
                        clean = cov == "0.0"
                        if clean:
                            clean_seen.add(metal)
                        e = energies.get(metal, {}).get(ads, {}).get(site, {}).get(cov)
                        tags = _tags(a, metal)
                        a.set_tags(tags)
                        a.set_constraint(FixAtoms(mask=tags == 0))
                        a.info = {"sid": f"{metal}-clean" if clean else
                                  f"{metal}-{ads}-{site}-{cov}",
                                  "metal": metal, "adsorbate": None if clean else ads,
                                  "site": None if clean else site, "coverage": cov,
                                  "n_adsorbate": int((tags == 2).sum()),
                                  "dft_adsorption_energy": float("nan") if e is None or clean
                                  else float(e), "split": SPLIT}
                        out.append(a)
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{paths['structures']}: not the Xu-Kitchin layout metal -> adsorbate "
                        f"-> site -> coverage -> {{symbols, cell, pos}} ({exc!r})") from exc
    return out


def displaced_initial(relaxed: Atoms, rng: np.random.Generator, lateral: tuple[float, float]
                      = (0.5, 1.0), lift: tuple[float, float] = (0.2, 0.6)) -> Atoms:
    """An IS2RS initial structure from a DFT minimum, as OC20's initial placements start
    away from the minimum: the adsorbate moved rigidly by ``lateral`` (A, uniform length,
    random direction in the surface plane) and raised by ``lift`` (A); the slab as relaxed."""
    a = relaxed.copy()
    ads = a.get_tags() == 2
    phi = rng.uniform(0, 2 * np.pi)
    shift = np.array([np.cos(phi), np.sin(phi), 0.0]) * rng.uniform(*lateral)
    shift[2] = rng.uniform(*lift)
    pos = a.positions
    pos[ads] += shift
    a.positions = pos
    return a


def write_split(folder: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0,
                coverages: tuple[str, ...] = ("0.25",), metals: tuple[str, ...] | None = None,
                adsorbates: tuple[str, ...] | None = None) -> int:
    """Write the real-DFT split ``out/val_dft/{initial,relaxed}.extxyz`` (readable by
    :func:`~ltau_md.workflows.is2rs.data.load_systems`; relaxed = the DFT minimum, initial =
    :func:`displaced_initial` with ``numpy.random.default_rng([seed, i])``); ``out`` must not
    exist (it is written whole or not at all). Returns the number of systems."""
    from ase.io import write

    from ltau_md.core.files import atomic_dir

    systems = read_xu_kitchin(folder, coverages=coverages, metals=metals,
                              adsorbates=adsorbates)
    systems = [a for a in systems if a.info["adsorbate"] is not None]
    if not systems:
        raise DataError(f"no Xu-Kitchin system in {folder} for coverages {coverages}, metals "
                        f"{metals}, adsorbates {adsorbates}")
    initial = [displaced_initial(a, np.random.default_rng([seed, i]))
               for i, a in enumerate(systems)]
    with atomic_dir(Path(out), "ltau-md/is2rs-dft-split") as tmp:
        d = tmp / SPLIT
        d.mkdir()
        write(d / "initial.extxyz", initial, format="extxyz")
        write(d / "relaxed.extxyz", systems, format="extxyz")
    return len(systems)
