"""How good is the uncertainty? One call that scores LTAU and its baselines on labelled data.

:func:`evaluate` takes the deployed model, its fitted estimator, one labelled in-domain set and
any number of named out-of-domain sets (energies-only sets are fine: detection needs no
labels), optionally extra ensemble members, and reports, for every signal of :data:`SIGNALS`:

* **calibration** - the in-domain set is split by frame into a calibration and an evaluation
  half (:func:`~ltau_md.core.calibration.split_frames`, seeded); s is fitted on the first
  (:func:`~ltau_md.core.calibration.fit_scale`) and the miscalibration area reported on the second,
  at s = 1 and at the fitted s;
* **ranking** (evaluation half, per atom) - Spearman(signal, |dF|) and the AUROC of the signal
  for high-error atoms (|dF| above the evaluation half's 90th percentile), each with a 95 %
  bootstrap interval over frames and its worst element beside it;
* **labelled out-of-domain sets** (all structures with reference forces) - the same ranking,
  high-error meaning above the in-domain threshold, and the miscalibration area at the fitted s;
* **detection** (per out-of-domain set) - AUROC of the frame statistic (max, mean and 90th
  percentile over the free atoms, those the monitor watches: not fixed by FixAtoms;
  :func:`~ltau_md.core.metrics.frame_statistics`; plus the default alarm and any ``alarm_stats``)
  separating the set's frames from the in-domain evaluation frames, with a stratified
  bootstrap interval over frames; mean and worst over the sets;
* **alarms** - the conformal threshold (:func:`~ltau_md.core.metrics.alarm_threshold`) at
  ``alarm_rate`` fitted on the calibration frames, the rate at which held-out in-domain frames
  exceed it (for this split, and mean / worst / 95th percentile over 200 random splits, since
  one split of a few hundred frames is noisy) and the rate for every out-of-domain set;
* **cost per step** - the deployed model's forward pass, the LTAU query, a full
  :class:`~ltau_md.core.calculator.LTAUCalculator` step and the ensemble (medians of interleaved
  timing rounds on the first in-domain structure, jittered every call).

The caller's estimator is not changed: the calibration and alarm thresholds are fitted on a
copy, reported under ``"calibration"`` and ``"alarms"``. With ``out`` the report is written
as strict JSON (``evaluation.json``, no NaN: undefined values are null) with figures
(calibration curves, ROC per out-of-domain set, error vs uncertainty) and the calibrated
copy of the estimator (s and alarm statistics of the calibration half, ``estimator/``), into
an output directory of kind "evaluate" (:func:`~ltau_md.core.files.output_dir`).
"""

from ltau_md.workflows.evaluation._data import SIGNALS
from ltau_md.workflows.evaluation._evaluate import (
    EVALUATE_CONSTRAINTS,
    FRAME_STATS,
    OUTPUT_KIND,
    add_missing_signals,
    evaluate,
)

__all__ = ["EVALUATE_CONSTRAINTS", "FRAME_STATS", "OUTPUT_KIND", "SIGNALS",
           "add_missing_signals", "evaluate"]
