"""The latent signals an estimator carries (``signals_``): fitting more on its training
descriptors and scoring query atoms with them."""

from __future__ import annotations

import numpy as np

from ltau_md.core.estimator._index import check_descriptors, stored_rows, stored_vectors
from ltau_md.core.exceptions import DescriptorError, InvalidParameterError
from ltau_md.core.signals import LatentSignal, make_signal
from ltau_md.core.validation import check_is_fitted

__all__ = ["LatentSignalsMixin"]


class LatentSignalsMixin:
    """``add_signals``, ``signal_values``, ``check_signals`` and ``training_descriptors`` of
    :class:`~ltau_md.core.estimator.LTAUEstimator`
    (fitted ``signals_``, ``dim_``, ``n_train_``, ``summary_``)."""

    signals_: dict[str, LatentSignal]

    def training_descriptors(self) -> np.ndarray | None:
        """The training descriptors (N, D) as the index holds them: exactly for the "flat"
        and "hnsw" indexes; None for "ivfpq", which stores compressed codes only."""
        check_is_fitted(self)
        if self.index_kind_ not in ("flat", "hnsw"):
            return None
        stored, rows = stored_vectors(self.index_), stored_rows(self.index_)
        if rows is None:
            return stored.copy()
        out = np.empty_like(stored)
        out[rows] = stored
        return out

    def add_signals(self, descriptors: np.ndarray,
                    signals: tuple[str | LatentSignal, ...] | list) -> LatentSignalsMixin:
        """Fit latent ``signals`` (names of :data:`~ltau_md.core.signals.SIGNAL_CLASSES` or
        configured :class:`~ltau_md.core.signals.LatentSignal` objects) on the training
        descriptors (N, D) (the rows ``fit`` indexed, in the same order) and add them to
        ``signals_`` (replacing one of the same name). In-domain alarm statistics of a
        replaced signal are dropped. Returns ``self``."""
        check_is_fitted(self)
        x = check_descriptors(descriptors, self.dim_)
        if x.shape[0] != self.n_train_:
            raise DescriptorError(f"{x.shape[0]} descriptors given, but the estimator was "
                                  f"fitted on {self.n_train_} training atoms")
        fitted = {}
        for sig in signals:
            obj = make_signal(sig)
            fitted[obj.name] = obj.fit(x, self.train_species_)
        self.alarm_statistics_.drop([n for n in fitted if n in self.signals_])
        self.signals_.update(fitted)
        return self

    def signal_values(self, descriptors: np.ndarray, species: np.ndarray,
                      names: tuple[str, ...] | list | None = None) -> dict[str, np.ndarray]:
        """{name: per-atom score (n,)} of the fitted latent signals ``names`` (default all
        of ``signals_``) for query descriptors (n, D) with atomic numbers (n,)."""
        names = self.check_signals(names)
        return {n: self.signals_[n].score(descriptors, species) for n in names}

    def check_signals(self, names: tuple[str, ...] | list | None = None) -> tuple[str, ...]:
        """``names`` (default: every fitted signal) as a tuple; InvalidParameterError naming
        those not fitted on this estimator."""
        check_is_fitted(self)
        names = tuple(self.signals_ if names is None else names)
        missing = [n for n in names if n not in self.signals_]
        if missing:
            raise InvalidParameterError(f"signals {missing} are not fitted on this estimator "
                                        f"(fitted: {sorted(self.signals_)}); fit them with "
                                        "LTAUEstimator(signals=...) or add_signals")
        return names

