"""OC20-style IS2RS benchmark generator with a reference calculator as "DFT" (ASE's EMT by
default, or any ASE calculator by import path, e.g. a universal potential).

Each system is an adsorbate on a small fcc slab (pure metal or random binary alloy, facet
fcc111 / fcc100 / fcc110) following the OC20 conventions (Chanussot et al., ACS Catal. 2021):
tags 0 = fixed subsurface ("bulk") atoms, 1 = free surface atoms, 2 = adsorbate atoms, and a
:class:`~ase.constraints.FixAtoms` on the tag-0 atoms, lattice constants from the reference.
The reference relaxation (``reference`` + ``ref_optimizer``, BFGS by default, ``fmax`` 0.05
eV/A, at most ``ref_steps`` steps) gives the relaxed target; training frames are sampled
along the reference trajectories, as in OC20's S2EF task, and so carry the reference's
energies and forces.

Splits mirror OC20: ``train``, ``val_id``, ``val_ood_ads`` (adsorbates never seen in
training), ``val_ood_cat`` (catalysts never seen: held-out alloy pairs cut as a held-out
facet, by default the open fcc110 surface; every element still appears in training so a
model's species list covers them) and ``val_ood_both``. Held-out alloy pairs alone were
measured not to be out of domain (same force error as ``val_id``), hence the facet.

Everything is deterministic from the seed: system ``i`` of split ``k`` draws from
``numpy.random.default_rng([seed, k, i])``, so adding systems never changes earlier ones.

Every finished system is cached (``CACHE/<key>/<split>-<index>.extxyz``, written atomically;
the key hashes the seed and the whole config, reference included), so a killed or timed-out
generation continues where it stopped and a rerun with the same seed and config reuses the
systems it has, with byte-identical output.

Output layout (written to a temporary directory and renamed into place)::

    OUT/
      manifest.json                 seed, config, per-split counts, file hashes
      <split>/initial.extxyz        initial structures (tags, FixAtoms, info: sid, split, ...)
      <split>/relaxed.extxyz        reference-relaxed structures, its energy (eV)/forces (eV/A)
      <split>/frames.extxyz         frames sampled along the reference trajectories (S2EF-like)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.io import write

from ltau_md.core._param_validation import Interval, Satisfies, StrOptions, validate_params
from ltau_md.core.exceptions import DataError
from ltau_md.core.files import atomic_dir, sha256_file
from ltau_md.workflows.is2rs._geometry import (
    FACETS,
    Catalyst,
    adsorbate_fragments,
    axis_rotation,
    build_slab,
    desorbed,
    emt_lattice_constant,
    fan,
    lattice_constant,
    place_adsorbate,
)
from ltau_md.workflows.is2rs.reference import DEFAULT_REFERENCE, cached_reference, check_reference
from ltau_md.workflows.simulate import DEFAULT_FMAX, OPTIMIZERS

# the public module of the generator: the geometry helpers (slabs, adsorbate placement,
# rotations) are defined in ._geometry and imported from here
__all__ = [
    "ADSORBATES",
    "FACETS",
    "FCC_METALS",
    "FORMAT",
    "GeneratorConfig",
    "ID_ADSORBATES",
    "METALS",
    "OOD_ADSORBATES",
    "OOD_PAIRS",
    "SPLITS",
    "VERSION",
    "adsorbate_fragments",
    "axis_rotation",
    "emt_lattice_constant",
    "generate_benchmark",
    "lattice_constant",
    "generate_system",
]

FORMAT = "ltau-md/is2rs-benchmark"
VERSION = 3
"""2: ``ood_facets`` (fcc110 held out of train / val_id by default); systems whose adsorbate
dissociates in the reference relaxation are resampled (``reject_dissociated``). 3: the
reference calculator and its optimizer are part of the config (EMT + BFGS by default, the
same systems as version 2); the manifest counts the reference's attempts and steps."""

SPLITS: tuple[str, ...] = ("train", "val_id", "val_ood_ads", "val_ood_cat", "val_ood_both")
METALS: tuple[str, ...] = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al")
"""The fcc metals EMT treats (the default catalysts)."""
FCC_METALS: tuple[str, ...] = (*METALS, "Ir", "Rh")
"""Every fcc metal a reference other than EMT may use (Ir and Rh: the Xu-Kitchin real-DFT
split's other metals)."""

_T = 109.47 * np.pi / 180.0  # tetrahedral angle


# Adsorbate geometries (A): the binding atom first, at the origin; the fragment points to +z.
ADSORBATES: dict[str, tuple[str, list[tuple[float, float, float]]]] = {
    "H": ("H", [(0, 0, 0)]),
    "O": ("O", [(0, 0, 0)]),
    "N": ("N", [(0, 0, 0)]),
    "C": ("C", [(0, 0, 0)]),
    # the Xu-Kitchin split's other atomic adsorbates (not for EMT)
    "S": ("S", [(0, 0, 0)]),
    "F": ("F", [(0, 0, 0)]),
    "Cl": ("Cl", [(0, 0, 0)]),
    "Br": ("Br", [(0, 0, 0)]),
    "OH": ("OH", [(0, 0, 0), (0, 0, 0.97)]),
    "CO": ("CO", [(0, 0, 0), (0, 0, 1.15)]),
    "NH": ("NH", [(0, 0, 0), (0, 0, 1.02)]),
    "CH": ("CH", [(0, 0, 0), (0, 0, 1.09)]),
    "CH2": ("CH2", [(0, 0, 0), *fan(2, 1.09, 0.96)]),
    "CH3": ("CH3", [(0, 0, 0), *fan(3, 1.09, np.pi - _T)]),
    "NH2": ("NH2", [(0, 0, 0), *fan(2, 1.01, 0.92)]),
    "NO": ("NO", [(0, 0, 0), (0, 0, 1.17)]),
    "N2": ("N2", [(0, 0, 0), (0, 0, 1.10)]),
    "CN": ("CN", [(0, 0, 0), (0, 0, 1.17)]),
    "COH": ("COH", [(0, 0, 0), (0, 0, 1.35), (0.90, 0, 1.70)]),
    "CHO": ("CHO", [(0, 0, 0), (0, 0, 1.20), (0.95, 0, -0.45)]),
}
ID_ADSORBATES: tuple[str, ...] = ("H", "O", "N", "C", "OH", "CO", "NH", "CH", "CH2", "CH3")
OOD_ADSORBATES: tuple[str, ...] = ("NO", "N2", "NH2", "CN", "COH", "CHO")
# Held-out alloy pairs: never seen in training (all their elements are seen as pure metals).
OOD_PAIRS: tuple[tuple[str, str], ...] = (("Au", "Cu"), ("Ni", "Pt"), ("Ag", "Pd"), ("Al", "Ni"))


_INT_GE_1 = Interval(Integral, 1, None, closed="left").is_satisfied_by
_POSITIVE = Interval(Real, 0, None, closed="neither").is_satisfied_by


@dataclass
class GeneratorConfig:
    """Knobs of the generator. Lengths in A, forces in eV/A."""

    size: tuple[int, int] = (2, 2)
    layers: dict[str, int] = field(
        default_factory=lambda: {"fcc111": 3, "fcc100": 3, "fcc110": 4}
    )
    free_layers: dict[str, int] = field(
        default_factory=lambda: {"fcc111": 2, "fcc100": 2, "fcc110": 2}
    )
    facets: tuple[str, ...] = ("fcc111", "fcc100", "fcc110")
    ood_facets: tuple[str, ...] = ("fcc110",)
    """Facets of ``facets`` held out of ``train`` / ``val_id`` / ``val_ood_ads``: the
    ``val_ood_cat`` / ``val_ood_both`` catalysts are cut on them (empty: any facet)."""
    vacuum: float = 6.0
    alloy_fraction: float = 0.4
    """Probability that an in-distribution catalyst is a binary alloy rather than a pure metal."""
    height_range: tuple[float, float] = (1.3, 2.2)
    lateral_jitter: float = 0.35
    max_tilt_deg: float = 20.0
    min_clearance: float = 1.1
    reference: str = DEFAULT_REFERENCE
    """The reference calculator's import path (:mod:`ltau_md.workflows.is2rs.reference`):
    it sets the lattice constants, relaxes the targets and labels the training frames."""
    ref_optimizer: str = "BFGS"
    """The ASE optimizer of the reference relaxations (one of
    :data:`ltau_md.workflows.simulate.OPTIMIZERS`)."""
    fmax: float = DEFAULT_FMAX
    ref_steps: int = 500
    """The cap on reference steps per relaxation: a system not converged by then is
    resampled (at most ``max_attempts`` tries per system)."""
    desorption_distance: float = 3.0
    """Reject a system whose adsorbate ends farther than this (A) from every slab atom (no
    adsorbate atom closer to one)."""
    reject_dissociated: bool = True
    """Reject a system whose adsorbate falls apart in the reference relaxation (OC20's
    "dissociation" anomaly; desorption is the other one rejected)."""
    bond_scale: float = 1.25
    """Two adsorbate atoms are bonded when closer than ``bond_scale`` x the sum of their
    covalent radii (ase.data.covalent_radii)."""
    max_attempts: int = 100
    frames_per_system: int = 6
    val_frames_per_system: int = 3
    metals: tuple[str, ...] = METALS
    id_adsorbates: tuple[str, ...] = ID_ADSORBATES
    ood_adsorbates: tuple[str, ...] = OOD_ADSORBATES
    ood_pairs: tuple[tuple[str, str], ...] = OOD_PAIRS
    """Alloy pairs held out of training (val_ood_cat / val_ood_both catalysts)."""
    extra_adsorbates: dict[str, tuple[str, list[tuple[float, float, float]]]] = field(
        default_factory=dict)
    """More adsorbate geometries by name (symbols, positions in A; binding atom(s) first at
    the origin, fragment towards +z), e.g. OC20's from
    :func:`ltau_md.workflows.is2rs.adsorbates.oc20_adsorbates`."""

    # The numeric knobs, checked by validate_params (no annotation: a class attribute, not a
    # dataclass field). The cross-field rules (metals, adsorbates, pairs, facets) stay below.
    _parameter_constraints = {
        "size": [Satisfies(
            lambda v, ok=_INT_GE_1:
            len(v) == 2 and all(ok(n) for n in v),
            "a pair of ints >= 1")],
        "vacuum": [Interval(Real, 0, None, closed="neither")],
        "alloy_fraction": [Interval(Real, 0, 1, closed="both")],
        "height_range": [Satisfies(
            lambda v, ok=_POSITIVE:
            len(v) == 2 and all(ok(h) for h in v) and v[0] <= v[1],
            "a pair (low, high) of numbers with 0 < low <= high")],
        "lateral_jitter": [Interval(Real, 0, None, closed="left")],
        "max_tilt_deg": [Interval(Real, 0, 180, closed="both")],
        "min_clearance": [Interval(Real, 0, None, closed="neither")],
        "fmax": [Interval(Real, 0, None, closed="neither")],
        "ref_steps": [Interval(Integral, 1, None, closed="left")],
        "ref_optimizer": [StrOptions(set(OPTIMIZERS))],
        "desorption_distance": [Interval(Real, 0, None, closed="neither")],
        "reject_dissociated": ["boolean"],
        "bond_scale": [Interval(Real, 0, None, closed="neither")],
        "max_attempts": [Interval(Integral, 1, None, closed="left")],
        "frames_per_system": [Interval(Integral, 0, None, closed="left")],
        "val_frames_per_system": [Interval(Integral, 0, None, closed="left")],
    }

    def __post_init__(self) -> None:
        from ase.data import atomic_numbers

        validate_params(self._parameter_constraints,
                        {k: getattr(self, k) for k in self._parameter_constraints},
                        owner="GeneratorConfig")
        check_reference(self.reference)
        known = METALS if self.reference == DEFAULT_REFERENCE else FCC_METALS
        for m in self.metals:
            if m not in known:
                raise DataError(f"metal {m!r} not supported with reference {self.reference}; "
                                f"choose from {known}")
        table = self.adsorbate_table
        for a in (*self.id_adsorbates, *self.ood_adsorbates):
            if a not in table:
                raise DataError(f"adsorbate {a!r} unknown; choose from {sorted(table)}")
        for pair in self.ood_pairs:
            if len(pair) != 2 or not set(pair) <= set(self.metals) or pair[0] == pair[1]:
                raise DataError(f"ood pair {pair} must be two different metals of {self.metals}")
        for f in self.facets:
            if f not in FACETS:
                raise DataError(f"unknown facet {f!r}; known: {sorted(FACETS)}")
        for f in self.ood_facets:
            if f not in self.facets:
                raise DataError(f"ood facet {f!r} is not one of facets {self.facets}")
        if not self.id_facets:
            raise DataError(f"every facet {self.facets} is held out (ood_facets); "
                            "training needs at least one")
        self.metals = tuple(sorted(self.metals, key=lambda m: atomic_numbers[m]))
        self.ood_pairs = tuple(tuple(sorted(p)) for p in self.ood_pairs)  # type: ignore[misc]

    @property
    def adsorbate_table(self) -> dict[str, tuple[str, list[tuple[float, float, float]]]]:
        """Adsorbate geometries by name: :data:`ADSORBATES` and ``extra_adsorbates``."""
        return {**ADSORBATES, **self.extra_adsorbates}

    @property
    def id_facets(self) -> tuple[str, ...]:
        """Facets seen in training (``facets`` minus ``ood_facets``)."""
        return tuple(f for f in self.facets if f not in self.ood_facets)

    @property
    def id_pairs(self) -> tuple[tuple[str, str], ...]:
        """Alloy pairs of ``metals`` seen in training (all pairs minus ``ood_pairs``)."""
        pairs = [tuple(sorted(p)) for p in itertools.combinations(self.metals, 2)]
        return tuple(p for p in pairs if p not in self.ood_pairs)  # type: ignore[misc]


def _sample_catalyst(rng: np.random.Generator, ood: bool, cfg: GeneratorConfig) -> Catalyst:
    facets = (cfg.ood_facets or cfg.facets) if ood else cfg.id_facets
    facet = str(rng.choice(list(facets)))
    if ood:
        if not cfg.ood_pairs:
            raise DataError("OOD catalyst splits need GeneratorConfig.ood_pairs (none given)")
        pair = cfg.ood_pairs[rng.integers(len(cfg.ood_pairs))]
        return Catalyst(tuple(pair), float(rng.uniform(0.25, 0.75)), facet)
    id_pairs = cfg.id_pairs
    if id_pairs and rng.random() < cfg.alloy_fraction:
        pair = id_pairs[rng.integers(len(id_pairs))]
        return Catalyst(tuple(pair), float(rng.uniform(0.25, 0.75)), facet)
    return Catalyst((str(rng.choice(list(cfg.metals))),), 1.0, facet)


class _Abort(Exception):
    """Stop a reference relaxation that can no longer give an accepted system."""


def _relax_reference(atoms: Atoms, cfg: GeneratorConfig,
                     abort: Callable[[Atoms], bool] | None = None,
                     ) -> tuple[bool, int, list[Atoms]]:
    """The reference relaxation (``cfg.reference`` + ``cfg.ref_optimizer``) in place; returns
    (converged, n_steps, trajectory snapshots with SinglePointCalculator energy/forces).
    ``abort(atoms)``, checked every 10 steps, ends the relaxation early as not converged
    (e.g. the adsorbate already fell apart)."""
    from ase import optimize

    calc = cached_reference(cfg.reference)
    calc.reset()
    atoms.calc = calc
    traj: list[Atoms] = []

    def snap() -> None:
        a = atoms.copy()
        a.calc = SinglePointCalculator(
            a, energy=atoms.get_potential_energy(), forces=atoms.get_forces(apply_constraint=False)
        )
        traj.append(a)
        if abort is not None and len(traj) % 10 == 0 and abort(atoms):
            raise _Abort

    opt = getattr(optimize, cfg.ref_optimizer)(atoms, logfile=None)
    opt.attach(snap, interval=1)
    try:
        converged = bool(opt.run(fmax=cfg.fmax, steps=cfg.ref_steps))
    except _Abort:
        converged = False
    return converged, int(opt.nsteps), traj


def generate_system(
    seed: int, split: str, index: int, cfg: GeneratorConfig | None = None
) -> tuple[Atoms, Atoms, list[Atoms]]:
    """One benchmark system: (initial, reference-relaxed, reference trajectory).

    Deterministic in (seed, split, index). Resamples (same stream) until the reference
    relaxation converges and the adsorbate stays bound and in one piece (OC20 anomalies).
    """
    cfg = cfg or GeneratorConfig()
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; known: {SPLITS}")
    rng = np.random.default_rng([int(seed), SPLITS.index(split), int(index)])
    ood_ads = split in ("val_ood_ads", "val_ood_both")
    ood_cat = split in ("val_ood_cat", "val_ood_both")
    ads_pool = cfg.ood_adsorbates if ood_ads else cfg.id_adsorbates
    if not ads_pool:
        raise DataError(f"split {split} needs {'ood' if ood_ads else 'id'}_adsorbates")
    rejected = {"not_converged": 0, "desorbed": 0, "dissociated": 0}
    steps_total = 0
    for attempt in range(cfg.max_attempts):
        cat = _sample_catalyst(rng, ood_cat, cfg)
        ads_name = str(rng.choice(list(ads_pool)))
        slab = build_slab(cat, rng, cfg)
        initial, site = place_adsorbate(slab, ads_name, rng, cfg)
        work = initial.copy()
        n_fragments = adsorbate_fragments(initial, cfg.bond_scale)

        def dissociated(atoms: Atoms, n0: int = n_fragments) -> bool:
            return adsorbate_fragments(atoms, cfg.bond_scale) > n0

        converged, n_steps, traj = _relax_reference(
            work, cfg, dissociated if cfg.reject_dissociated else None)
        steps_total += len(traj)
        broken = cfg.reject_dissociated and dissociated(work)
        if not converged:
            rejected["dissociated" if broken else "not_converged"] += 1
            continue
        if desorbed(work, cfg) or broken:
            rejected["desorbed" if desorbed(work, cfg) else "dissociated"] += 1
            continue
        info = {
            "sid": f"{split}-{index:05d}",
            "split": split,
            "catalyst": cat.name,
            "elements": "-".join(cat.elements),
            "facet": cat.facet,
            "adsorbate": ads_name,
            "site": site,
            "attempt": attempt,
        }
        initial.info = dict(info)
        relaxed = traj[-1].copy()
        relaxed.calc = traj[-1].calc
        relaxed.info = dict(info, ref_energy=float(traj[-1].get_potential_energy()),
                            ref_n_steps=n_steps, ref_converged=converged,
                            ref_calls_total=steps_total,
                            **{f"rejected_{k}": v for k, v in rejected.items()})
        relaxed.set_constraint(FixAtoms(mask=relaxed.get_tags() == 0))
        for j, fr in enumerate(traj):
            fr.info = dict(info, frame=j)
        return initial, relaxed, traj
    raise DataError(
        f"no converged, bound, intact system for {split}-{index:05d} after {cfg.max_attempts} "
        f"attempts (rejected: {rejected}; adsorbates {list(ads_pool)}; EMT lets many "
        "polyatomic adsorbates fall apart: choose others, or "
        "GeneratorConfig(reject_dissociated=False); raise ref_steps or max_attempts)"
    )


def _sample_frames(
    traj: list[Atoms], k: int, rng: np.random.Generator
) -> list[Atoms]:
    """``k`` frames of a trajectory: the first, the last and random ones in between (sorted)."""
    n = len(traj)
    if k <= 0:
        return []
    if n <= k:
        idx = list(range(n))
    elif k == 1:
        idx = [n - 1]
    else:
        middle = rng.choice(np.arange(1, n - 1), size=k - 2, replace=False) if k > 2 else []
        idx = sorted({0, n - 1, *map(int, middle)})
    return [traj[i] for i in idx]


class _SystemCache:
    """Finished systems of one (seed, config) on disk: ``ROOT/<key>/<split>-<index>.extxyz``
    holds the initial structure, the relaxed one and the reference trajectory, written
    atomically. ``root`` None: no cache."""

    #: settings applied after a system is generated (which frames of its trajectory are
    #: kept): not part of the key, so runs that differ only in them share the systems
    _NOT_IN_KEY = ("frames_per_system", "val_frames_per_system")

    def __init__(self, root: Path | None, seed: int, cfg: GeneratorConfig) -> None:
        import hashlib

        used = (*cfg.id_adsorbates, *cfg.ood_adsorbates)
        config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in self._NOT_IN_KEY}
        blob = json.dumps({"format": FORMAT, "version": VERSION, "seed": int(seed),
                           "config": config,
                           "adsorbates": {a: cfg.adsorbate_table[a] for a in used}},
                          sort_keys=True, default=str)
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        self.dir = None if root is None else Path(root) / self.key
        #: caches of the same systems written under a key that held the frame counts
        self.older: list[Path] = []
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "key.json").write_text(blob)
            self.older = [d.parent for d in sorted(Path(root).glob("*/key.json"))
                          if d.parent != self.dir and self._same_systems(d, blob)]

    @classmethod
    def _same_systems(cls, key_file: Path, blob: str) -> bool:
        """Whether the cache whose ``key.json`` is ``key_file`` holds the systems of ``blob``
        (its key may include the frame counts, which do not change the systems)."""
        try:
            other = json.loads(key_file.read_text())
            other["config"] = {k: v for k, v in other["config"].items()
                               if k not in cls._NOT_IN_KEY}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return json.dumps(other, sort_keys=True, default=str) == blob

    def _path(self, job: tuple[str, int], folder: Path | None = None) -> Path:
        return (folder or self.dir) / f"{job[0]}-{job[1]:05d}.extxyz"

    def _found(self, job: tuple[str, int]) -> Path | None:
        if self.dir is None:
            return None
        return next((p for p in (self._path(job, d) for d in (self.dir, *self.older))
                     if p.exists()), None)

    def load(self, job: tuple[str, int]) -> tuple[Atoms, Atoms, list[Atoms]] | None:
        path = self._found(job)
        if path is None:
            return None
        from ase.io import read

        from ltau_md.workflows.is2rs.data import restore_names

        images = [restore_names(a) for a in read(path, ":", format="extxyz")]
        return images[0], images[1], images[2:]

    def save(self, job: tuple[str, int], res: tuple[Atoms, Atoms, list[Atoms]],
             cpu_s: float) -> None:
        """Cache a system and, beside it, the CPU seconds it took (``.cpu.json``; not in the
        system's file, which stays deterministic)."""
        if self.dir is None:
            return
        from ltau_md.core.files import atomic_path, write_json_atomic

        write_json_atomic(self._path(job).with_suffix(".cpu.json"), {"cpu_s": cpu_s})
        with atomic_path(self._path(job), suffix=".extxyz") as tmp:
            write(tmp, [res[0], res[1], *res[2]], format="extxyz")

    def cpu_s(self, job: tuple[str, int]) -> float:
        """The CPU seconds a cached system took to generate (NaN if unknown)."""
        found = self._found(job)
        p = None if found is None else found.with_suffix(".cpu.json")
        return float(json.loads(p.read_text())["cpu_s"]) if p and p.exists() else float("nan")


def _run_jobs(
    jobs: list[tuple[str, int]],
    seed: int,
    cfg: GeneratorConfig,
    n_workers: int,
    scheduler: str | None,
    bar,
    cache: _SystemCache,
    cost: dict[tuple[str, int], tuple[float, bool]],
) -> dict[tuple[str, int], tuple[Atoms, Atoms, list[Atoms]]]:
    """Every job's system: from the cache, else generated (serially or on dask) and cached
    as soon as it is done. The systems are read back from the cache when there is one, so
    a cached and a fresh system give the same files. ``cost[job]``: (CPU seconds it took,
    whether it came from the cache)."""
    done = {}
    todo = []
    for job in jobs:
        hit = cache.load(job)
        if hit is None:
            todo.append(job)
        else:
            done[job] = hit
            cost[job] = (cache.cpu_s(job), True)
            bar.update(1)
    if n_workers <= 0 and scheduler is None:
        results = ((job, _generate_job(job, seed, cfg), None) for job in todo)
    else:
        from ltau_md.workflows._dask import map_unordered

        results = map_unordered(_generate_job, todo, seed, cfg, n_workers=n_workers,
                                scheduler=scheduler) if todo else iter(())
    for job, out, exc in results:
        if exc is not None:
            raise exc
        res, cpu_s = out
        cache.save(job, res, cpu_s)
        done[job] = cache.load(job) or res
        cost[job] = (cpu_s, False)
        bar.update(1)
    return done


def _generate_job(job: tuple[str, int], seed: int, cfg: GeneratorConfig
                  ) -> tuple[tuple[Atoms, Atoms, list[Atoms]], float]:
    """:func:`generate_system` of one (split, index) job (a dask task) and the process CPU
    seconds it took."""
    import time

    t0 = time.process_time()
    res = generate_system(seed, job[0], job[1], cfg)
    return res, time.process_time() - t0


def generate_benchmark(
    out: str | Path,
    seed: int = 0,
    n_train: int = 200,
    n_val: int = 50,
    cfg: GeneratorConfig | None = None,
    splits: tuple[str, ...] = SPLITS,
    overwrite: bool = False,
    progress: bool = True,
    n_workers: int = 0,
    scheduler: str | None = None,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> dict:
    """Generate the benchmark into ``out`` and return its manifest.

    ``n_train`` systems for ``train`` and ``n_val`` for each validation split. The directory
    is written next to ``out`` and renamed into place, so ``out`` is complete or absent.
    ``out`` must be missing or empty; ``overwrite=True`` replaces an earlier benchmark there
    (anything else is refused with OutputExistsError and left untouched).
    ``n_workers > 0`` (or a dask ``scheduler`` address) runs the reference relaxations on
    dask workers; the output is the same as a serial run's. Finished systems are cached in
    ``cache_dir`` (default ``OUT.cache`` beside ``out``; ``cache=False``: none), so a killed
    generation continues and a rerun with the same seed and config reuses them.
    """
    from tqdm.auto import tqdm

    cfg = cfg or GeneratorConfig()
    out = Path(out)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise DataError(f"unknown splits {unknown}; known: {SPLITS}")
    if n_train < 0 or n_val < 0:
        raise DataError(f"n_train={n_train} and n_val={n_val} must be >= 0")
    with atomic_dir(out, FORMAT, overwrite=overwrite) as tmp:
        manifest: dict = {
            "format": FORMAT,
            "version": VERSION,
            "seed": int(seed),
            "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
            "reference": f"{cfg.reference} + ase.optimize.{cfg.ref_optimizer}",
            "id_adsorbates": list(cfg.id_adsorbates),
            "ood_adsorbates": list(cfg.ood_adsorbates),
            "ood_alloy_pairs": ["-".join(p) for p in cfg.ood_pairs],
            "ood_facets": list(cfg.ood_facets),
            "splits": {},
            "files": {},
        }
        jobs = [(split, i) for split in splits
                for i in range(n_train if split == "train" else n_val)]
        store = _SystemCache((Path(cache_dir) if cache_dir is not None else
                              out.with_name(out.name + ".cache")) if cache else None, seed, cfg)
        bar = tqdm(total=len(jobs), desc="generating IS2RS systems", disable=not progress)
        cost: dict[tuple[str, int], tuple[float, bool]] = {}
        done = _run_jobs(jobs, seed, cfg, n_workers, scheduler, bar, store, cost)
        bar.close()
        for split in splits:
            n = n_train if split == "train" else n_val
            k = cfg.frames_per_system if split == "train" else cfg.val_frames_per_system
            initials, relaxeds, frames = [], [], []
            for i in range(n):
                ini, rel, traj = done[(split, i)]
                frng = np.random.default_rng([int(seed), SPLITS.index(split), i, 1])
                initials.append(ini)
                relaxeds.append(rel)
                frames.extend(_sample_frames(traj, k, frng))
            d = tmp / split
            d.mkdir()
            for name, images in (
                ("initial", initials), ("relaxed", relaxeds), ("frames", frames)
            ):
                write(d / f"{name}.extxyz", images, format="extxyz")
            manifest["splits"][split] = {
                "n_systems": n,
                "n_frames": len(frames),
                "adsorbates": sorted({a.info["adsorbate"] for a in initials}),
                "catalysts": sorted({a.info["elements"] for a in initials}),
                "facets": sorted({a.info["facet"] for a in initials}),
                "reference_calls": int(sum(a.info.get("ref_calls_total", 0)
                                           for a in relaxeds)),
                "attempts": int(sum(a.info["attempt"] + 1 for a in relaxeds)),
                # the cost (not deterministic, so in the manifest only): CPU seconds of the
                # systems generated by this run, and how many came from the cache
                "generation_cpu_s": float(sum(cost[(split, i)][0] for i in range(n)
                                              if not cost[(split, i)][1])),
                "from_cache": int(sum(cost[(split, i)][1] for i in range(n))),
                "rejected": {k: int(sum(a.info.get(f"rejected_{k}", 0) for a in relaxeds))
                             for k in ("not_converged", "desorbed", "dissociated")},
            }
        for f in sorted(tmp.rglob("*.extxyz")):
            manifest["files"][str(f.relative_to(tmp))] = sha256_file(f)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest
