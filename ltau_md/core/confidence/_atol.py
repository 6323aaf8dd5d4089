"""The ``atol`` option (eV/A): None, a number, :data:`PER_SPECIES` or {Z: atol_Z}, and its
validation."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Any

from ltau_md.core._param_validation import check_positive
from ltau_md.core.exceptions import InvalidParameterError

__all__ = ["PER_SPECIES", "AtolOption", "check_atol"]


#: ``atol`` option: each element's own final training force MAE as its tolerance
PER_SPECIES = "per_species"
#: an ``atol`` option: None (final training force MAE over all atoms), a float (eV/A),
#: :data:`PER_SPECIES`, or a mapping {atomic number: atol_Z in eV/A}
AtolOption = float | str | Mapping[Any, float] | None


def check_atol(atol: AtolOption) -> AtolOption:
    """Validate an ``atol`` option and return it in canonical form.

    None and :data:`PER_SPECIES` are returned as they are, a positive finite number unchanged,
    a mapping {Z: atol_Z} (Z an atomic number >= 1 as int or digit string, atol_Z > 0 finite,
    eV/A) as a new dict {str(Z): float(atol_Z)} in increasing Z (JSON-stable). Anything else
    raises :class:`InvalidParameterError`.
    """
    if atol is None or (isinstance(atol, str) and atol == PER_SPECIES):
        return atol
    if isinstance(atol, str):
        raise InvalidParameterError(
            f"atol must be a number (eV/A), None, {PER_SPECIES!r} or a dict {{Z: atol_Z}}, "
            f"got {atol!r}")
    if isinstance(atol, Mapping):
        if not atol:
            raise InvalidParameterError("atol dict {Z: atol_Z} is empty")
        out: dict[int, float] = {}
        for key, value in atol.items():
            z = _atomic_number(key)
            if z in out:
                raise InvalidParameterError(f"atol dict names element {z} twice")
            out[z] = check_positive(f"atol of element {z} (eV/A)", value)
        return {str(z): out[z] for z in sorted(out)}
    check_positive("atol (eV/A)", atol)
    return atol


def _atomic_number(key: Any) -> int:
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, Integral) or key < 1:
        raise InvalidParameterError(f"atol dict keys must be atomic numbers >= 1, got {key!r}")
    return int(key)


