"""`ltau-md demo --quick` end to end: the report's files and numbers exist and are finite, the
halting MD stops and the resampling MD resamples exactly where their alarm-rate policies on
the default alarm say (thresholds recomputed from the estimator's in-domain statistics), and
the output directory is neither reused nor mixed."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read

from ltau_md.cli import main
from ltau_md.core.calibration import DEFAULT_ALARM
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import OutputExistsError
from ltau_md.workflows.demo import run_demo


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_demo_quick(tmp_path, capfd):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capfd.readouterr()
    assert printed.out == ""  # --no-progress: no stage, epoch or bar lines (nequip's output
    assert "it/s" not in printed.err and "epoch" not in printed.err  # goes to logs/)
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["member0.log", "member1.log"]
    r = json.loads((out / "report.json").read_text())
    html = (out / "report.html").read_text()
    for fig in r["figures"].values():
        assert (out / fig).stat().st_size > 1000 and fig in html
    assert {"cartography", "md_traces", "is2rs_uq_vs_rmsd"} <= set(r["figures"])
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
    # both thresholds are the conformal quantile of the estimator's in-domain statistics of
    # the default alarm (held-out validation frames) at the reported alarm rate, recomputed here
    entry = LTAUEstimator.load(out / "estimator").alarm_statistics_[DEFAULT_ALARM]
    vals_id = np.sort(np.asarray(entry["values"], dtype=float))
    assert entry["source"] == "validation" and entry["n_frames"] == vals_id.size
    for run, rate in (("md_stop", 0.01), ("md_resample", 0.05)):
        m = r[run]
        n = vals_id.size
        assert m["statistic"] == DEFAULT_ALARM and m["n_in_domain_frames"] == n
        assert m["requested_alarm_rate"] == rate
        assert m["alarm_rate"] == pytest.approx(max(rate, 1.0 / (n + 1)))
        assert m["rate_raised"] == (rate < 1.0 / (n + 1))
        k = math.ceil((n + 1) * (1.0 - m["alarm_rate"]) - 1e-9)
        assert m["threshold"] == pytest.approx(vals_id[k - 1])
        pol = json.loads((out / run / "summary.json").read_text())["policies"]
        assert len(pol) == 1 and pol[0]["statistic"] == DEFAULT_ALARM
        assert pol[0]["threshold"] == pytest.approx(m["threshold"])
        assert pol[0]["resolved_from"]["n_frames"] == n
    # the halting run stops, exactly when the alarm statistic first exceeded its threshold for
    # 2 consecutive steps
    vals = [json.loads(x)[DEFAULT_ALARM] for x in (out / "md_stop" / "steps.jsonl")
            .read_text().splitlines()]
    thr = r["md_stop"]["threshold"]
    over = [v > thr for v in vals]
    expect = next((i for i in range(1, len(vals)) if over[i] and over[i - 1]), None)
    assert expect is not None, f"the quick demo's halting MD never crossed {thr}: {vals}"
    assert r["md_stop"]["stopped_step"] == expect and len(vals) == expect + 1
    assert DEFAULT_ALARM.split(":")[0] in r["md_stop"]["stop_reason"]
    # the resampling run resamples at the start of each excursion above its threshold, re-armed
    # below threshold - hysteresis (10 % of the threshold)
    rows = [json.loads(x) for x in (out / "md_resample" / "steps.jsonl").read_text()
            .splitlines()]
    thr, fired, armed = r["md_resample"]["threshold"], [], True
    hyst = r["md_resample"]["hysteresis"]
    assert hyst == pytest.approx(0.1 * thr)
    for row in rows:
        v = row[DEFAULT_ALARM]
        armed = armed or v < thr - hyst
        if armed and v > thr:
            fired.append(row["step"])
            armed = False
    assert fired, f"the quick demo's resampling MD never crossed {thr}"
    assert [row["step"] for row in rows if "resample" in row["events"]] == fired
    assert r["md_resample"]["n_resample"] == len(fired) == r["md_resample"]["n_labelled"]
    # every resampled frame was labelled by the EMT oracle: compare with EMT itself
    cands = read(out / "md_resample" / "candidates.extxyz", index=":")
    lab = read(out / "md_resample" / "labelled.extxyz", index=":")
    assert [c.info["step"] for c in cands] == [a.info["step"] for a in lab] == fired
    for c, a in zip(cands, lab, strict=True):
        ref = c.copy()
        ref.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-6)
    assert set(r["is2rs"]) >= {"val_id", "val_ood_ads", "val_ood_cat"}
    for split in ("val_id", "val_ood_ads", "val_ood_cat"):
        s = r["is2rs"][split]
        assert s["n"] >= 1 and _finite(s["rmsd_mean"]) and _finite(s["adwt"])
    # readable by others under the usual umask (022 in this test run)
    mask = os.umask(0o022)
    os.umask(mask)
    for f in ("report.html", "report.json", "md_stop/summary.json"):
        assert stat.S_IMODE((out / f).stat().st_mode) == 0o666 & ~mask
    # a second run into the same directory is refused without overwrite; nothing is touched
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(OutputExistsError, match="overwrite"):
        run_demo(out, quick=True, progress=False)
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 2
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*")}
