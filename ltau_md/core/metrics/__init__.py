"""Uncertainty-quantification metrics on plain arrays (numpy/scipy only).

* :func:`spearman` - rank correlation (ties get average ranks), e.g. uncertainty vs |error|.
* :func:`auroc` - area under the ROC curve as the Mann-Whitney U statistic (ties count 1/2),
  e.g. structure uncertainty as a detector of out-of-domain structures.
* :func:`miscalibration_area` - area between a calibration curve and the diagonal.
* :func:`calibration_curve` (-> :class:`CalibrationCurve`) - confidences binned against
  within-tolerance outcomes; :func:`within_tolerance` and :func:`force_error_norm` give the
  outcomes from force errors in eV/A.
* :func:`binned_error_calibration` - error-based calibration of a predicted error in eV/A
  (bins by predicted error, RMSE of the observed error per bin, ENCE summary).
* :func:`aggregate_by_frame` - per-structure max/mean of per-atom values.
* :func:`frame_statistic` / :func:`frame_statistics` - a structure's max, mean or quantile of a
  per-atom signal over selected atoms (:func:`selection_mask`: mask, indices or OC20 tags),
  named by :func:`stat_key` (e.g. "novelty:max@tags=2"); :func:`alarm_threshold` - the
  conformal threshold that in-domain frames exceed at a chosen alarm rate;
  :func:`fit_combined` / :func:`combined_statistics` - several statistics combined as in-domain
  tail p-values (Fisher), optionally normalised per element ("gmm+clustered_doptimality/element").

Miscalibration area (the number reported everywhere in ltau-md, and minimised by
:func:`ltau_md.core.calibration.fit_scale`): the area between the calibration curve and the
diagonal,
*weighted by bin population*, i.e. sum_b n_b |observed_b - mean_confidence_b| / n (the expected
calibration error; it tends to int |P(ok | p) - p| dF(p) as bins shrink). Population weighting
measures the area along the distribution of the predictions, so it cannot be lowered by
squeezing all confidences into a narrow band, which an unweighted integral over the populated
range allows. The uncertainty-toolbox style integrated area, int |observed(x) - x| dx over the
populated span, is reported alongside as ``integrated_area``. Both are 0 for a perfectly
calibrated predictor, up to sampling noise (about 0.8 * sqrt(p(1-p)/n_b) per bin).

Modules: ``_ranking`` (Spearman, AUROC), ``_calibration`` (calibration curves, miscalibration
area, error-based calibration), ``_selection`` (atom selections), ``_frame_statistics``
(per-structure statistics), ``_stat_key`` (statistic names), ``_alarm`` (the conformal alarm
threshold), ``_combined`` (combined statistics), ``_bootstrap`` (row-wise metrics, bootstrap
intervals); ``_arrays`` (input checks).
"""

from ltau_md.core.metrics._alarm import (
    MIN_TAIL_COUNT,
    TAIL_FRACTION,
    PredictiveTail,
    alarm_off_reason,
    alarm_threshold,
    alarm_thresholds_rows,
    frames_needed,
)
from ltau_md.core.metrics._bootstrap import auroc_rows as auroc_rows
from ltau_md.core.metrics._bootstrap import auroc_weighted as auroc_weighted
from ltau_md.core.metrics._bootstrap import bootstrap_ci as bootstrap_ci
from ltau_md.core.metrics._bootstrap import rank_rows as rank_rows
from ltau_md.core.metrics._bootstrap import spearman_rows as spearman_rows
from ltau_md.core.metrics._bootstrap import spearman_weighted as spearman_weighted
from ltau_md.core.metrics._bootstrap import weighted_ranks as weighted_ranks
from ltau_md.core.metrics._calibration import (
    BinnedErrorCalibration,
    CalibrationCurve,
    binned_error_calibration,
    calibration_curve,
    force_error_norm,
    gaussian_confidence,
    gaussian_force_nll,
    miscalibration_area,
    within_tolerance,
)
from ltau_md.core.metrics._calibration import Binning as Binning
from ltau_md.core.metrics._combined import (
    COMBINE,
    ELEMENT,
    P_FLOOR,
    TailReference,
    combined_components,
    combined_statistics,
    element_normalised,
    fit_combined,
    is_combined,
    own_frame_counts,
    prepare_reference,
    statistic_signals,
    tail_pvalue,
)
from ltau_md.core.metrics._frame_statistics import (
    FRAME_STATISTICS,
    aggregate_by_frame,
    frame_statistic,
    frame_statistics,
)
from ltau_md.core.metrics._ranking import auroc, spearman
from ltau_md.core.metrics._selection import parse_selection, selection_mask
from ltau_md.core.metrics._stat_key import parse_stat_key, stat_key

__all__ = [
    "COMBINE",
    "ELEMENT",
    "P_FLOOR",
    "TailReference",
    "combined_components",
    "combined_statistics",
    "element_normalised",
    "fit_combined",
    "is_combined",
    "own_frame_counts",
    "prepare_reference",
    "statistic_signals",
    "tail_pvalue",
    "MIN_TAIL_COUNT",
    "TAIL_FRACTION",
    "PredictiveTail",
    "FRAME_STATISTICS",
    "BinnedErrorCalibration",
    "CalibrationCurve",
    "aggregate_by_frame",
    "alarm_off_reason",
    "alarm_threshold",
    "alarm_thresholds_rows",
    "frames_needed",
    "auroc",
    "binned_error_calibration",
    "calibration_curve",
    "force_error_norm",
    "frame_statistic",
    "frame_statistics",
    "gaussian_confidence",
    "gaussian_force_nll",
    "miscalibration_area",
    "parse_selection",
    "parse_stat_key",
    "selection_mask",
    "spearman",
    "stat_key",
    "within_tolerance",
]
