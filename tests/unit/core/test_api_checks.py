"""The API check batteries of ltau_md.testing pass on the project's own estimator and model,
and fail on deliberately broken ones (so they could fail)."""

from __future__ import annotations

import numpy as np
import pytest

from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.model import ModelOutput
from ltau_md.testing import EMTFeatureModel, check_estimator_api, check_feature_model


def _training(tmp_path, n=60, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    species = np.full(n, 29)
    log = ErrorLog.create(tmp_path / "log", species=species,
                          frame_offsets=np.arange(0, n + 1, 6), ref_force_norm=np.ones(n))
    for _ in range(5):
        log.append(rng.lognormal(-2, 0.5, n))
    return x, log, species


def test_check_feature_model_passes_on_emt_model():
    check_feature_model(EMTFeatureModel(elements=("Cu", "Pt")))


class _Float64Features(EMTFeatureModel):
    def evaluate(self, atoms, stress=False):
        out = super().evaluate(atoms, stress)
        return ModelOutput(out.energy, out.forces, out.stress, out.features.astype(np.float64))


class _PositionFeatures(EMTFeatureModel):
    """Features that depend on absolute positions: not translation invariant."""

    def evaluate(self, atoms, stress=False):
        out = super().evaluate(atoms, stress)
        return ModelOutput(out.energy, out.forces, out.stress,
                           np.hstack([out.features, atoms.positions]).astype(np.float32))


class _AcceptsAnything(EMTFeatureModel):
    def evaluate(self, atoms, stress=False):
        a = atoms.copy()
        a.numbers[:] = self.species[0]
        return super().evaluate(a, stress)


@pytest.mark.parametrize("model, match", [
    (_Float64Features(elements=("Cu",)), "float32"),
    (_PositionFeatures(elements=("Cu",)), "translation"),
    (_AcceptsAnything(elements=("Cu",)), "SpeciesError"),
])
def test_check_feature_model_catches_broken_models(model, match):
    with pytest.raises(AssertionError, match=match):
        check_feature_model(model)


def test_check_estimator_api_passes_on_ltau_estimator(tmp_path):
    x, log, species = _training(tmp_path)
    check_estimator_api(LTAUEstimator(k=3), x, [log], species, tmp_path / "rt")


class _RewritesParameter(LTAUEstimator):
    def fit(self, descriptors, errors, **kw):
        out = super().fit(descriptors, errors, **kw)
        self.k = self.k + 1  # a fit that rewrites a parameter
        return out


def test_check_estimator_api_catches_a_parameter_rewrite(tmp_path):
    x, log, species = _training(tmp_path)
    with pytest.raises(AssertionError, match="fit changed parameters"):
        check_estimator_api(_RewritesParameter(k=3), x, [log], species, tmp_path / "rt")


def test_atol_dict_parameter_stays_as_given(tmp_path):
    """fit used to rewrite atol={29: 0.2} into {'29': 0.2}; the battery catches that."""
    x, log, species = _training(tmp_path)
    est = LTAUEstimator(k=3, atol={29: 0.2})
    check_estimator_api(est, x, [log], species, tmp_path / "rt")
    assert est.atol == {29: 0.2} and type(next(iter(est.atol))) is int
    assert est.atol_ == pytest.approx(0.2)
