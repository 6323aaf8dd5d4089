"""``ltau-md evaluate`` end to end with the tiny real NequIP ensemble: the reported novelty AUROC
of an energies-only out-of-domain set (strongly rattled structures) equals the one computed
independently from the model, the estimator and scipy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import read, write
from scipy.stats import mannwhitneyu

from ltau_md.core.calibration import split_frames
from ltau_md.core.estimator import LTAUEstimator


def test_evaluate_cli_with_nequip_ensemble(tiny_run, tmp_path, capsys):
    from ltau_md.cli import main
    from ltau_md.integrations.nequip import NequIPFeatureModel

    in_domain = read(tiny_run.val_xyz, ":")
    hot = []
    for i, a in enumerate(read(tiny_run.train_xyz, ":8")):
        b = a.copy()  # positions only: an energies-less, forces-less set
        b.rattle(0.3, seed=i)
        hot.append(b)
    write(tmp_path / "hot.xyz", hot, format="extxyz")
    out = tmp_path / "report"
    rc = main(["evaluate", "--model", str(tiny_run.checkpoint), "--estimator",
               str(tiny_run.estimator_dir), "--members", str(tiny_run.run_dirs[1] / "last.ckpt"),
               "--in-domain", str(tiny_run.val_xyz), "--ood", f"hot={tmp_path / 'hot.xyz'}",
               "--out", str(out), "--n-boot", "20", "--timing-rounds", "1", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # --json
    rep = json.loads((out / "evaluation.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    model = NequIPFeatureModel.from_file(tiny_run.checkpoint)
    est = LTAUEstimator.load(tiny_run.estimator_dir)

    def novelty_max(frames):
        return np.array([est.predict(o.features, species=a.numbers).novelty.max()
                         for a, o in zip(frames, model.evaluate_many(frames), strict=True)])

    off = np.concatenate([[0], np.cumsum([len(a) for a in in_domain])])
    evl = split_frames(off, 0.5, seed=0)[1][off[:-1]]
    neg, pos = novelty_max(in_domain)[evl], novelty_max(hot)
    want = mannwhitneyu(pos, neg).statistic / (pos.size * neg.size)
    assert rep["detection"]["hot"]["novelty:max"]["value"] == pytest.approx(want, abs=1e-9)
    assert summary["ood_auroc"]["hot"]["novelty:max"]["value"] == pytest.approx(want, abs=1e-9)
    assert rep["signals"]["force_std"] and rep["cost_per_step"]["ensemble_step_s"] > 0
    assert LTAUEstimator.load(out / "estimator").alarm_statistics_  # fitted, saved
