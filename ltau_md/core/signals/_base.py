"""The interface every latent-space signal implements, and its per-element helpers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ltau_md.core._param_validation import validate_params
from ltau_md.core.exceptions import DescriptorError, NotFittedError

__all__ = ["LatentSignal"]


class LatentSignal:
    """A per-atom out-of-domain score from the model's latent features, fitted on the
    training atoms without retraining; higher = farther from the training data.

    Subclasses declare ``name`` (the result key, e.g. ``"gmm"``), ``_parameter_constraints``,
    ``_fit(x, species)`` (sets the fitted state, names ending in ``_``), ``_score(x,
    species)`` and the state they save as arrays (``_state_arrays`` / ``_from_arrays``).
    Parameters are stored as given; ``fit`` checks them (InvalidParameterError).
    """

    #: the result key and the SIGNAL part of its statistics' names (``gmm:max``)
    name: ClassVar[str] = ""
    #: what reports call it
    label: ClassVar[str] = ""
    _parameter_constraints: ClassVar[dict] = {}

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._parameter_constraints}

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "species_")

    def fit(self, descriptors: np.ndarray, species: np.ndarray) -> LatentSignal:
        """Fit on the training atoms' descriptors (N, D) and atomic numbers (N,)."""
        validate_params(self._parameter_constraints, self.get_params(),
                        owner=type(self).__name__)
        x = np.asarray(descriptors, dtype=np.float64)
        z = np.asarray(species, dtype=np.int64)
        if x.ndim != 2 or x.shape[0] == 0 or not np.isfinite(x).all():
            raise DescriptorError(f"{self.name}: training descriptors must be a finite (N, D) "
                                  f"array with N > 0, got shape {x.shape}")
        if z.shape != (x.shape[0],):
            raise DescriptorError(f"{self.name}: species has shape {z.shape}, expected "
                                  f"({x.shape[0]},)")
        self._fit(x, z)
        self.dim_ = int(x.shape[1])
        self.species_ = sorted(int(e) for e in np.unique(z))
        return self

    def score(self, descriptors: np.ndarray, species: np.ndarray) -> np.ndarray:
        """Per-atom score (n,) of query descriptors (n, D) with atomic numbers (n,); +inf for
        an element outside the training species (as novel as can be: any alarm on the signal
        fires, as LTAU novelty's p-value 0 does)."""
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit")
        x = np.asarray(descriptors, dtype=np.float64)
        z = np.asarray(species, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != self.dim_ or z.shape != (x.shape[0],):
            raise DescriptorError(f"{self.name}: expected descriptors (n, {self.dim_}) and "
                                  f"species (n,), got {x.shape} and {z.shape}")
        out = np.full(x.shape[0], np.inf)
        for e in np.unique(z):
            if int(e) in self.species_:
                m = z == e
                out[m] = self._score(x[m], int(e))
        return out

    # -- persistence: parameters (JSON) and arrays -------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able parameters and scalars, named arrays) of a fitted signal."""
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit")
        return ({"params": self.get_params(), "dim": self.dim_, "species": self.species_},
                self._state_arrays())

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                   ) -> LatentSignal:
        """The fitted signal :meth:`state` described."""
        obj = cls(**meta["params"])
        validate_params(obj._parameter_constraints, obj.get_params(), owner=cls.__name__)
        obj.dim_ = int(meta["dim"])
        obj.species_ = [int(e) for e in meta["species"]]
        obj._from_arrays(arrays)
        return obj

    # -- for subclasses -------------------------------------------------------------------
    def _fit(self, x: np.ndarray, species: np.ndarray) -> None:
        raise NotImplementedError

    def _score(self, x: np.ndarray, element: int) -> np.ndarray:
        raise NotImplementedError

    def _state_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _from_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError


def per_element_arrays(prefix: str, per_element: Mapping[int, Mapping[str, np.ndarray]]
                       ) -> dict[str, np.ndarray]:
    """Flatten {Z: {name: array}} into {"prefix.Z.name": array} for saving."""
    return {f"{prefix}.{z}.{k}": np.asarray(v) for z, d in per_element.items()
            for k, v in d.items()}


def element_arrays(prefix: str, arrays: Mapping[str, np.ndarray]
                   ) -> dict[int, dict[str, np.ndarray]]:
    """The inverse of :func:`per_element_arrays`."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for key, v in arrays.items():
        p, z, k = key.split(".", 2)
        if p == prefix:
            out.setdefault(int(z), {})[k] = np.asarray(v)
    return out
