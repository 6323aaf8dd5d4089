"""What the estimator returns per query atom (:class:`Prediction`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Prediction"]


@dataclass
class Prediction:
    """Per query atom: confidence p (at atol*s), its spread over members, uncertainty 1 - p,
    predicted error (eV/A), the k nearest training atoms (distances in descriptor units),
    ``novelty`` (latent distance to the training set relative to the in-domain scale: about 1
    or less in domain, larger for atoms unlike the training atoms) and ``novelty_pvalue`` (the
    fraction of training atoms of the same element whose own leave-one-out novelty is at
    least as large: small = unusual); ``s`` is the scale the confidences were read at."""

    confidence: np.ndarray
    confidence_std: np.ndarray
    uncertainty: np.ndarray
    predicted_error: np.ndarray
    distances: np.ndarray
    indices: np.ndarray
    novelty: np.ndarray
    novelty_pvalue: np.ndarray
    s: float | None = None
