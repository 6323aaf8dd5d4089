"""check_is_fitted (public) and UQMonitor's declared parameter constraints."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.optimize import BFGS

from ltau_md.core.calculator import LTAUCalculator
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import InvalidParameterError, NotFittedError
from ltau_md.core.observers import Threshold, UQMonitor
from ltau_md.core.validation import check_is_fitted
from ltau_md.testing import rattled_cu_estimator


class _Thing:
    def __init__(self):
        self.alpha = 1


def test_check_is_fitted_by_trailing_underscore_and_named_attributes():
    thing = _Thing()
    with pytest.raises(NotFittedError, match="this _Thing is not fitted"):
        check_is_fitted(thing)
    thing.coef_ = np.zeros(2)
    check_is_fitted(thing)
    with pytest.raises(NotFittedError):
        check_is_fitted(thing, "scale_")
    thing.scale_ = 2.0
    check_is_fitted(thing, ["coef_", "scale_"])


def test_check_is_fitted_on_estimator(tmp_path):
    with pytest.raises(NotFittedError, match="LTAUEstimator"):
        check_is_fitted(LTAUEstimator())
    _, est = rattled_cu_estimator(tmp_path / "log", n_frames=3)
    check_is_fitted(est)


@pytest.fixture(scope="module")
def opt(tmp_path_factory):
    model, est = rattled_cu_estimator(tmp_path_factory.mktemp("log"), n_frames=3)
    atoms = bulk("Cu", cubic=True).repeat(2)
    atoms.calc = LTAUCalculator(model, est)
    return BFGS(atoms, logfile=None)


@pytest.mark.parametrize("kwargs, match", [
    ({"aggregate": "median"}, "aggregate must be one of 'max', 'mean'"),
    ({"max_retries": -3}, "max_retries must be an int in \\[0, inf\\)"),
    ({"max_force": 0.0}, "max_force must be a finite number in \\(0, inf\\) or None"),
    ({"free_mask": np.ones(5, bool)}, "free_mask must be a boolean array of shape \\(32,\\)"),
    ({"free_mask": np.arange(32)}, "free_mask must be a boolean array"),
    ({"rewind": True}, "rewind=True needs temperature_K"),
])
def test_uqmonitor_refuses_bad_parameters(opt, kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        UQMonitor(opt, [Threshold("warn", above=0.5)], **kwargs)


def test_uqmonitor_accepts_a_valid_mask(opt):
    mask = np.zeros(32, bool)
    mask[:4] = True
    mon = UQMonitor(opt, [Threshold("warn", above=0.5)], free_mask=mask, max_retries=0)
    assert mon.free_mask.sum() == 4


def test_own_deprecation_warnings_are_errors_in_the_test_suite():
    import warnings

    from ltau_md.core.exceptions import LTAUDeprecationWarning

    with pytest.raises(LTAUDeprecationWarning):
        warnings.warn("old API", LTAUDeprecationWarning, stacklevel=1)
    with pytest.warns(DeprecationWarning):  # another package's: shown, not an error
        warnings.warn("someone else's", DeprecationWarning, stacklevel=1)
