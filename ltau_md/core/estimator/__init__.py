"""The fitted LTAU estimator and its parts: k-NN over training atoms in descriptor space.

- :class:`LTAUEstimator` (``_estimator``): parameters, ``fit``, ``predict``, ``save``/``load``;
  its declared parameter constraints (``_parameters``) and its latent signals (``_signals``:
  ``add_signals``, ``signal_values``);
- FAISS index building and search (``_index``): :func:`check_descriptors`, index kinds;
- k-NN search of query atoms, the broad re-search of novel-looking ones and novelty from the
  neighbours (``_neighbors``);
- novelty references (``_novelty``): :class:`NoveltyReference`, the leave-one-out sample;
- fitted state (``_state``): :class:`FittedState`, set by one setter in ``fit`` and ``load``;
- the scale calibration (``_calibration``): :class:`Calibration` (``calibration_``);
- in-domain alarm statistics (``_alarm_statistics``): :class:`InDomainStatistics`
  (``alarm_statistics_``), which any signal adds to;
- the saved artifact (``_artifact``): format, version, checksummed manifest;
- warm-started search along a trajectory (``_trajectory``): :class:`TrajectoryNeighbors`.
"""

from ltau_md.core.estimator._alarm_statistics import SCALE_DEPENDENT_SIGNALS, InDomainStatistics
from ltau_md.core.estimator._artifact import (
    FORMAT,
    MANIFEST_DIGEST_KEY,
    VERSION,
    manifest_digest,
)
from ltau_md.core.estimator._calibration import Calibration
from ltau_md.core.estimator._estimator import NO_ERROR_LOG, LTAUEstimator
from ltau_md.core.estimator._index import AUTO_HNSW_MIN_ATOMS, INDEX_KINDS, check_descriptors
from ltau_md.core.estimator._neighbors import CONFIRM_MAX_ATOMS
from ltau_md.core.estimator._novelty import (
    LOO_FULL_MAX_ATOMS,
    LOO_SAMPLE_ATOMS,
    LOO_SAMPLE_ATOMS_FLAT,
    NOVELTY_KINDS,
    NoveltyReference,
    loo_sample_size,
)
from ltau_md.core.estimator._prediction import Prediction
from ltau_md.core.estimator._state import FittedState
from ltau_md.core.estimator._trajectory import TrajectoryNeighbors

__all__ = [
    "AUTO_HNSW_MIN_ATOMS",
    "CONFIRM_MAX_ATOMS",
    "Calibration",
    "FORMAT",
    "FittedState",
    "INDEX_KINDS",
    "InDomainStatistics",
    "LOO_FULL_MAX_ATOMS",
    "LOO_SAMPLE_ATOMS",
    "LOO_SAMPLE_ATOMS_FLAT",
    "LTAUEstimator",
    "MANIFEST_DIGEST_KEY",
    "NOVELTY_KINDS",
    "NO_ERROR_LOG",
    "NoveltyReference",
    "Prediction",
    "SCALE_DEPENDENT_SIGNALS",
    "TrajectoryNeighbors",
    "VERSION",
    "check_descriptors",
    "loo_sample_size",
    "manifest_digest",
]
