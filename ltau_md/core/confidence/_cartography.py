"""Dataset cartography (LTAU paper, App. E): training atoms labelled easy / ambiguous / hard
from mu_M(p_i) and sigma_M(p_i) over ensemble members."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ltau_md.core.confidence._summary import ErrorSummary
from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.validation import check_is_fitted

if TYPE_CHECKING:
    from ltau_md.core.estimator import LTAUEstimator

__all__ = ["CARTOGRAPHY_LABELS", "Cartography", "cartography", "cartography_from"]


CARTOGRAPHY_LABELS = ("easy", "ambiguous", "hard")


@dataclass
class Cartography:
    """Dataset cartography of training atoms: ``mu`` = mu_M(p_i), ``sigma`` = sigma_M(p_i)
    over ensemble members, ``labels`` (n,) int codes into :data:`CARTOGRAPHY_LABELS`
    (0 easy, 1 ambiguous, 2 hard), ``weights`` (n,) suggested resampling weights (mean 1),
    and the thresholds used."""

    mu: np.ndarray
    sigma: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    sigma_threshold: float
    mu_threshold: float

    def label_names(self) -> np.ndarray:
        return np.asarray(CARTOGRAPHY_LABELS)[self.labels]

    def fractions(self) -> dict[str, float]:
        """Fraction of atoms per label, in the order of :data:`CARTOGRAPHY_LABELS`."""
        n = max(self.labels.size, 1)
        return {name: float(np.sum(self.labels == i) / n)
                for i, name in enumerate(CARTOGRAPHY_LABELS)}


def cartography(
    mu: np.ndarray,
    sigma: np.ndarray,
    *,
    ambiguous_quantile: float = 2.0 / 3.0,
    min_ambiguous_sigma: float = 0.05,
    mu_threshold: float = 0.5,
) -> Cartography:
    """Label training atoms from their ensemble mean mu and spread sigma of p (Swayamdipta et
    al. 2020 cartography applied to LTAU, paper App. E).

    ambiguous: sigma >= max(quantile(sigma, ``ambiguous_quantile``), ``min_ambiguous_sigma``)
    (members disagree); otherwise easy if mu >= ``mu_threshold`` else hard (consistently
    learnt / consistently not learnt). weights = (1 - mu) + sigma normalised to mean 1
    (uniform if all zero): emphasis for hard and ambiguous atoms when resampling.
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or mu.shape != sigma.shape or mu.size == 0:
        raise DataError(f"mu and sigma must be non-empty 1-D of equal shape, got {mu.shape}, "
                        f"{sigma.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise DataError("mu/sigma contain NaN/inf")
    if not 0 <= ambiguous_quantile <= 1:
        raise InvalidParameterError(
            f"ambiguous_quantile must be in [0, 1], got {ambiguous_quantile}")
    thr = max(float(np.quantile(sigma, ambiguous_quantile)), float(min_ambiguous_sigma))
    amb = (sigma >= thr) & (sigma > 0)
    labels = np.where(amb, 1, np.where(mu >= mu_threshold, 0, 2)).astype(np.int8)
    w = (1.0 - mu) + sigma
    w = w / w.mean() if w.sum() > 0 else np.ones_like(w)
    return Cartography(mu=mu, sigma=sigma, labels=labels, weights=w, sigma_threshold=thr,
                       mu_threshold=float(mu_threshold))


def cartography_from(source: LTAUEstimator | ErrorSummary, s: float | None = None,
                     **kwargs: Any) -> Cartography:
    """:func:`cartography` of the training atoms of a fitted estimator or an ErrorSummary at
    tolerance atol*s (default: the estimator's scale ``scale_``, or 1 for a summary)."""
    if isinstance(source, ErrorSummary):
        summary, s = source, 1.0 if s is None else s
    else:
        check_is_fitted(source)
        summary, s = source.summary_, source.scale_ if s is None else s
    mu, sigma = summary.confidence(float(s))
    return cartography(mu, sigma, **kwargs)
