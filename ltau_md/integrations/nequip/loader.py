"""Load a deployed NequIP model and a saved estimator into an :class:`LTAUCalculator`."""

from __future__ import annotations

import os
from typing import Any

from ltau_md.core.calculator import LTAUCalculator
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import DescriptorError

__all__ = [
    "load_calculator",
]


def load_calculator(model: str | os.PathLike, estimator: str | os.PathLike, *,
                    device: str = "cpu", s: float | None = None,
                    chemical_species_to_atom_type_map: dict[str, str] | None = None,
                    **kwargs: Any) -> LTAUCalculator:
    """An :class:`~ltau_md.core.calculator.LTAUCalculator` from a NequIP model file (``.ckpt`` or
    ``nequip-package`` ``.nequip.zip``) and an estimator directory saved by
    :meth:`LTAUEstimator.save`. ``kwargs`` go to the calculator (``warm_start``, ``jump``).

    Picklable through ``functools.partial(load_calculator, model=..., estimator=...)``, which is
    how the IS2RS campaign builds one calculator per dask worker."""
    from ltau_md.integrations.nequip.model import NequIPFeatureModel

    est = LTAUEstimator.load(estimator)
    fm = NequIPFeatureModel.from_file(
        model, device=device, chemical_species_to_atom_type_map=chemical_species_to_atom_type_map)
    if getattr(fm, "feature_dim", None) not in (None, est.dim_):
        raise DescriptorError(f"model {model} yields {fm.feature_dim}-dim features, the "
                              f"estimator {estimator} was fitted on {est.dim_}-dim ones")
    return LTAUCalculator(fm, est, s=s, **kwargs)
