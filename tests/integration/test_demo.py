"""`ltau-md demo --quick` end to end: the report's files and numbers exist and are finite."""

from __future__ import annotations

import json
import math

from ase.io import read

from ltau_md.cli import main


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_demo_quick(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    html = (out / "report.html").read_text()
    for fig in r["figures"].values():
        assert (out / fig).stat().st_size > 1000 and fig in html
    assert {"cartography", "md_uncertainty", "is2rs_uq_vs_rmsd"} <= set(r["figures"])
    e = r["estimator"]
    assert e["members"] == 2 and e["n_train_atoms"] > 0 and _finite(e["atol_eV_per_A"])
    for row in r["relax"]:
        for k in ("initial", "max", "mean", "final"):
            assert _finite(row[k]) and 0.0 <= row[k] <= 1.0
    for run in ("md_stop", "md_resample"):
        m = r[run]
        assert _finite(m["max"]) and _finite(m["threshold"]) and m["n_steps_observed"] >= 1
        steps = (out / run / "steps.jsonl").read_text().splitlines()
        assert len(steps) == m["n_steps_observed"]
    # the halting run stops exactly when its threshold was crossed for 2 steps, or never crossed
    vals = [json.loads(x)["max_uncertainty"] for x in (out / "md_stop" / "steps.jsonl")
            .read_text().splitlines()]
    thr = r["md_stop"]["threshold"]
    over = [v > thr for v in vals]
    expect = next((i for i in range(1, len(vals)) if over[i] and over[i - 1]), None)
    assert r["md_stop"]["stopped_step"] == expect
    # every resampled frame was labelled by the EMT oracle
    if r["md_resample"]["n_resample"]:
        assert r["md_resample"]["n_labelled"] == r["md_resample"]["n_resample"]
        lab = read(out / "md_resample" / "labelled.extxyz", index=":")
        assert all(_finite(float(a.get_potential_energy())) for a in lab)
    assert set(r["is2rs"]) >= {"val_id", "val_ood_ads", "val_ood_cat"}
    for split in ("val_id", "val_ood_ads", "val_ood_cat"):
        s = r["is2rs"][split]
        assert s["n"] >= 1 and _finite(s["rmsd_mean"]) and _finite(s["adwt"])
