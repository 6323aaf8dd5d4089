"""Calibrating a predicted Gaussian force spread (an ensemble's or a head's): one global
factor on the spread, fitted as LTAU's s is, by the smallest miscalibration area."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ltau_md.core.calibration._scale import search_scale
from ltau_md.core.metrics import calibration_curve, gaussian_confidence, within_tolerance

__all__ = ["SpreadFit", "fit_spread_scale", "spread_calibration"]

#: searched range of the factor on the spread, and the grid (as fit_scale's search)
SPREAD_SCALE_BOUNDS = (0.1, 10.0)


@dataclass(frozen=True)
class SpreadFit:
    """A fitted factor c on a force spread: the confidence at tolerance T is
    :func:`~ltau_md.core.metrics.gaussian_confidence` of c * spread; ``area`` its
    miscalibration area on the atoms it was fitted on, ``at_bound`` if c hit
    :data:`SPREAD_SCALE_BOUNDS`."""

    scale: float
    area: float
    area_unscaled: float
    at_bound: bool


def spread_calibration(force_std: np.ndarray, abs_error: np.ndarray, atol: float,
                       scale: float = 1.0):
    """Calibration curve (:class:`~ltau_md.core.metrics.CalibrationCurve`) of the Gaussian
    confidences of ``scale * force_std`` (n,) eV/A at tolerance ``atol`` eV/A against the
    errors ``abs_error`` (n,) eV/A."""
    sd = np.maximum(np.asarray(force_std, dtype=np.float64), 1e-12) * float(scale)
    return calibration_curve(gaussian_confidence(sd, atol), within_tolerance(abs_error, atol))


def fit_spread_scale(force_std: np.ndarray, abs_error: np.ndarray, atol: float,
                     n_grid: int = 41, n_refine: int = 10) -> SpreadFit:
    """The factor c on ``force_std`` whose Gaussian confidences at ``atol`` have the smallest
    miscalibration area on these atoms (log grid over :data:`SPREAD_SCALE_BOUNDS`, then a
    finer grid; as :func:`~ltau_md.core.calibration.fit_scale` fits LTAU's s)."""
    within = within_tolerance(abs_error, atol)
    sd = np.maximum(np.asarray(force_std, dtype=np.float64), 1e-12)

    def area_at(c: float) -> float:
        return calibration_curve(gaussian_confidence(sd * c, atol), within).miscalibration_area

    c, area, _, _, at_bound = search_scale(area_at, SPREAD_SCALE_BOUNDS, n_grid, n_refine)
    return SpreadFit(scale=c, area=area, area_unscaled=area_at(1.0), at_bound=at_bound)
