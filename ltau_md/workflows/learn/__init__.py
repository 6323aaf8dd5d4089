"""Active learning with the alarm: explore, select a diverse batch, label, fine-tune, refit.

``ltau-md learn CONFIG.yaml`` and :func:`run_learn` run the loop one iteration at a time in
``ITER_k/`` folders of the loop's own directory, resumable after a kill at any point.
"""

from __future__ import annotations

from ltau_md.workflows.learn._config import (
    ExploreSettings,
    FinetuneSettings,
    LearnConfig,
    SelectSettings,
    load_config,
)
from ltau_md.workflows.learn._loop import STAGES, iteration_dir, run_learn
from ltau_md.workflows.learn._select import (
    SELECTION_METHODS,
    alarm_windows,
    d_optimal_gain,
    d_optimal_selection,
    information_matrices,
)

__all__ = [
    "SELECTION_METHODS",
    "STAGES",
    "ExploreSettings",
    "FinetuneSettings",
    "LearnConfig",
    "SelectSettings",
    "iteration_dir",
    "load_config",
    "run_learn",
    "alarm_windows",
    "d_optimal_gain",
    "d_optimal_selection",
    "information_matrices",
]
