"""A cheap, real FeatureModel for tests and examples: ASE's EMT energies and forces with
radial (Behler G2) symmetry-function descriptors.

It shows that the core (estimator, calculator, observers, IS2RS runner) works with any model
that yields per-atom features, and it lets tests use EMT as exact ground truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list

from ltau_md.core.exceptions import SpeciesError
from ltau_md.core.model import ModelOutput, check_species

__all__ = [
    "EMTFeatureModel",
    "adsorbate_slab",
    "slab_md_frames",
    "clean_slab",
    "surface_alloy_slab",
    "SlowEMT",
    "StretchedEMT",
    "EMT_ELEMENTS",
    "check_estimator_api",
    "check_feature_model",
    "radial_descriptors",
    "rattled_cu_estimator",
]

EMT_ELEMENTS = ("H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")


class SlowEMT(EMT):
    """ASE's EMT taking ``delay`` seconds more per calculation: an oracle as slow as a DFT
    code relative to the rest, so a test can stop a loop while it labels."""

    delay = 0.5

    def calculate(self, *args: Any, **kwargs: Any) -> None:
        import time

        time.sleep(self.delay)
        super().calculate(*args, **kwargs)


class StretchedEMT(Calculator):
    """A reference that is not EMT, for tests of a configurable reference: EMT evaluated on
    the structure stretched by ``scale``, E(x) = E_EMT(scale x) (eV), F(x) = scale
    F_EMT(scale x) (eV/A), so its lattice constants and minima are EMT's divided by
    ``scale`` and its forces are the exact gradient of its energy."""

    implemented_properties = ["energy", "free_energy", "forces"]
    scale = 1.03

    def calculate(self, atoms: Atoms | None = None, properties=("energy",),
                  system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        a.set_constraint()
        a.set_cell(a.cell * self.scale)
        a.positions = a.positions * self.scale
        a.calc = EMT()
        e = float(a.get_potential_energy())
        self.results = {"energy": e, "free_energy": e, "forces": a.get_forces() * self.scale}


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

    from ltau_md.core.errorlog import ErrorLog
    from ltau_md.core.estimator import LTAUEstimator

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


# --------------------------------------------------------------------------------------------
# API check batteries: run them on a model or estimator you bring (scikit-learn's
# ``utils/estimator_checks.py`` and nequip's ``utils/unittests/model_tests_basic.py`` are the
# models). Each raises AssertionError naming the broken property.


def _probe_structure(species: Sequence[int]) -> Atoms:
    """A small periodic structure of (up to three of) ``species``, rattled off symmetry."""
    from ase.build import bulk

    zs = list(species)[:3] or [29]
    a = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((2, 1, 1))
    a.numbers = np.array([zs[i % len(zs)] for i in range(len(a))])
    a.rattle(0.05, seed=7)
    return a


def check_feature_model(model: Any, atoms: Atoms | None = None, *, rtol: float = 1e-5,
                        atol: float = 1e-6) -> None:
    """Check that ``model`` is a :class:`~ltau_md.core.model.FeatureModel` the core can use.

    One forward pass and a few more: ``species`` is a sorted list of known atomic numbers;
    ``evaluate`` returns a finite float energy (eV), (n, 3) finite forces (eV/A), a (6,)
    Voigt stress (eV/A^3) when asked and None otherwise, and (n, D) float32 finite features
    with D the same for every structure; two calls give identical results (determinism);
    permuting the atoms permutes forces and features and leaves the energy unchanged; a
    rigid translation changes none of them; an unknown element raises
    :class:`~ltau_md.core.exceptions.SpeciesError`.

    Parameters
    ----------
    model
        The model to check.
    atoms
        The structure to evaluate (default: a small rattled periodic cell of up to three of
        ``model.species``).
    rtol, atol
        Tolerances of the invariance comparisons (relative; absolute in the outputs' units).

    Raises
    ------
    AssertionError
        Naming the first property that does not hold.
    """
    from ase.data import chemical_symbols

    species = getattr(model, "species", None)
    assert species is not None and len(species) > 0, "model.species must list atomic numbers"
    zs = [int(z) for z in species]
    assert zs == sorted(set(zs)) and all(0 < z < len(chemical_symbols) for z in zs), (
        f"model.species must be sorted, unique atomic numbers; got {species}")
    atoms = _probe_structure(zs) if atoms is None else atoms
    n = len(atoms)
    out = model.evaluate(atoms.copy())
    assert isinstance(out, ModelOutput), f"evaluate must return ModelOutput, got {type(out)}"
    assert isinstance(out.energy, float) and np.isfinite(out.energy), (
        f"energy must be a finite float (eV), got {out.energy!r}")
    f = np.asarray(out.forces)
    assert f.shape == (n, 3) and np.isfinite(f).all(), (
        f"forces must be finite with shape ({n}, 3), got {f.shape}")
    x = out.features
    assert isinstance(x, np.ndarray) and x.dtype == np.float32, (
        f"features must be a float32 numpy array, got {type(x).__name__} "
        f"{getattr(x, 'dtype', None)}")
    assert x.ndim == 2 and x.shape[0] == n and x.shape[1] > 0 and np.isfinite(x).all(), (
        f"features must be finite with shape ({n}, D), got {x.shape}")
    assert out.stress is None, "stress must be None unless evaluate(stress=True) asks for it"
    if atoms.pbc.all():
        st = model.evaluate(atoms.copy(), stress=True).stress
        assert st is not None and np.shape(st) == (6,) and np.isfinite(st).all(), (
            f"evaluate(stress=True) must give a finite (6,) Voigt stress, got {np.shape(st)}")

    again = model.evaluate(atoms.copy())
    assert again.energy == out.energy and np.array_equal(again.forces, out.forces) and (
        np.array_equal(again.features, out.features)), "two calls differ: not deterministic"

    perm = np.random.default_rng(0).permutation(n)
    p = model.evaluate(atoms[perm])
    np.testing.assert_allclose(p.energy, out.energy, rtol=rtol, atol=atol,
                               err_msg="energy changes when the atoms are permuted")
    np.testing.assert_allclose(p.forces, f[perm], rtol=rtol, atol=atol,
                               err_msg="forces are not permuted with the atoms")
    np.testing.assert_allclose(p.features, x[perm], rtol=rtol, atol=atol,
                               err_msg="features are not permuted with the atoms")

    shifted = atoms.copy()
    shifted.translate([0.37, -0.21, 0.13])
    s = model.evaluate(shifted)
    np.testing.assert_allclose(s.energy, out.energy, rtol=rtol, atol=atol,
                               err_msg="energy changes under a rigid translation")
    np.testing.assert_allclose(s.features, x, rtol=rtol, atol=atol,
                               err_msg="features change under a rigid translation")

    other = next((z for z in range(1, len(chemical_symbols)) if z not in set(zs)), None)
    if other is not None:
        bad = atoms.copy()
        bad.numbers[0] = other
        try:
            model.evaluate(bad)
        except SpeciesError:
            pass
        else:
            raise AssertionError(
                f"an atom of unknown element {chemical_symbols[other]} must raise SpeciesError")


def check_estimator_api(estimator: Any, descriptors: np.ndarray, errors: Any,
                        species: np.ndarray, tmp_dir: str | Any) -> None:
    """Check an unfitted LTAU-style estimator against the fitted-state contract.

    Parameters stay exactly as given through ``fit`` (``get_params`` equal, deep, before and
    after); ``type(est)(**est.get_params())`` rebuilds an equal estimator; before ``fit``
    every public fitted method raises :class:`~ltau_md.core.exceptions.NotFittedError`; no
    attribute ending in ``_`` exists before ``fit``; after ``fit`` + ``save`` + ``load`` the
    predictions are identical.

    Parameters
    ----------
    estimator
        An unfitted estimator (e.g. ``LTAUEstimator(k=3)``); it is fitted here.
    descriptors
        (N, D) float32 training descriptors.
    errors
        What ``fit`` takes besides the descriptors (error logs or an ErrorSummary).
    species
        (N,) atomic numbers of the training atoms; the query uses these atoms.
    tmp_dir
        An empty or missing directory for the save/load round trip.

    Raises
    ------
    AssertionError
        Naming the first property that does not hold.
    """
    import copy
    import json
    from pathlib import Path

    from ltau_md.core.exceptions import NotFittedError

    before = copy.deepcopy(estimator.get_params())
    rebuilt = type(estimator)(**estimator.get_params())
    assert _params_equal(rebuilt.get_params(), before), "get_params round trip changes values"
    fitted_attrs = sorted(a for a in vars(estimator) if a.endswith("_") and not a.startswith("_"))
    assert not fitted_attrs, f"fitted-looking attributes set in __init__: {fitted_attrs}"
    query = np.asarray(descriptors[: min(len(descriptors), 7)])
    for name, call in (("predict", lambda e: e.predict(query, species=species[: len(query)])),
                       ("kneighbors", lambda e: e.kneighbors(query)),
                       ("save", lambda e: e.save(Path(tmp_dir) / "never"))):
        try:
            call(estimator)
        except NotFittedError:
            pass
        else:
            raise AssertionError(f"{name} before fit must raise NotFittedError")
    fitted = estimator.fit(descriptors, errors)
    assert fitted is estimator, "fit must return the estimator itself"
    after = estimator.get_params()
    assert _params_equal(after, before), (
        f"fit changed parameters: before {before}, after {after}")
    pred = estimator.predict(query, species=species[: len(query)])
    path = estimator.save(Path(tmp_dir) / "estimator")
    loaded = type(estimator).load(path)
    as_json = lambda params: json.dumps(params, sort_keys=True, default=str)  # noqa: E731
    assert as_json(loaded.get_params()) == as_json(before), (
        "load does not restore the parameters (as saved in JSON)")
    pred2 = loaded.predict(query, species=species[: len(query)])
    for field_name in ("confidence", "uncertainty", "predicted_error", "novelty"):
        a, b = getattr(pred, field_name, None), getattr(pred2, field_name, None)
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b)), (
            f"prediction field {field_name} differs after save/load")


def _params_equal(a: Any, b: Any) -> bool:
    """Deep equality of parameter values, types included (so {1: 0.5} != {'1': 0.5})."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        keys = {(type(k), k) for k in a}
        return keys == {(type(k), k) for k in b} and all(_params_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_params_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, float) and np.isnan(a):
        return np.isnan(b)
    return a == b


def adsorbate_slab(size: tuple[int, int, int] = (2, 2, 3)) -> Atoms:
    """O on Cu(111) (one O per 2x2 surface cell, fcc sites), OC20 tags: 2 adsorbate, 1 top
    layer, 0 the layers below, fixed by FixAtoms."""
    from ase.build import add_adsorbate, fcc111
    from ase.constraints import FixAtoms

    nx, ny, nz = size
    a = fcc111("Cu", size=(nx, ny, nz), vacuum=6.0)
    add_adsorbate(a, "O", 1.8, "fcc")
    info = a.info["adsorbate_info"]
    site = np.asarray(info["sites"]["fcc"]) @ info["cell"]      # (x, y) of that fcc site
    for i in range(0, nx, 2):
        for j in range(0, ny, 2):
            if (i, j) != (0, 0):
                add_adsorbate(a, "O", 1.8, position=site + i * info["cell"][0]
                              + j * info["cell"][1])
    layer = a.get_tags()                      # ase: 1 = top layer .. nz; adsorbate 0
    tags = np.where(layer == 0, 2, np.where(layer == 1, 1, 0))
    a.set_tags(tags)
    a.set_constraint(FixAtoms(mask=tags == 0))
    return a


def clean_slab(size: tuple[int, int, int] = (2, 2, 3)) -> Atoms:
    """Cu(111); OC20 tags 1 top layer (free), 0 the layers below (fixed by FixAtoms)."""
    from ase.build import fcc111
    from ase.constraints import FixAtoms

    a = fcc111("Cu", size=size, vacuum=6.0)
    top = a.get_tags() == 1                   # ase: 1 = top layer .. nz
    a.set_tags(top.astype(int))
    a.set_constraint(FixAtoms(mask=~top))
    return a


def surface_alloy_slab(size: tuple[int, int, int] = (2, 2, 3)) -> Atoms:
    """Cu(111) with one Au per 2x2 cell of the top layer (an ordered surface alloy; nothing
    diffuses in picoseconds at 300 K, so MD of it samples one stationary distribution, unlike
    O on Cu(111), whose O hops between sites); tags and constraint of :func:`clean_slab`."""
    nx, ny, _ = size
    a = clean_slab(size)
    top = np.flatnonzero(a.get_tags() == 1)
    ij = np.round(np.linalg.solve(a.cell[:2, :2].T, a.positions[top, :2].T).T
                  * (nx, ny)).astype(int)     # the atom's (i, j) in the surface grid
    au = top[(ij[:, 0] % 2 == 0) & (ij[:, 1] % 2 == 0)]
    a.numbers[au] = 79
    return a


def slab_md_frames(seed: int, n: int, *, every: int = 5, temperature_K: float = 300.0,
                   size: tuple[int, int, int] = (2, 2, 3),
                   make: Callable[[tuple[int, int, int]], Atoms] | None = None) -> list[Atoms]:
    """``n`` frames, ``every`` Langevin steps apart (2 fs, EMT), of ``make(size)`` (default
    :func:`adsorbate_slab`)."""
    from ase import units
    from ase.md.langevin import Langevin

    from ltau_md.core.structures import thermalize

    a = (make or adsorbate_slab)(size)
    a.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize(a, temperature_K, rng, stationary=False)  # drift kept: the recorded frames
    dyn = Langevin(a, 2 * units.fs, temperature_K=temperature_K, friction=0.02 / units.fs,
                   fixcm=False, rng=rng, logfile=None)
    out = []
    for _ in range(n):
        dyn.run(every)
        f = a.copy()
        f.calc = None
        out.append(f)
    return out
