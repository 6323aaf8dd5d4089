"""Load a deployed NequIP model and a saved estimator into an :class:`LTAUCalculator`."""

from __future__ import annotations

import os
from typing import Any

from ltau_md.core.calculator import LTAUCalculator
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import ArtifactError, DescriptorError

__all__ = [
    "check_pairing",
    "load_calculator",
]

#: what to pass to use an estimator with a model or type map it was not fitted with
OVERRIDE = "allow_mismatch=True (--allow-mismatch)"


def check_pairing(est: LTAUEstimator, model: Any, model_path: str | os.PathLike, *,
                  estimator_path: str | os.PathLike | None = None,
                  allow_mismatch: bool = False) -> None:
    """Refuse (ArtifactError, naming both sides) an estimator used with a model or an
    element-to-type map other than the ones it was fitted with, unless ``allow_mismatch``.

    The model is the same when its file has the SHA-256 the estimator's metadata stores
    (``model_sha256``) or, for a package built from that checkpoint, the same weights
    (``weights_sha256``). Estimators without these records (fitted from arrays) are not
    checked."""
    import warnings

    from ltau_md.core.files import sha256_file

    meta = est.metadata
    problems = []
    file_hash = meta.get("model_sha256")
    used_hash = sha256_file(model_path) if file_hash else None
    if file_hash and used_hash != file_hash:
        weights = meta.get("weights_sha256")
        if not (weights and hasattr(model, "weights_sha256") and model.weights_sha256() == weights):
            problems.append(
                f"it was fitted on the model {meta.get('model', '?')} (sha256 {file_hash[:12]}), "
                f"not on {model_path} (sha256 {used_hash[:12]}): its latent features and "
                "thresholds do not apply to another model")
    stored = meta.get("type_map")
    used = getattr(model, "species_map", None)
    if stored is not None and used is not None and dict(stored) != dict(used):
        def fmt(m):
            return ",".join(f"{k}={v}" for k, v in sorted(m.items()))
        problems.append(f"it was fitted through the type map {fmt(stored)}, not {fmt(used)}")
    if not problems:
        return
    text = "; ".join(problems)
    if allow_mismatch:
        warnings.warn(f"estimator used although {text}", UserWarning, stacklevel=3)
        return
    where = f" {estimator_path}" if estimator_path is not None else ""
    raise ArtifactError(f"the estimator{where} does not belong to this model: {text}; fit one "
                        f"for this model (ltau-md fit), or pass {OVERRIDE} to use it anyway")


def load_calculator(model: str | os.PathLike, estimator: str | os.PathLike, *,
                    device: str = "cpu", s: float | None = None,
                    chemical_species_to_atom_type_map: dict[str, str] | None = None,
                    allow_mismatch: bool = False, **kwargs: Any) -> LTAUCalculator:
    """An :class:`~ltau_md.core.calculator.LTAUCalculator` from a NequIP model file (``.ckpt`` or
    ``nequip-package`` ``.nequip.zip``) and an estimator directory saved by
    :meth:`LTAUEstimator.save`. ``kwargs`` go to the calculator (``warm_start``, ``jump``).
    An estimator fitted on another model or type map is refused (:func:`check_pairing`)
    unless ``allow_mismatch``.

    Picklable through ``functools.partial(load_calculator, model=..., estimator=...)``, which is
    how the IS2RS campaign builds one calculator per dask worker."""
    from ltau_md.integrations.nequip.model import NequIPFeatureModel

    est = LTAUEstimator.load(estimator)
    fm = NequIPFeatureModel.from_file(
        model, device=device, chemical_species_to_atom_type_map=chemical_species_to_atom_type_map)
    if getattr(fm, "feature_dim", None) not in (None, est.dim_):
        raise DescriptorError(f"model {model} yields {fm.feature_dim}-dim features, the "
                              f"estimator {estimator} was fitted on {est.dim_}-dim ones")
    check_pairing(est, fm, model, estimator_path=estimator, allow_mismatch=allow_mismatch)
    return LTAUCalculator(fm, est, s=s, **kwargs)
