"""Latent-space uncertainty signals of the literature, fitted on the training atoms' features
without retraining, each a per-atom score (higher = less trusted):

- :class:`GMMDensity` (``"gmm"``): per-element Gaussian-mixture negative log-likelihood;
- :class:`GaussianDensity` (``"gaussian"``): the same with one Gaussian per element
  (a Mahalanobis distance);
- :class:`DOptimality` (``"doptimality"``): ACE/MTP's MaxVol extrapolation grade gamma;
- :class:`ClusteredDOptimality` (``"clustered_doptimality"``): gamma in k-means clusters;
- :class:`LLPR` (``"llpr"``): last-layer prediction rigidity.

:data:`SIGNAL_CLASSES` maps each name to its class (the one list of them);
:func:`make_signal` builds one by name. An estimator fits them with ``signals=`` or
:meth:`~ltau_md.core.estimator.LTAUEstimator.add_signals` and saves them in its artifact; the
calculator returns them with ``LTAUCalculator(signals=...)``.
"""

from __future__ import annotations

from ltau_md.core.exceptions import InvalidParameterError
from ltau_md.core.signals._base import LatentSignal
from ltau_md.core.signals._doptimality import ClusteredDOptimality, DOptimality, maxvol
from ltau_md.core.signals._gmm import GaussianDensity, GMMDensity
from ltau_md.core.signals._llpr import LLPR

__all__ = ["LLPR", "SIGNAL_CLASSES", "ClusteredDOptimality", "DOptimality", "GMMDensity",
           "GaussianDensity", "LatentSignal", "make_signal", "maxvol"]

#: name -> class of every latent signal
SIGNAL_CLASSES: dict[str, type[LatentSignal]] = {
    c.name: c for c in (GMMDensity, GaussianDensity, DOptimality, ClusteredDOptimality, LLPR)}


def make_signal(signal: str | LatentSignal) -> LatentSignal:
    """A new (unfitted) signal of name ``signal`` with default parameters, or ``signal``
    itself if it is a :class:`LatentSignal`."""
    if isinstance(signal, LatentSignal):
        return signal
    if signal not in SIGNAL_CLASSES:
        raise InvalidParameterError(f"unknown signal {signal!r}; known: "
                                    f"{sorted(SIGNAL_CLASSES)}")
    return SIGNAL_CLASSES[signal]()
