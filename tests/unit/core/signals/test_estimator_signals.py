"""Latent signals inside the estimator (fit, add_signals, the artifact) and the calculator
(``signals=``), against the signals fitted on their own."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from ltau_md.core.calculator import LTAUCalculator
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import ArtifactError, InvalidParameterError
from ltau_md.core.signals import DOptimality, GMMDensity
from ltau_md.testing import rattled_cu_estimator


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, est = rattled_cu_estimator(tmp_path_factory.mktemp("log") / "log")
    x = np.asarray(est.training_descriptors())
    return model, est, x


def test_fit_with_signals_equals_each_signal_fitted_alone(setup):
    model, est, x = setup
    sig = LTAUEstimator(k=4, signals=("gmm", "doptimality")).fit(x, est.summary_)
    assert sig.signals == ("gmm", "doptimality")              # parameter as given
    z = est.summary_.species
    q = x[:40] * 1.05
    alone = GMMDensity().fit(x, z).score(q, z[:40])
    assert np.array_equal(sig.signal_values(q, z[:40], ["gmm"])["gmm"], alone)
    assert set(sig.signal_values(q, z[:40])) == {"gmm", "doptimality"}
    with pytest.raises(InvalidParameterError, match="llpr"):
        sig.signal_values(q, z[:40], ["llpr"])
    with pytest.raises(InvalidParameterError, match="signals"):
        LTAUEstimator(signals=("gmm", "gmm")).fit(x, est.summary_)


def test_add_signals_and_the_artifact_round_trip(setup, tmp_path):
    model, est, x = setup
    e = LTAUEstimator(k=4).fit(x, est.summary_)
    assert np.array_equal(e.training_descriptors(), x)          # a flat index holds them
    with pytest.raises(Exception, match="fitted on"):
        e.add_signals(x[:10], ["llpr"])
    e.add_signals(x, ["llpr", DOptimality(max_atoms=50, seed=1)])
    assert e.signals == () and set(e.signals_) == {"llpr", "doptimality"}
    path = e.save(tmp_path / "est")
    back = LTAUEstimator.load(path)
    z = est.summary_.species
    for name, v in e.signal_values(x[:30] + 0.1, z[:30]).items():
        assert np.array_equal(back.signal_values(x[:30] + 0.1, z[:30], [name])[name], v)
    assert back.signals_["doptimality"].max_atoms == 50
    # a signal file that is missing or not listed is refused
    (path / "signal_llpr.npz").unlink()
    with pytest.raises(ArtifactError, match="signal_llpr.npz"):
        LTAUEstimator.load(path)


def test_version_3_artifacts_still_load(setup, tmp_path):
    from ltau_md.core.estimator import MANIFEST_DIGEST_KEY, manifest_digest

    model, est, x = setup
    path = LTAUEstimator(k=4).fit(x, est.summary_).save(tmp_path / "v3")
    m = json.loads((path / "manifest.json").read_text())
    m["version"] = 3
    del m["params"]["signals"]
    m[MANIFEST_DIGEST_KEY] = manifest_digest(m)
    (path / "manifest.json").write_text(json.dumps(m))
    back = LTAUEstimator.load(path)
    assert back.signals == () and back.signals_ == {}


def test_calculator_returns_requested_signals_from_the_same_features(setup):
    model, est, x = setup
    e = LTAUEstimator(k=4, signals=("gmm", "clustered_doptimality")).fit(x, est.summary_)
    a = bulk("Cu", cubic=True).repeat(2)
    a.positions += np.random.default_rng(3).normal(size=a.positions.shape) * 0.05
    a.calc = LTAUCalculator(model, e, signals=("gmm",))
    gmm = a.calc.get_property("gmm", a)
    feats = model.evaluate(a).features
    assert np.array_equal(gmm, e.signals_["gmm"].score(feats, a.numbers))
    assert a.calc.get_property("gmm:max") == pytest.approx(gmm.max())
    assert "clustered_doptimality" not in a.calc.results       # only what was asked for
    with pytest.raises(InvalidParameterError, match="llpr"):
        LTAUCalculator(model, e, signals=("llpr",))
    a.positions[0] = np.nan
    a.calc = LTAUCalculator(model, e, signals=("gmm",))
    assert np.isinf(a.calc.get_property("gmm:max", a))
