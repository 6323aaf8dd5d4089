"""ltau-md: per-atom LTAU uncertainty for machine-learned molecular simulations.

Data flow: training logs errors (:mod:`ltau_md.errorlog`) -> errors become per-atom confidence
(:mod:`ltau_md.confidence`) -> confidence plus descriptors become a fitted estimator
(:mod:`ltau_md.estimator`) -> the ASE calculator asks the estimator (:mod:`ltau_md.calculator`)
-> observers judge the answers (:mod:`ltau_md.observers`).
"""

from __future__ import annotations

from ._version import __version__
from .calculator import LTAUCalculator
from .confidence import ErrorSummary
from .errorlog import ErrorLog, dataset_fingerprint
from .estimator import Calibration, LTAUEstimator, Prediction
from .exceptions import (
    ArtifactError,
    DataError,
    DescriptorError,
    InvalidParameterError,
    LTAUError,
    NotFittedError,
    OutputExistsError,
    SpeciesError,
)
from .observers import Event, Threshold, UQMonitor

__all__ = [
    "ArtifactError",
    "Calibration",
    "DataError",
    "DescriptorError",
    "ErrorLog",
    "ErrorSummary",
    "Event",
    "InvalidParameterError",
    "LTAUCalculator",
    "LTAUError",
    "LTAUEstimator",
    "NotFittedError",
    "OutputExistsError",
    "Prediction",
    "SpeciesError",
    "Threshold",
    "UQMonitor",
    "__version__",
    "dataset_fingerprint",
]
