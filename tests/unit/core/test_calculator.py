"""LTAUCalculator's tolerance scale: the ``s`` override, and per-group calibrated scales chosen by
``group=`` or by ``atoms.info[group_key]``, each equal to the estimator's prediction at that s.
(The calculator with observers, MD and relaxations: test_calculator_observers.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from ltau_md.core.calculator import LTAUCalculator
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import Calibration, LTAUEstimator
from ltau_md.testing import EMTFeatureModel


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = EMTFeatureModel(elements=("Cu",))
    rng = np.random.default_rng(0)
    frames = []
    for i in range(10):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
        a.rattle(0.03 + 0.05 * (i % 3), seed=i)
        frames.append(a)
    x = np.concatenate([model.evaluate(a).features for a in frames])
    n = len(x)
    log = ErrorLog.create(tmp_path_factory.mktemp("log") / "log", species=np.full(n, 29),
                          frame_offsets=np.arange(0, n + 1, 16), ref_force_norm=np.ones(n))
    for _ in range(12):
        log.append(rng.lognormal(np.log(0.05), 0.6, n).astype(np.float32))
    return model, LTAUEstimator(k=5).fit(x, log)


def structure(info=None):
    a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    a.rattle(0.06, seed=99)
    a.info.update(info or {})
    return a


def confidence(calc, atoms):
    atoms.calc = calc
    atoms.get_forces()
    return atoms.calc.results["confidence"]


@pytest.mark.parametrize("warm_start", [False, True])
def test_s_override_equals_estimator_at_that_s(setup, warm_start):
    model, est = setup
    a = structure()
    feats = model.evaluate(a).features
    got = confidence(LTAUCalculator(model, est, s=1.7, warm_start=warm_start), a)
    np.testing.assert_array_equal(got, est.predict(feats, s=1.7).confidence.astype(np.float64))
    default = confidence(LTAUCalculator(model, est, warm_start=warm_start), structure())
    np.testing.assert_array_equal(default, est.predict(feats, s=1.0).confidence)
    assert np.mean(got) > np.mean(default) + 0.05  # a looser tolerance: more confident


def test_group_scale_from_info_key_or_argument(setup):
    model, est = setup
    est.calibration_ = Calibration(s=0.8, target_atol=0.05, s_per_group={"hot": 2.5},
                                   group_key="config_type")
    try:
        feats = model.evaluate(structure()).features
        at = {s: est.predict(feats, s=s).confidence for s in (0.8, 1.3, 2.5)}
        assert np.mean(at[2.5]) > np.mean(at[0.8]) + 0.1
        calc = LTAUCalculator(model, est, warm_start=False)
        np.testing.assert_array_equal(confidence(calc, structure({"config_type": "hot"})),
                                      at[2.5])
        # same positions, another group: a new calculation; a group without its own s gets
        # the global one
        np.testing.assert_array_equal(confidence(calc, structure({"config_type": "cold"})),
                                      at[0.8])
        np.testing.assert_array_equal(confidence(calc, structure()), at[0.8])
        assert calc.group_of(structure({"config_type": "hot"})) == "hot"
        # group= overrides atoms.info; s= overrides both
        by_arg = LTAUCalculator(model, est, group="hot", warm_start=False)
        np.testing.assert_array_equal(confidence(by_arg, structure({"config_type": "cold"})),
                                      at[2.5])
        both = LTAUCalculator(model, est, group="hot", s=1.3, warm_start=False)
        np.testing.assert_array_equal(confidence(both, structure()), at[1.3])
    finally:
        est.calibration_ = None
