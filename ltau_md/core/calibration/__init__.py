"""Calibrating LTAU confidences: fitting the tolerance scale s, evaluating the calibration.

Convention. The estimator's confidence p_j at scale s is the mean over the k nearest training
atoms of the fraction of their logged training errors <= atol*s (+ rtol*|F_i|). Calibrated, it
is read as the probability that the deployed model's force error on atom j is within a *fixed
target tolerance* T (:func:`target_tolerance`: the one given, else the fitted calibration's,
else the estimator's atol; the same default in :func:`fit_scale` and
:func:`evaluate_calibration`):

    P(|F_j,ref - F_j,model|_2 <= T + rtol*|F_j,ref|) = p_j(s).

s only scales the tolerance at which the training-error distributions are read; it absorbs the
gap between training-time and test-time errors (test errors c times the logged training errors
give s = 1/c). This is the convention of the LTAU paper's code, which compares the logged
errors at atol with test errors at atol*s (their s is our 1/s). The alternative, judging the
outcome at the same tolerance atol*s that p is computed at (``outcome="scaled"`` in
:func:`evaluate_calibration`), cannot be *fitted*: for s -> 0 every p -> 0 and every error is
out of tolerance, for s -> oo every p -> 1 and every error is within it, so both extremes are
trivially perfectly calibrated and minimising the area runs to a bound of the search.

Calibration curves and the miscalibration area are defined in :mod:`ltau_md.core.metrics`
(:func:`~ltau_md.core.metrics.calibration_curve`).

:func:`fit_scale` finds s on a calibration split by a log-spaced grid search over s followed by
a finer grid around the best point, re-scoring the neighbours of a single FAISS search with
:meth:`LTAUEstimator.confidence_from_neighbors`. It sets the result as the estimator's fitted
calibration, ``estimator.calibration_`` (:class:`~ltau_md.core.estimator.Calibration`: s, T,
per-group s, areas, counts), which ``save`` writes to the manifest's ``"calibration"`` section.
The estimator's ``s`` parameter is left alone: None (the default) means "use the calibration".

:func:`fit_alarm_thresholds` and the ``alarm_statistics_from_*`` functions add in-domain frame
statistics to ``estimator.alarm_statistics_``
(:class:`~ltau_md.core.estimator.InDomainStatistics`), a separate fitted object that any signal
adds to and that ``Threshold(alarm_rate=...)`` reads.

Modules: ``_common`` (estimator glue, target tolerance), ``_evaluate`` (calibration curves of
an estimator), ``_scale`` (fitting s), ``_structures`` (calibrating on labelled structures),
``_alarms`` (in-domain alarm statistics), ``_spread`` (a Gaussian force spread's factor,
:func:`fit_spread_scale`, fitted like s, for ensembles and heads).
"""

from ltau_md.core.calibration._alarms import (
    DEFAULT_ALARM,
    DEFAULT_ALARM_STATS,
    DEFAULT_SIGNALS,
    FALLBACK_ALARM,
    FALLBACK_ALARMS,
    alarm_statistics_from_structures,
    alarm_statistics_from_training,
    check_statistic_signals,
    check_training_statistics,
    default_alarm,
    fit_alarm_thresholds,
    tags_and_free,
)
from ltau_md.core.calibration._common import target_tolerance
from ltau_md.core.calibration._evaluate import evaluate_calibration
from ltau_md.core.calibration._scale import FIT_SCALE_CONSTRAINTS, ScaleFit, fit_scale
from ltau_md.core.calibration._spread import SpreadFit, fit_spread_scale, spread_calibration
from ltau_md.core.calibration._structures import calibrate_structures, split_frames

__all__ = [
    "DEFAULT_ALARM",
    "DEFAULT_ALARM_STATS",
    "DEFAULT_SIGNALS",
    "FALLBACK_ALARM",
    "FALLBACK_ALARMS",
    "FIT_SCALE_CONSTRAINTS",
    "ScaleFit",
    "SpreadFit",
    "alarm_statistics_from_structures",
    "alarm_statistics_from_training",
    "calibrate_structures",
    "check_statistic_signals",
    "check_training_statistics",
    "default_alarm",
    "evaluate_calibration",
    "fit_alarm_thresholds",
    "fit_scale",
    "fit_spread_scale",
    "split_frames",
    "spread_calibration",
    "tags_and_free",
    "target_tolerance",
]
