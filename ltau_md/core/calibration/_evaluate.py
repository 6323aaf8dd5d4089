"""Evaluating the calibration of LTAU confidences on test atoms (a calibration curve)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ltau_md.core.calibration._common import (
    group_labels,
    neighbors_of,
    target_tolerance,
    tolerance_args,
)
from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.metrics import (
    Binning,
    CalibrationCurve,
    calibration_curve,
    force_error_norm,
    within_tolerance,
)
from ltau_md.core.validation import check_is_fitted

if TYPE_CHECKING:
    from ltau_md.core.estimator import LTAUEstimator

__all__ = ["evaluate_calibration"]


def evaluate_calibration(
    estimator: LTAUEstimator,
    descriptors: np.ndarray | None,
    force_errors: np.ndarray,
    *,
    s: float | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    indices: np.ndarray | None = None,
    target_atol: float | None = None,
    outcome: Literal["target", "scaled"] = "target",
    ref_force_norm: np.ndarray | None = None,
    n_bins: int = 20,
    binning: Binning = "uniform",
) -> CalibrationCurve:
    """Calibration curve of the estimator's confidences on test atoms.

    Parameters
    ----------
    descriptors : (n, D) or None
        Descriptors of the test atoms (or pass their neighbour ``indices`` (n, k)).
    force_errors : (n,) or (n, 3)
        Observed force errors |F_ref - F_model| in eV/A.
    s : float, optional
        Scale the confidences are read at; default the estimator's
        :meth:`~LTAUEstimator.effective_s`, per atom's group if ``groups`` are given (as at
        inference).
    groups : (n,) labels, optional
        Group of each atom (e.g. config_type), selecting the fitted per-group scales.
    target_atol : float, optional
        T in eV/A, default :func:`target_tolerance`.
    outcome : {"target", "scaled"}
        "target": an atom is within tolerance if |error| <= T + rtol*|F_ref| (the convention
        :func:`fit_scale` calibrates for); "scaled": if |error| <= atol*s + rtol*|F_ref| (same
        tolerance as p; diagnostic only, see the module docstring; needs one s).
    """
    check_is_fitted(estimator)
    err = force_error_norm(force_errors)
    n = err.shape[0]
    idx = neighbors_of(estimator, descriptors, indices)
    if idx.shape[0] != n:
        raise DataError(f"{idx.shape[0]} atoms have neighbours but {n} have errors")
    g = group_labels(groups, n)
    rtol, ref = tolerance_args(estimator, n, ref_force_norm)
    if s is not None or g is None:
        s_used: float | None = estimator.resolve_scale(s, None)
        conf = estimator.confidence_from_neighbors(idx, s_used)[0]
    else:
        conf = np.empty(n, dtype=np.float64)
        scales = set()
        for label in np.unique(g):
            mask = g == label
            scales.add(estimator.effective_s(label))
            conf[mask] = estimator.confidence_from_neighbors(idx[mask], group=label)[0]
        s_used = scales.pop() if len(scales) == 1 else None
    if outcome == "target":
        ok = within_tolerance(err, target_tolerance(estimator, target_atol), 1.0, rtol, ref)
    elif outcome == "scaled":
        if s_used is None:
            raise InvalidParameterError("outcome='scaled' needs one s, not per-group scales")
        ok = within_tolerance(err, float(estimator.atol_), s_used, rtol, ref)
    else:
        raise InvalidParameterError(f"outcome must be 'target' or 'scaled', got {outcome!r}")
    return calibration_curve(conf, ok, n_bins=n_bins, binning=binning, s=s_used)
