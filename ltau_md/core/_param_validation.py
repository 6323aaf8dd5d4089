"""Parameter constraints declared as data, checked by one validator (scikit-learn's
``utils/_param_validation.py`` is the model).

A class lists ``_parameter_constraints = {"k": [Interval(Integral, 1, None, closed="left")],
"index": [StrOptions({"auto", "flat"})], "s": [Interval(Real, 0, None, closed="neither"),
None]}``; :func:`validate_params` checks a mapping of values against it and raises
:class:`~ltau_md.core.exceptions.InvalidParameterError` naming the parameter, the value and
every allowed form. A value passes when it satisfies any one constraint of its list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from ltau_md.core.exceptions import InvalidParameterError

__all__ = [
    "Interval",
    "Options",
    "StrOptions",
    "Satisfies",
    "check_positive",
    "validate_params",
    "validate_value",
]


@dataclass(frozen=True)
class Interval:
    """A number of ``type_`` (``numbers.Integral`` or ``numbers.Real``) in an interval.

    Parameters
    ----------
    type_
        ``Integral`` (bools refused) or ``Real`` (NaN and, unless a bound says otherwise, inf
        refused: every bound here is finite or None).
    left, right
        Bounds; None means unbounded on that side.
    closed
        Which bounds belong to the interval: ``"both"``, ``"left"``, ``"right"`` or
        ``"neither"``.
    """

    type_: type
    left: float | None
    right: float | None
    closed: str = "both"

    def __post_init__(self) -> None:
        if self.closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be both/left/right/neither, got {self.closed!r}")

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.type_):
            if not (self.type_ is Real and isinstance(value, Integral)
                    and not isinstance(value, bool)):
                return False
        v = float(value)
        if not math.isfinite(v):
            return False
        lo_ok = (self.left is None or v > self.left
                 or (v == self.left and self.closed in ("both", "left")))
        hi_ok = (self.right is None or v < self.right
                 or (v == self.right and self.closed in ("both", "right")))
        return lo_ok and hi_ok

    def __str__(self) -> str:
        kind = "an int" if self.type_ is Integral else "a finite number"
        lb = "[" if self.closed in ("both", "left") and self.left is not None else "("
        rb = "]" if self.closed in ("both", "right") and self.right is not None else ")"
        lo = "-inf" if self.left is None else f"{self.left:g}"
        hi = "inf" if self.right is None else f"{self.right:g}"
        return f"{kind} in {lb}{lo}, {hi}{rb}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values of ``type_`` (compared with ``==``)."""

    type_: type
    options: frozenset

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.type_) and value in self.options

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in sorted(self.options, key=str))


class StrOptions(Options):
    """One of a fixed set of strings."""

    def __init__(self, options: Iterable[str]):
        super().__init__(str, frozenset(options))


@dataclass(frozen=True)
class Satisfies:
    """Any value for which ``check(value)`` is true; ``description`` says what that means."""

    check: Callable[[Any], bool]
    description: str

    def is_satisfied_by(self, value: Any) -> bool:
        try:
            return bool(self.check(value))
        except Exception:  # a failing check means "not satisfied"
            return False

    def __str__(self) -> str:
        return self.description


def _satisfied(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, type):
        return isinstance(value, constraint) and not (
            constraint is not bool and isinstance(value, bool))
    if constraint == "boolean":
        return isinstance(value, bool)
    return constraint.is_satisfied_by(value)


def _describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, type):
        return f"an instance of {constraint.__name__}"
    if constraint == "boolean":
        return "a bool"
    return str(constraint)


def validate_value(name: str, value: Any, constraints: list, owner: str = "") -> None:
    """Raise :class:`InvalidParameterError` unless ``value`` satisfies one of ``constraints``.

    The message names ``owner`` (e.g. ``"LTAUEstimator"``), the parameter, the value and every
    allowed form.
    """
    if any(_satisfied(c, value) for c in constraints):
        return
    allowed = " or ".join(_describe(c) for c in constraints)
    where = f"{owner}: " if owner else ""
    raise InvalidParameterError(f"{where}{name} must be {allowed}; got {value!r}")


def validate_params(constraints: Mapping[str, list], params: Mapping[str, Any],
                    owner: str = "") -> None:
    """Check every entry of ``params`` that ``constraints`` declares (others are not checked).

    Parameters
    ----------
    constraints
        Parameter name -> list of allowed forms (:class:`Interval`, :class:`StrOptions`,
        :class:`Options`, :class:`Satisfies`, a type, ``"boolean"`` or None).
    params
        Parameter name -> value.
    owner
        Named first in the error message.

    Raises
    ------
    InvalidParameterError
        For the first parameter that satisfies none of its constraints.
    """
    for name, value in params.items():
        if name in constraints:
            validate_value(name, value, constraints[name], owner)


def check_positive(name: str, value: Any, error: type[Exception] = InvalidParameterError
                   ) -> float:
    """``value`` as a float if it is a real number > 0 and finite, else raise ``error``
    (default :class:`InvalidParameterError`) saying "``name`` must be positive and finite".

    The one definition of "a positive, finite number" (tolerances in eV/A, scales, rates).
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise error(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise error(f"{name} must be positive and finite, got {value}")
    return float(value)
