"""``ltau-md demo``: the whole journey on built-in EMT data, no files needed.

1. generate an OC20-style adsorbate/slab data set with EMT as the reference
(ltau_md.workflows.is2rs),
2. train a small NequIP ensemble with the LTAU error-logging callback (real ``nequip-train``),
3. fit the LTAU estimator (``fit_from_runs``),
4. (a) relax structures with per-step uncertainty logging,
   (b) run MD that is halted when the default alarm (``STATISTIC``) crosses its 1 % threshold,
       and one that resamples with the EMT oracle,
   (c) run a small IS2RS campaign relating the uncertainty to the relaxation RMSD,
5. write ``report.html`` with the plots and a summary table (and ``report.json``).

The package holds the pipeline (:mod:`._run`: :func:`run_demo` and its stages), the report
renderer (:mod:`._report`: figures and ``report.html``) and the page skeleton
``report_template.html``; the public names are importable from here.
"""

from __future__ import annotations

from ltau_md.workflows.demo._report import (
    RUN_NAMES,
    SPLIT_NAMES,
    SPLIT_WORDS,
    STATISTIC,
    human_duration,
    render_report,
)
from ltau_md.workflows.demo._run import (
    MD_FRICTION,
    MD_RESAMPLE,
    MD_STOP,
    RESAMPLE_RATE,
    STOP_RATE,
    TYPE_NAMES,
    VAL_FRAMES_PER_SYSTEM,
    run_demo,
)

__all__ = [
    "MD_FRICTION",
    "MD_RESAMPLE",
    "MD_STOP",
    "RESAMPLE_RATE",
    "RUN_NAMES",
    "SPLIT_NAMES",
    "SPLIT_WORDS",
    "STATISTIC",
    "STOP_RATE",
    "TYPE_NAMES",
    "VAL_FRAMES_PER_SYSTEM",
    "human_duration",
    "render_report",
    "run_demo",
]

