"""Glue shared by the calibration fits: neighbours of calibration atoms, tolerance arguments,
group labels and the target tolerance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ltau_md.core._param_validation import check_positive
from ltau_md.core.exceptions import DataError
from ltau_md.core.validation import check_is_fitted

if TYPE_CHECKING:
    from ltau_md.core.estimator import LTAUEstimator

__all__ = ["group_labels", "neighbors_of", "target_tolerance", "tolerance_args"]


def neighbors_of(estimator: LTAUEstimator, descriptors: np.ndarray | None,
               indices: np.ndarray | None) -> np.ndarray:
    if indices is not None:
        idx = np.asarray(indices)
        if idx.ndim != 2:
            raise DataError(f"indices must be (n, k), got shape {idx.shape}")
        return idx
    if descriptors is None:
        raise DataError("pass descriptors (n, D) or precomputed neighbour indices (n, k)")
    return estimator.kneighbors(descriptors)[1]


def tolerance_args(estimator: LTAUEstimator, n: int, ref_force_norm: np.ndarray | None
                    ) -> tuple[float, np.ndarray | None]:
    rtol = float(estimator.summary_.rtol)
    if rtol > 0 and ref_force_norm is None:
        raise DataError(f"the estimator uses rtol={rtol}: pass ref_force_norm, the reference "
                        "force norms |F_j| (eV/A) of the calibration atoms")
    if ref_force_norm is not None:
        ref_force_norm = np.asarray(ref_force_norm, dtype=np.float64)
        if ref_force_norm.shape != (n,):
            raise DataError(f"ref_force_norm has shape {ref_force_norm.shape}, expected ({n},)")
    return rtol, ref_force_norm


def group_labels(groups: Any, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.shape != (n,):
        raise DataError(f"groups must be one label per atom ({n},), got {g.shape}")
    return g.astype(str)


def target_tolerance(estimator: LTAUEstimator, target_atol: float | None = None) -> float:
    """The target tolerance T (eV/A) calibrated confidences refer to: ``target_atol`` if given,
    else the fitted calibration's (``estimator.calibration_.target_atol``), else the
    estimator's atol. The one default of :func:`fit_scale` and :func:`evaluate_calibration`."""
    check_is_fitted(estimator)
    if target_atol is None:
        cal = estimator.calibration_
        target_atol = estimator.atol_ if cal is None else cal.target_atol
    return check_positive("target tolerance (eV/A)", target_atol)
