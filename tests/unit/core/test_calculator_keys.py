"""The result keys of LTAUCalculator and EnsembleCalculator are all declared (so ASE's
``get_property`` serves each), and ``reset()`` starts a new structure: no warm-started
neighbour search carried over from the previous one (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from ltau_md.core.baselines import ENSEMBLE_KEYS, EnsembleCalculator
from ltau_md.core.calculator import RESULT_KEYS, LTAUCalculator
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.testing import EMTFeatureModel, rattled_cu_estimator


@pytest.fixture(scope="module")
def cu(tmp_path_factory):
    """(EMTFeatureModel of Cu, LTAUEstimator) from the shared rattled-Cu set-up."""
    return rattled_cu_estimator(tmp_path_factory.mktemp("log") / "log")


@pytest.fixture(scope="module")
def cu_hnsw(tmp_path_factory):
    """As ``cu`` but with an HNSW index, the index kind the warm start applies to."""
    model = EMTFeatureModel(elements=("Cu",))
    rng = np.random.default_rng(1)
    amps = [0.02 + 0.05 * (i % 3) for i in range(12)]
    frames = []
    for amp in amps:
        a = bulk("Cu", cubic=True).repeat(2)
        a.positions += rng.normal(size=a.positions.shape) * amp
        frames.append(a)
    x = np.concatenate([model.evaluate(a).features for a in frames])
    log = ErrorLog.create(tmp_path_factory.mktemp("log") / "log", species=np.full(len(x), 29),
                          frame_offsets=np.arange(len(frames) + 1) * 32,
                          ref_force_norm=np.ones(len(x)))
    for _ in range(4):
        log.append(np.repeat(amps, 32) * rng.lognormal(0, 0.3, len(x)))
    est = LTAUEstimator(k=4, index="hnsw").fit(x, log)
    assert est.index_kind_ == "hnsw"
    return model, est


def _cu(seed: int, amp: float = 0.05):
    a = bulk("Cu", cubic=True).repeat(2)
    a.rattle(amp, seed=seed)
    return a


def _check_declared(calc, atoms):
    assert calc.results, "no calculation was done"
    declared = set(calc.implemented_properties)
    undeclared = set(calc.results) - declared
    assert not undeclared, f"result keys not in implemented_properties: {sorted(undeclared)}"
    for key, value in calc.results.items():
        got = calc.get_property(key, atoms)
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got, value)
        else:
            assert got == value or (got != got and value != value)  # NaN == NaN here


def test_result_keys_declared_once():
    assert len(set(RESULT_KEYS)) == len(RESULT_KEYS)
    assert list(LTAUCalculator.implemented_properties) == list(RESULT_KEYS)
    for key in ("finite", "nonfinite_cause", "neighbor_distance"):
        assert key in LTAUCalculator.implemented_properties


@pytest.mark.parametrize("warm_start", [True, False])
def test_every_result_key_is_a_property(cu, warm_start):
    model, est = cu
    atoms = _cu(3)
    atoms.calc = LTAUCalculator(model, est, warm_start=warm_start)
    atoms.get_forces()
    calc = atoms.calc
    assert {"finite", "neighbor_distance", "stress"} <= set(calc.results)
    _check_declared(calc, atoms)
    assert calc.get_property("finite", atoms) is True
    assert calc.get_property("neighbor_distance", atoms).shape == (len(atoms),)


def test_nonfinite_result_keys_are_properties(cu):
    model, est = cu
    atoms = _cu(4)
    atoms.positions[0, 0] = np.nan
    atoms.calc = LTAUCalculator(model, est)
    atoms.get_forces()
    calc = atoms.calc
    assert calc.get_property("finite", atoms) is False
    assert isinstance(calc.get_property("nonfinite_cause", atoms), str)
    _check_declared(calc, atoms)


def test_reset_clears_the_warm_start(cu_hnsw):
    model, est = cu_hnsw
    first, second = _cu(5), _cu(6)  # the same cell rattled twice: within ``jump`` of each other
    assert np.abs(first.positions - second.positions).max() < 0.5
    calc = LTAUCalculator(model, est, warm_start=True)
    first.calc = calc
    first.get_forces()
    assert calc._neighbors._prev is not None  # a warm start is primed
    calc.reset()
    assert calc.results == {} and calc.atoms is None  # ASE's reset
    assert calc._neighbors._prev is None and calc._last_positions is None
    second.calc = calc
    second.get_forces()
    fresh = LTAUCalculator(model, est, warm_start=True)
    other = second.copy()
    other.calc = fresh
    other.get_forces()
    for key in ("uncertainty", "novelty", "confidence", "neighbor_distance"):
        np.testing.assert_array_equal(calc.results[key], fresh.results[key], err_msg=key)


def test_ensemble_keys_extend_the_ltau_keys(cu):
    props = EnsembleCalculator.implemented_properties
    assert set(props) >= set(LTAUCalculator.implemented_properties)
    assert set(props) >= set(ENSEMBLE_KEYS)
    assert len(set(props)) == len(props)
    model, est = cu
    atoms = _cu(7)
    atoms.calc = EnsembleCalculator([model, EMTFeatureModel(elements=("Cu",), n_gauss=6)], est)
    atoms.get_forces()
    assert {"force_std", "uncertainty", "finite"} <= set(atoms.calc.results)
    _check_declared(atoms.calc, atoms)
    atoms.calc.reset()
    assert atoms.calc._ltau._neighbors._prev is None
