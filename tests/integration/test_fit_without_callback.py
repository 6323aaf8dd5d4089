"""UQ for a NequIP model trained without the ltau-md callback: ``ltau-md fit --data`` (no run
dirs) builds an estimator with novelty and the GMM, no LTAU confidence, and ``ltau-md md``
runs with it."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest

from ltau_md.cli import main
from ltau_md.core.calibration import DEFAULT_ALARM, DEFAULT_SIGNALS
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.integrations.nequip import NequIPFeatureModel, toy


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain")
    train, val = toy.write_emt_dataset(root / "data", n_train=24, n_val=6, seed=3)
    cfg = toy.write_config(toy.tiny_config(train, val, seed=5, max_epochs=2, loggers=None),
                           root / "plain.yaml")
    toy.nequip_train(cfg, root / "run", threads=1)
    assert not (root / "run" / "ltau_log").exists()       # no callback, no error log
    return root, train, val, root / "run" / "last.ckpt"


def test_fit_from_training_structures_alone(plain_run, tmp_path, capsys):
    root, train, val, ckpt = plain_run
    out = tmp_path / "est"
    assert main(["fit", "--model", str(ckpt), "--data", str(train), "--out", str(out),
                 "--no-progress"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["ltau_confidence"] is False and line["signals"] == sorted(DEFAULT_SIGNALS)
    est = LTAUEstimator.load(out)
    assert not est.has_error_log and set(est.alarm_statistics_) == {
        "novelty:max", "novelty:mean", *(f"{s}:max" for s in DEFAULT_SIGNALS), DEFAULT_ALARM}
    # the signals equal the model's own features scored by the fitted signal
    model = NequIPFeatureModel.from_file(ckpt)
    frames = ase.io.read(train, ":")
    x = np.concatenate([model.evaluate(a).features for a in frames])
    z = np.concatenate([a.numbers for a in frames])
    np.testing.assert_allclose(np.asarray(est.training_descriptors()), x,
                               rtol=1e-5, atol=1e-6)
    sig = DEFAULT_SIGNALS[0]
    want = sorted(est.signals_[sig].score(x[a:b], z[a:b]).max() for a, b in zip(
        np.cumsum([0] + [len(f) for f in frames])[:-1], np.cumsum([len(f) for f in frames]),
        strict=True))
    # (float32 features: a D-optimality grade of an active-set atom, 1, comes out 1 + 3e-5)
    np.testing.assert_allclose(est.alarm_statistics_[f"{sig}:max"]["values"], want, rtol=1e-4)
    # options that need logged errors are refused with one line
    assert main(["fit", "--model", str(ckpt), "--data", str(train), "--out",
                 str(tmp_path / "x"), "--atol", "0.1", "--no-progress"]) == 2
    assert "--atol need logged training errors" in capsys.readouterr().err
    assert main(["fit", "--model", str(ckpt), "--out", str(tmp_path / "y")]) == 2
    assert "--data" in capsys.readouterr().err
    # MD with it: novelty and the default alarm recorded, no LTAU uncertainty
    ase.io.write(tmp_path / "start.xyz", ase.io.read(val, index=0))
    assert main(["md", str(tmp_path / "start.xyz"), "--model", str(ckpt), "--estimator",
                 str(out), "--steps", "3", "--out", str(tmp_path / "md"),
                 "--no-progress"]) == 0
    rows = [json.loads(r) for r in (tmp_path / "md" / "steps.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert all(r[DEFAULT_ALARM] is not None and r["novelty:max"] is not None for r in rows)
    assert all(r["uncertainty:max"] is None for r in rows)
