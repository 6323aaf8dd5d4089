"""An estimator fitted without an error log (a model trained without the callback): novelty
and latent signals exactly as with the log, no LTAU confidence (said so), artifacts that
round-trip, and a calculator that leaves the LTAU keys out."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError

from ltau_md.core.baselines import element_error
from ltau_md.core.calculator import LTAU_ONLY_KEYS, LTAUCalculator
from ltau_md.core.estimator import NO_ERROR_LOG, LTAUEstimator
from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.testing import rattled_cu_estimator


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    model, with_log = rattled_cu_estimator(tmp_path_factory.mktemp("log") / "log")
    x = np.asarray(with_log.training_descriptors())
    bare = LTAUEstimator(k=4, signals=("gmm",)).fit(x, None, species=with_log.train_species_)
    return model, with_log, bare, x


def test_novelty_and_signals_equal_the_estimator_with_a_log(pair):
    model, with_log, bare, x = pair
    assert not bare.has_error_log and with_log.has_error_log
    q = x[:50] * 1.03
    z = bare.train_species_[:50]
    a, b = with_log.predict(q, species=z), bare.predict(q, species=z)
    np.testing.assert_array_equal(a.novelty, b.novelty)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert np.isnan(b.uncertainty).all() and np.isnan(b.predicted_error).all()
    with pytest.raises(DataError, match="without an error log"):
        bare.confidence_from_neighbors(b.indices)
    with pytest.raises(DataError, match="without an error log"):
        element_error(bare, z)
    with pytest.raises(InvalidParameterError, match="species="):
        LTAUEstimator(k=4).fit(x, None)
    assert "without an error log" in repr(bare) and NO_ERROR_LOG.startswith("this estimator")


def test_artifact_round_trip(pair, tmp_path):
    model, with_log, bare, x = pair
    back = LTAUEstimator.load(bare.save(tmp_path / "bare"))
    assert not back.has_error_log and back.atol_ is None and set(back.signals_) == {"gmm"}
    q, z = x[:20] + 0.01, bare.train_species_[:20]
    np.testing.assert_array_equal(back.predict(q, species=z).novelty,
                                  bare.predict(q, species=z).novelty)
    np.testing.assert_array_equal(back.signal_values(q, z)["gmm"], bare.signal_values(q, z)["gmm"])


def test_calculator_leaves_the_ltau_keys_out(pair):
    model, with_log, bare, x = pair
    a = bulk("Cu", cubic=True).repeat(2)
    a.rattle(0.05, seed=4)
    a.calc = LTAUCalculator(model, bare)
    assert a.calc.get_property("novelty:max", a) == pytest.approx(
        bare.predict(model.evaluate(a).features, species=a.numbers).novelty.max())
    assert "gmm:max" in a.calc.results
    for key in (*LTAU_ONLY_KEYS, "uncertainty:max", "predicted_error:max"):
        assert key not in a.calc.results
    with pytest.raises(PropertyNotImplementedError):
        a.calc.get_property("uncertainty", a)
