"""``ltau-md calibrate`` end to end on the tiny NequIP run (real model, real estimator)."""

from __future__ import annotations

import numpy as np
import pytest

from ltau_md.core.calibration import DEFAULT_ALARM, DEFAULT_SIGNALS
from ltau_md.core.estimator import LTAUEstimator


def test_calibrate_cli_on_tiny_nequip_run(tiny_run, tmp_path, capsys):
    """``ltau-md calibrate`` with a real trained NequIP model and estimator: the saved
    estimator carries the s that calibrate_structures finds in-process."""
    import json

    from ltau_md.cli import main
    from ltau_md.core.calibration import calibrate_structures
    from ltau_md.core.structures import read_structures
    from ltau_md.integrations.nequip import NequIPFeatureModel

    model = NequIPFeatureModel.from_file(tiny_run.checkpoint)
    frames = read_structures(tiny_run.val_xyz)
    est = LTAUEstimator.load(tiny_run.estimator_dir)
    err = np.concatenate([np.linalg.norm(a.get_forces() - o.forces, axis=1)
                          for a, o in zip(frames, model.evaluate_many(frames), strict=True)])
    target = float(np.median(err))
    fit, _ = calibrate_structures(model, est, frames, target_atol=target, n_bins=10)
    out = tmp_path / "calibrated"
    rc = main(["calibrate", str(tiny_run.val_xyz), "--model", str(tiny_run.checkpoint),
               "--estimator", str(tiny_run.estimator_dir), "--out", str(out),
               "--target-atol", str(target), "--n-bins", "10", "--plot-dir", str(tmp_path),
               "--alarm-stats", "uncertainty:q90"])
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["s"] == pytest.approx(fit.s) and line["area"] == pytest.approx(fit.area)
    back = LTAUEstimator.load(out)
    assert back.scale_ == pytest.approx(fit.s)
    assert back.calibration_.target_atol == pytest.approx(target)
    # original untouched: not calibrated, only the training-LOO alarm statistics of fit
    assert LTAUEstimator.load(tiny_run.estimator_dir).calibration_ is None
    # the in-domain alarm statistics of the calibration structures, uncertainty at the new s
    th = back.alarm_statistics_
    assert line["alarm_statistics"] == sorted(th) == sorted([
        "novelty:max", "novelty:mean", "uncertainty:max", "uncertainty:mean",
        *(f"{s}:max" for s in DEFAULT_SIGNALS), DEFAULT_ALARM, "uncertainty:q90"])
    assert {v["source"] for v in th.values()} == {"calibration"}
    unc = [back.predict(o.features, species=a.numbers).uncertainty.max()
           for a, o in zip(frames, model.evaluate_many(frames), strict=True)]
    np.testing.assert_allclose(th["uncertainty:max"]["values"], sorted(unc), atol=1e-6)
    assert (tmp_path / "calibration.png").stat().st_size > 0
    assert (tmp_path / "scale_fit.png").stat().st_size > 0
