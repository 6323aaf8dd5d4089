"""Gaussian-mixture density of the training atoms' latent features, per element, and its
one-component case, a single Gaussian per element.

Zhu et al., "Fast uncertainty estimates in deep learning interatomic potentials", J. Chem.
Phys. 158, 164111 (2023) (a GMM on NequIP features); Tan et al., npj Comput. Mater. 9, 225
(2023) found it the best single-model signal out of domain. One Gaussian per class of a
network's features: Lee et al., "A simple unified framework for detecting out-of-distribution
samples and adversarial attacks", NeurIPS 2018 (the Mahalanobis distance).
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np

from ltau_md.core._param_validation import Interval, Satisfies
from ltau_md.core.signals._base import LatentSignal, element_arrays, per_element_arrays

__all__ = ["GMMDensity", "GaussianDensity"]


def _component_counts(v) -> bool:
    return (isinstance(v, (tuple, list)) and len(v) > 0
            and all(isinstance(c, Integral) and not isinstance(c, bool) and c >= 1 for c in v))


class GMMDensity(LatentSignal):
    """Per-atom negative log-likelihood of a per-element Gaussian mixture over the training
    atoms' standardised latent features (full covariances; the number of components chosen
    by BIC among ``n_components``).

    Parameters
    ----------
    n_components : tuple of int
        Candidate component counts; counts above N / (4 (D + 1)) for an element with N
        training atoms are skipped (at least 1 is always tried).
    max_atoms : int
        At most this many training atoms per element fit the mixture (a seeded subsample).
    reg_covar : float
        Added to the covariance diagonals (standardised units), as scikit-learn's.
    seed : int
        Seed of the subsample and of the mixture's initialisation.

    Score: NLL(x) = -log sum_k w_k N(x_std; mu_k, Sigma_k), x_std = (x - mean_Z) / std_Z
    (dimensionless nats; higher = less likely under the training density of the element).
    """

    name = "gmm"
    label = "GMM negative log-likelihood (per element)"
    _parameter_constraints = {
        "n_components": [Satisfies(_component_counts, "a non-empty tuple of ints >= 1")],
        "max_atoms": [Interval(Integral, 10, None, closed="left")],
        "reg_covar": [Interval(Real, 0, None, closed="neither")],
        "seed": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, n_components: tuple[int, ...] = (1, 2, 4, 8, 16),
                 max_atoms: int = 20000, reg_covar: float = 1e-4, seed: int = 0):
        self.n_components = n_components
        self.max_atoms = max_atoms
        self.reg_covar = reg_covar
        self.seed = seed

    def _fit(self, x: np.ndarray, species: np.ndarray) -> None:
        from sklearn.mixture import GaussianMixture

        rng = np.random.default_rng(self.seed)
        self.elements_: dict[int, dict[str, np.ndarray]] = {}
        for z in np.unique(species):
            xz = x[species == z]
            if xz.shape[0] > self.max_atoms:
                xz = xz[rng.choice(xz.shape[0], self.max_atoms, replace=False)]
            mean, std = xz.mean(axis=0), xz.std(axis=0)
            std = np.where(std > 1e-12 * max(float(std.max()), 1e-300), std, 1.0)
            xs = (xz - mean) / std
            n, d = xs.shape
            counts = sorted({c for c in self.n_components if c <= n / (4 * (d + 1))} or {1})
            best, best_bic = None, np.inf
            for c in counts:
                gm = GaussianMixture(c, covariance_type="full", reg_covar=self.reg_covar,
                                     random_state=self.seed, max_iter=200).fit(xs)
                bic = gm.bic(xs)
                if bic < best_bic:
                    best, best_bic = gm, bic
            self.elements_[int(z)] = {
                "mean": mean, "std": std, "weights": best.weights_, "means": best.means_,
                "precisions_cholesky": best.precisions_cholesky_,
                "bic": np.array([best_bic]),
            }

    @property
    def chosen_components_(self) -> dict[int, int]:
        """{Z: the number of mixture components BIC chose}."""
        return {z: int(e["weights"].size) for z, e in self.elements_.items()}

    def _score(self, x: np.ndarray, element: int) -> np.ndarray:
        w, b, const = self._folded(element)
        k = const.size
        y = x @ w + b                                             # (n, K*D)
        log_wp = const[None, :] - 0.5 * (y * y).reshape(x.shape[0], k, -1).sum(axis=2)
        top = log_wp.max(axis=1)
        return -(top + np.log(np.exp(log_wp - top[:, None]).sum(axis=1)))

    def _folded(self, element: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The standardisation and every component's whitening folded into one affine map
        x -> y (n, K*D) and the per-component constants log w_k + log det P_k -
        D/2 log(2 pi), so a score is one matrix product (cached per element)."""
        cache = self.__dict__.setdefault("_folded_cache", {})
        if element not in cache:
            e = self.elements_[element]
            pc = e["precisions_cholesky"]                          # (K, D, D)
            k, d, _ = pc.shape
            scaled = pc / e["std"][None, :, None]                  # diag(1/std) P_k
            w = scaled.transpose(1, 0, 2).reshape(d, k * d)
            b = -(np.einsum("d,kde->ke", e["mean"], scaled)
                  + np.einsum("kd,kde->ke", e["means"], pc)).reshape(k * d)
            log_det = np.log(np.diagonal(pc, axis1=1, axis2=2)).sum(axis=1)
            const = np.log(e["weights"]) + log_det - 0.5 * d * np.log(2 * np.pi)
            cache[element] = (w, b, const)
        return cache[element]

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return per_element_arrays("e", self.elements_)

    def _from_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.elements_ = element_arrays("e", arrays)


class GaussianDensity(GMMDensity):
    """Per-atom negative log-likelihood of one Gaussian per element over the training atoms'
    standardised latent features: half the squared Mahalanobis distance from the element's
    training mean plus the element's normalising constant (:class:`GMMDensity` with one
    component, full covariance).

    Parameters
    ----------
    max_atoms, reg_covar, seed
        As :class:`GMMDensity`'s.

    Score: NLL(x) = 0.5 (x_std - mu)^T Sigma^-1 (x_std - mu) + 0.5 log det(2 pi Sigma)
    (dimensionless nats), Sigma the training atoms' covariance + ``reg_covar`` I.

    Where a mixture's components fit the training atoms closely, a held-out in-domain atom
    between them scores high; one Gaussian does not (on acetylacetone it ranks proton-transfer
    frames best of every signal; docs: Benchmarks).
    """

    name = "gaussian"
    label = "Gaussian negative log-likelihood (per element; Mahalanobis)"
    _parameter_constraints = {k: v for k, v in GMMDensity._parameter_constraints.items()
                              if k != "n_components"}

    def __init__(self, max_atoms: int = 20000, reg_covar: float = 1e-4, seed: int = 0):
        super().__init__((1,), max_atoms, reg_covar, seed)
