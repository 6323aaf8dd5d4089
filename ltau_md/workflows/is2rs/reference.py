"""The IS2RS reference calculator ("DFT"), named by an import path.

``"ase.calculators.emt:EMT"`` (the default) or any ``"package.module:Name"`` whose ``Name`` is
an ASE :class:`~ase.calculators.calculator.Calculator` class or a zero-argument callable that
returns one (e.g. a small wrapper that loads a universal potential). The path is a string, so
it is picklable and travels to dask workers, which build the calculator once and reuse it.
"""

from __future__ import annotations

import functools
from importlib import import_module

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ltau_md.core.exceptions import DataError

__all__ = [
    "DEFAULT_REFERENCE",
    "cached_reference",
    "check_reference",
    "load_reference",
    "reference_energy_forces",
]

DEFAULT_REFERENCE = "ase.calculators.emt:EMT"


def _resolve(path: str, what: str = "reference calculator"):
    """The class or factory ``path`` names; DataError naming ``what`` and the problem."""
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise DataError(
            f"{what} {path!r} must be an import path 'package.module:Name', e.g. "
            f"{DEFAULT_REFERENCE!r}"
        )
    module_name, attr = path.split(":")
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise DataError(
            f"{what} {path!r}: cannot import module {module_name!r} ({exc}); "
            f"give 'package.module:Name', e.g. {DEFAULT_REFERENCE!r}"
        ) from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DataError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DataError(f"{what} {path!r} is not a class or a callable")
    return obj


def check_reference(path: str, what: str = "reference calculator") -> str:
    """Validate the import path (module and name exist) without building the calculator;
    ``what`` names it in the error (e.g. "oracle")."""
    _resolve(path, what)
    return path


def load_reference(path: str = DEFAULT_REFERENCE, what: str = "reference calculator"
                   ) -> Calculator:
    """A fresh reference calculator built from ``path`` (see the module docstring); ``what``
    names it in the error."""
    calc = _resolve(path, what)()
    if not isinstance(calc, Calculator):
        raise DataError(f"{what} {path!r} built a {type(calc).__name__}, not an ASE Calculator")
    return calc


@functools.lru_cache(maxsize=2)
def cached_reference(path: str) -> Calculator:
    """One reference calculator per process and path (dask workers keep it warm)."""
    return load_reference(path)


def reference_energy_forces(calc: Calculator, atoms: Atoms) -> tuple[float, np.ndarray]:
    """Energy (eV) and unconstrained forces (eV/A) of ``atoms`` with ``calc`` (on a copy)."""
    a = atoms.copy()
    a.calc = calc
    calc.reset()
    e = float(a.get_potential_energy())
    f = np.asarray(a.get_forces(apply_constraint=False), dtype=float)
    a.calc = None
    return e, f
