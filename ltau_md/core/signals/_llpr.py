"""Last-layer prediction rigidity (LLPR) of the training features.

Bigi et al., "A prediction rigidity formalism for low-cost uncertainties in trained neural
networks", Mach. Learn.: Sci. Technol. 5, 045018 (2024). With the per-atom energy linear in
the last-layer features x (NequIP's readout), the Laplace approximation of the readout
weights gives Var E_atom = alpha^2 x^T (X^T X + lambda I)^-1 x, X the training atoms'
features, and for a structure Var E = alpha^2 (sum_i x_i)^T (X^T X + lambda I)^-1 (sum_i x_i).
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real

import numpy as np

from ltau_md.core._param_validation import Interval
from ltau_md.core.exceptions import DataError
from ltau_md.core.signals._base import LatentSignal

__all__ = ["LLPR"]


class LLPR(LatentSignal):
    """Per-atom last-layer prediction rigidity sigma = alpha sqrt(x^T (X^T X + lambda I)^-1 x)
    over all training atoms (the readout is shared by all elements).

    ``alpha_`` (eV/A per unit of rigidity) is 1 until :meth:`fit_regularization` sets it; it
    scales the signal and does not change its ranking.

    Parameters
    ----------
    regularization : float
        lambda relative to the mean eigenvalue of X^T X (so it is scale-free):
        lambda = regularization * trace(X^T X) / D. :meth:`fit_regularization` chooses it
        (and alpha) on held-out atoms with known force errors.
    """

    name = "llpr"
    label = "LLPR last-layer rigidity"
    _parameter_constraints = {"regularization": [Interval(Real, 0, None, closed="neither")]}

    def __init__(self, regularization: float = 1e-6):
        self.regularization = regularization

    def _fit(self, x: np.ndarray, species: np.ndarray) -> None:
        self.gram_ = x.T @ x
        self.alpha_ = 1.0
        self._set_inverse(self.regularization)

    def _set_inverse(self, regularization: float) -> None:
        d = self.gram_.shape[0]
        self.lambda_ = float(regularization * np.trace(self.gram_) / d)
        self.inverse_ = np.linalg.inv(self.gram_ + self.lambda_ * np.eye(d))

    def _score(self, x: np.ndarray, element: int) -> np.ndarray:
        return self.alpha_ * np.sqrt(np.maximum(np.einsum("nd,de,ne->n", x, self.inverse_, x),
                                                0.0))

    def energy_std(self, descriptors: np.ndarray) -> float:
        """Structure energy std (alpha units; eV once alpha is fitted to energies) from the
        structure's atoms' descriptors (n, D): alpha sqrt(s^T (X^T X + lambda I)^-1 s) with s
        the sum of the rows."""
        s = np.asarray(descriptors, dtype=np.float64).sum(axis=0)
        return float(self.alpha_ * np.sqrt(max(s @ self.inverse_ @ s, 0.0)))

    def fit_regularization(self, descriptors: np.ndarray, errors: np.ndarray,
                           grid: tuple[float, ...] = tuple(10.0 ** np.arange(-9, 1))
                           ) -> LLPR:
        """Choose lambda (from ``grid``, relative as ``regularization``) and alpha by the
        Gaussian negative log-likelihood of held-out force errors: each of the 3 components
        of dF ~ N(0, sigma^2), sigma = alpha sqrt(x^T (X^T X + lambda I)^-1 x); alpha in
        closed form for each lambda. ``errors``: |dF| (n,) in eV/A of the atoms whose
        descriptors (n, D) are given. Sets ``regularization_``, ``lambda_``, ``alpha_``."""
        x = np.asarray(descriptors, dtype=np.float64)
        e2 = np.asarray(errors, dtype=np.float64) ** 2
        if x.ndim != 2 or e2.shape != (x.shape[0],) or not np.isfinite(e2).all():
            raise DataError(f"LLPR: held-out descriptors (n, D) and errors (n,) must match and "
                            f"be finite, got {x.shape} and {e2.shape}")
        best = None
        for reg in grid:
            self._set_inverse(reg)
            u = np.maximum(np.einsum("nd,de,ne->n", x, self.inverse_, x), 1e-300)
            alpha2 = float(np.mean(e2 / (3.0 * u)))
            nll = float(np.mean(1.5 * np.log(alpha2 * u) + e2 / (2 * alpha2 * u)))
            if best is None or nll < best[0]:
                best = (nll, reg, alpha2)
        _, reg, alpha2 = best
        self._set_inverse(reg)
        self.regularization_ = float(reg)
        self.alpha_ = float(np.sqrt(alpha2))
        return self

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"gram": self.gram_, "inverse": self.inverse_,
                "scalars": np.array([self.lambda_, self.alpha_])}

    def _from_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.gram_ = np.asarray(arrays["gram"])
        self.inverse_ = np.asarray(arrays["inverse"])
        self.lambda_, self.alpha_ = (float(v) for v in arrays["scalars"])
