"""A cheap, real FeatureModel for tests and examples: ASE's EMT energies and forces with
radial (Behler G2) symmetry-function descriptors.

It shows that the core (estimator, calculator, observers, IS2RS runner) works with any model
that yields per-atom features, and it lets tests use EMT as exact ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.emt import EMT
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list

from .exceptions import SpeciesError
from .model import ModelOutput, check_species

EMT_ELEMENTS = ("H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")


def radial_descriptors(atoms: Atoms, species: Sequence[int], cutoff: float = 5.0,
                       n_gauss: int = 8) -> np.ndarray:
    """Per-atom G2 features (n, len(species) * (n_gauss + 1)) float32.

    For each centre and each neighbour element: sum_j exp(-eta (r_ij - R_s)^2) f_c(r_ij) over
    ``n_gauss`` shells R_s in (0.5, cutoff) A, plus a one-hot block of the centre's element.
    """
    species = list(species)
    col = {z: c for c, z in enumerate(species)}
    n = len(atoms)
    rs = np.linspace(0.5, cutoff, n_gauss)
    eta = 1.0 / (2.0 * (rs[1] - rs[0]) ** 2)
    out = np.zeros((n, len(species), n_gauss + 1))
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    numbers = atoms.numbers
    if len(i):
        fc = 0.5 * (np.cos(np.pi * d / cutoff) + 1.0)
        g = np.exp(-eta * (d[:, None] - rs[None, :]) ** 2) * fc[:, None]
        cj = np.array([col[z] for z in numbers[j]])
        np.add.at(out, (i, cj, slice(0, n_gauss)), g)
    out[np.arange(n), [col[z] for z in numbers], n_gauss] = 3.0
    return out.reshape(n, -1).astype(np.float32)


class EMTFeatureModel:
    """EMT energy (eV), forces (eV/A), stress (eV/A^3) and radial descriptors, one call.

    ``elements``: the species the "model" knows (EMT supports H, C, N, O, Al, Ni, Cu, Pd, Ag,
    Pt, Au); an atom of another element raises SpeciesError.
    """

    def __init__(self, elements: Sequence[str] = ("H", "C", "N", "O", "Cu", "Pt"),
                 cutoff: float = 5.0, n_gauss: int = 8):
        for e in elements:
            if e not in EMT_ELEMENTS:
                raise SpeciesError(f"EMT does not support element {e}")
        self.species = sorted(atomic_numbers[e] for e in elements)
        self.cutoff = cutoff
        self.n_gauss = n_gauss
        self._emt = EMT()

    def evaluate(self, atoms: Atoms, stress: bool = False) -> ModelOutput:
        check_species(atoms.numbers, self.species, "the EMT feature model")
        a = atoms.copy()
        a.calc = self._emt
        energy = float(a.get_potential_energy())
        forces = a.get_forces()
        st = a.get_stress(voigt=True) if stress else None
        feats = radial_descriptors(atoms, self.species, self.cutoff, self.n_gauss)
        return ModelOutput(energy=energy, forces=forces, stress=st, features=feats)


def rattled_cu_estimator(log_dir, n_frames: int = 12, k: int = 4, n_epochs: int = 4,
                         seed: int = 0):
    """(EMTFeatureModel of Cu, LTAUEstimator) fitted on ``n_frames`` rattled 32-atom Cu cells
    (rattle amplitudes 0.02, 0.07, 0.12 A in turn) with synthetic logged errors proportional
    to the amplitude (eV/A); the error log is written to ``log_dir``. A small, real in-domain
    set-up for tests of the calculator, monitors and commands."""
    from ase.build import bulk

    from .errorlog import ErrorLog
    from .estimator import LTAUEstimator

    model = EMTFeatureModel(elements=("Cu",))
    rng = np.random.default_rng(seed)
    amps = [0.02 + 0.05 * (i % 3) for i in range(n_frames)]
    frames = []
    for amp in amps:
        a = bulk("Cu", cubic=True).repeat(2)
        a.positions += rng.normal(size=a.positions.shape) * amp
        frames.append(a)
    x = np.concatenate([model.evaluate(a).features for a in frames])
    log = ErrorLog.create(log_dir, species=np.full(len(x), 29),
                          frame_offsets=np.arange(n_frames + 1) * 32,
                          ref_force_norm=np.ones(len(x)))
    scale = np.repeat(amps, 32)
    for _ in range(n_epochs):
        log.append(scale * rng.lognormal(0, 0.3, len(x)))
    return model, LTAUEstimator(k=k).fit(x, log)
