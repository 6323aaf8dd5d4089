"""Declared parameter constraints: one validator, one error type, messages naming the value."""

from __future__ import annotations

import math
from numbers import Integral, Real

import pytest

from ltau_md.core._param_validation import (
    Interval,
    Satisfies,
    StrOptions,
    validate_params,
    validate_value,
)
from ltau_md.core.exceptions import InvalidParameterError

CONSTRAINTS = {
    "k": [Interval(Integral, 1, None, closed="left")],
    "rate": [Interval(Real, 0, 1, closed="neither")],
    "s": [Interval(Real, 0, None, closed="neither"), None],
    "index": [StrOptions({"auto", "flat", "hnsw"})],
    "verify": ["boolean"],
    "even": [Satisfies(lambda v: v % 2 == 0, "an even number")],
}


@pytest.mark.parametrize("name, value", [
    ("k", 1), ("k", 10**6), ("rate", 0.01), ("rate", 0.999), ("s", None), ("s", 2),
    ("s", 1e-9), ("index", "hnsw"), ("verify", False), ("even", 4),
])
def test_valid_values_pass(name, value):
    validate_params(CONSTRAINTS, {name: value}, owner="Thing")


@pytest.mark.parametrize("name, value", [
    ("k", 0), ("k", 2.0), ("k", True), ("k", "3"), ("rate", 0), ("rate", 1), ("rate", 1.5),
    ("rate", math.nan), ("rate", math.inf), ("s", 0), ("s", -1), ("s", math.inf),
    ("index", "Flat"), ("index", 1), ("verify", 1), ("even", 3), ("even", "x"),
])
def test_invalid_values_raise_one_error_type_naming_the_parameter(name, value):
    with pytest.raises(InvalidParameterError) as info:
        validate_params(CONSTRAINTS, {name: value}, owner="Thing")
    msg = str(info.value)
    assert msg.startswith(f"Thing: {name} must be ")
    assert repr(value) in msg
    assert isinstance(info.value, ValueError)  # InvalidParameterError is also a ValueError


def test_interval_bounds_by_hand():
    closed = {"both": (True, True), "left": (True, False), "right": (False, True),
              "neither": (False, False)}
    for kind, (lo, hi) in closed.items():
        iv = Interval(Real, 0.0, 1.0, closed=kind)
        assert iv.is_satisfied_by(0.0) is lo and iv.is_satisfied_by(1.0) is hi, kind
        assert iv.is_satisfied_by(0.5) and not iv.is_satisfied_by(-1e-12)
    assert str(Interval(Real, 0, 1, closed="neither")) == "a finite number in (0, 1)"
    assert str(Interval(Integral, 1, None, closed="left")) == "an int in [1, inf)"


def test_message_lists_every_allowed_form():
    with pytest.raises(InvalidParameterError, match=r"a finite number in \(0, inf\) or None"):
        validate_value("s", -2.0, CONSTRAINTS["s"])
    with pytest.raises(InvalidParameterError, match="one of 'auto', 'flat', 'hnsw'"):
        validate_value("index", "ivf", CONSTRAINTS["index"])


def test_undeclared_parameters_are_not_checked():
    validate_params(CONSTRAINTS, {"anything": object()})
