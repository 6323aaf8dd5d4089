"""``ltau-md demo``: the whole journey on built-in EMT data, no files needed.

1. generate an OC20-style adsorbate/slab data set with EMT as the reference
(ltau_md.workflows.is2rs),
2. train a small NequIP ensemble with the LTAU error-logging callback (real ``nequip-train``),
3. fit the LTAU estimator (``fit_from_runs``),
4. (a) relax structures with per-step uncertainty logging,
   (b) run MD that is halted when the uncertainty crosses a threshold, and one that resamples
       with the EMT oracle,
   (c) run a small IS2RS campaign relating the uncertainty to the relaxation RMSD,
5. write ``report.html`` with the plots and a summary table (and ``report.json``).

The package holds the pipeline (:mod:`._run`: :func:`run_demo` and its stages), the report
renderer (:mod:`._report`: figures and ``report.html``) and the page skeleton
``report_template.html``; every name is importable from here as before.
"""

from __future__ import annotations

from ltau_md.workflows.demo._report import (  # noqa: F401 - the private ones for callers
    RUN_NAMES,
    SPLIT_NAMES,
    SPLIT_WORDS,
    STATISTIC,
    _auroc_cell,
    _figures,
    _hms,
    _html,
    _nan,
    _num,
    _rate_words,
    _read_steps,
    _stop_words,
    _table,
    _with_ci,
)
from ltau_md.workflows.demo._run import (  # noqa: F401 - the private ones for callers
    MD_FRICTION,
    MD_RESAMPLE,
    MD_STOP,
    RESAMPLE_RATE,
    STOP_RATE,
    TYPE_NAMES,
    VAL_FRAMES_PER_SYSTEM,
    _alarm_policy,
    _ci,
    _count_frames,
    _epochs_logged,
    _md_brief,
    _Progress,
    _say,
    _sizes,
    _split_brief,
    _system_words,
    _train_ensemble,
    run_demo,
)

__all__ = [
    "MD_FRICTION",
    "MD_RESAMPLE",
    "MD_STOP",
    "RUN_NAMES",
    "SPLIT_NAMES",
    "SPLIT_WORDS",
    "STATISTIC",
    "TYPE_NAMES",
    "VAL_FRAMES_PER_SYSTEM",
    "run_demo",
]

