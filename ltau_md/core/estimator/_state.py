"""The fitted state of an estimator, as one record: what ``fit`` learns and ``load`` reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import faiss

from ltau_md.core.confidence import ErrorSummary
from ltau_md.core.estimator._alarm_statistics import InDomainStatistics
from ltau_md.core.estimator._calibration import Calibration
from ltau_md.core.estimator._novelty import NoveltyReference
from ltau_md.core.signals import LatentSignal

__all__ = ["FittedState"]


@dataclass
class FittedState:
    """Everything an :class:`~ltau_md.core.estimator.LTAUEstimator` learns: the FAISS index
    over the training descriptors and its kind, the error summary of the training atoms, the
    novelty reference, the scale calibration (None until calibrated), the in-domain alarm
    statistics (empty until fitted) and the fitted latent signals (name -> signal)."""

    index: faiss.Index
    index_kind: str
    summary: ErrorSummary | None
    novelty: NoveltyReference
    calibration: Calibration | None = None
    alarm_statistics: InDomainStatistics = field(default_factory=InDomainStatistics)
    signals: dict[str, LatentSignal] = field(default_factory=dict)
