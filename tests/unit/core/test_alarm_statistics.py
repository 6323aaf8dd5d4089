"""The two fitted objects of an estimator: the scale calibration (``calibration_``) and the
in-domain alarm statistics (``alarm_statistics_``) any signal adds to; how a new scale drops
the statistics that depend on it; their artifact sections, and version-2 artifacts (the
statistics inside the calibration) read into the two objects."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import (
    MANIFEST_DIGEST_KEY,
    Calibration,
    InDomainStatistics,
    LTAUEstimator,
    manifest_digest,
)
from ltau_md.core.exceptions import DataError, InvalidParameterError


def entry(values, source="held-out"):
    return {"values": list(values), "n_frames": len(values), "source": source}


@pytest.fixture(scope="module")
def est(tmp_path_factory):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    log = ErrorLog.create(tmp_path_factory.mktemp("log") / "log", species=np.full(200, 29),
                          frame_offsets=[0, 100, 200], ref_force_norm=np.ones(200))
    for _ in range(6):
        log.append(rng.lognormal(np.log(0.05), 0.5, 200).astype(np.float32))
    return LTAUEstimator(k=4).fit(x, log)


def test_statistics_are_a_checked_mapping_that_signals_add_to():
    st = InDomainStatistics({"novelty:max": entry([3.0, 1.0, 2.0])})
    assert st["novelty:max"]["values"] == [1.0, 2.0, 3.0]          # kept sorted
    st.update({"gmm:max@tags=2": entry([0.5], "validation")})       # any signal, any selection
    assert sorted(st) == ["gmm:max@tags=2", "novelty:max"] and len(st) == 2
    assert InDomainStatistics.from_dict(json.loads(json.dumps(st.to_dict()))) == st
    for bad, match in ((("nokey", entry([1.0])), "SIGNAL:STAT"),
                       (("a:max", {"values": [1.0]}), "keys"),
                       (("a:max", entry([np.nan])), "finite"),
                       (("a:max", {**entry([1.0, 2.0]), "n_frames": 3}), "n_frames"),
                       (("a:max", entry([])), "non-empty")):
        with pytest.raises(InvalidParameterError, match=match):
            st.update(dict([bad]))
    assert len(st) == 2                                             # nothing half-added
    assert st.drop(["novelty"]) == ["novelty:max"] and list(st) == ["gmm:max@tags=2"]


def test_a_new_scale_drops_only_the_scale_dependent_statistics(est):
    est.alarm_statistics_.update({"novelty:max": entry([1.0, 2.0]),
                                  "uncertainty:max": entry([0.1, 0.2])})
    with pytest.warns(UserWarning, match=r"\['uncertainty:max'\] depend on s"):
        est.set_calibration(Calibration(s=0.5, target_atol=0.05))
    assert list(est.alarm_statistics_) == ["novelty:max"] and est.scale_ == 0.5
    est.set_calibration(None)
    assert est.calibration_ is None and est.scale_ == 1.0
    with pytest.raises(InvalidParameterError, match="Calibration or None"):
        est.set_calibration({"s": 1.0})


def test_fit_starts_both_objects_afresh(est, tmp_path):
    other = LTAUEstimator(k=4).fit(np.asarray(est.training_descriptors()), est.summary_)
    assert other.calibration_ is None and len(other.alarm_statistics_) == 0
    assert other.alarm_statistics_ is not est.alarm_statistics_


def test_sections_round_trip_and_version_2_artifacts_are_read(est, tmp_path):
    est.alarm_statistics_.update({"novelty:mean": entry([0.3, 0.4, 0.9])})
    est.set_calibration(Calibration(s=0.7, target_atol=0.05, area=0.02))
    path = est.save(tmp_path / "est")
    m = json.loads((path / "manifest.json").read_text())
    # no leave-one-out sample: written as version 4, which earlier versions read
    assert m["version"] == 4 and set(m["alarm_statistics"]) == set(est.alarm_statistics_)
    back = LTAUEstimator.load(path)
    assert back.alarm_statistics_ == est.alarm_statistics_
    assert back.calibration_ == est.calibration_

    def as_version_2(manifest, area):
        old = json.loads(json.dumps(manifest))
        old["version"] = 2
        old["calibration"] = {**old["calibration"], "area": area,
                              "thresholds": old.pop("alarm_statistics")}
        old[MANIFEST_DIGEST_KEY] = manifest_digest(old)
        (path / "manifest.json").write_text(json.dumps(old))

    as_version_2(m, 0.02)                    # a fitted scale and statistics in one section
    back = LTAUEstimator.load(path)
    assert back.calibration_ == est.calibration_
    assert back.alarm_statistics_ == est.alarm_statistics_
    as_version_2(m, None)                    # "a calibration that calibrates nothing"
    back = LTAUEstimator.load(path)
    assert back.calibration_ is None and back.alarm_statistics_ == est.alarm_statistics_


def test_confidence_from_bad_neighbour_indices_names_the_rows(est):
    good = est.kneighbors(np.zeros((3, 6), np.float32))[1]
    bad = good.copy()
    bad[1, 0] = est.n_train_
    with pytest.raises(DataError, match=r"\[0, 200\).*rows \[1\]"):
        est.confidence_from_neighbors(bad)
    with pytest.raises(DataError, match="int array"):
        est.confidence_from_neighbors(good.astype(float))
    with pytest.raises(DataError, match=r"\(n, k\)"):
        est.novelty_of(np.ones(3), good[:, 0])


def test_without_calibration_is_an_uncalibrated_copy_leaving_the_original(est):
    est.set_calibration(Calibration(s=0.6, target_atol=0.05))
    est.alarm_statistics_.update({"novelty:max": entry([1.0, 2.0])})
    bare = est.without_calibration()
    assert bare.calibration_ is None and len(bare.alarm_statistics_) == 0
    assert bare.scale_ == 1.0 and bare.index_ is est.index_
    assert est.scale_ == 0.6 and "novelty:max" in est.alarm_statistics_   # original untouched
    bare.alarm_statistics_.update({"gmm:max": entry([0.5])})
    assert "gmm:max" not in est.alarm_statistics_
    est.set_calibration(None)
