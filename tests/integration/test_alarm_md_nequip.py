"""md/relax alarm policies with a real NequIP model and estimator (the tiny run): the default
policy from the estimator's in-domain statistics, explicit rates, and a missing statistic
refused before anything is written."""

from __future__ import annotations

import json

import ase.io
import pytest

from ltau_md.cli import main
from ltau_md.core.calibration import DEFAULT_ALARM
from ltau_md.core.metrics import parse_stat_key, stat_key


@pytest.fixture
def common(tiny_run, tmp_path):
    ase.io.write(tmp_path / "start.xyz", ase.io.read(tiny_run.val_xyz, index=0))
    return [str(tmp_path / "start.xyz"), "--model", str(tiny_run.checkpoint),
            "--estimator", str(tiny_run.estimator_dir), "--no-progress"]


def test_md_default_policy_and_explicit_rate(tiny_run, tmp_path, common, capsys):
    # the fixture estimator (fit without --validation): statistics of the run's 8 validation
    # frames the callback saved (the default alarm's), too few for a 1 % rate: the
    # default alarm is off, and the note says why and how many frames it needs
    assert main(["md", *common, "--steps", "3", "--out", str(tmp_path / "md")]) == 0
    err = capsys.readouterr().err
    assert f"no default stop policy: alarm off: the 8 validation frames of {DEFAULT_ALARM}" in err
    assert "needs >= 99 in-domain frames" in err and "exceeds inf" not in err
    s = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert s["policies"] == [] and s["status"] == "completed"
    # an explicit rate the frames cannot resolve is refused before anything is written
    assert main(["md", *common, "--steps", "3", "--stop-rate", "0.01",
                 "--out", str(tmp_path / "md1")]) == 2
    assert "--stop-rate 0.01: alarm off" in capsys.readouterr().err
    assert not (tmp_path / "md1").exists()
    rows = [json.loads(x) for x in (tmp_path / "md" / "steps.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["novelty:max"] is not None for r in rows)
    # an alarm rate of 0.9 fires at once (the threshold is a low in-domain value)
    assert main(["md", *common, "--steps", "5", "--warn-rate", "0.9",
                 "--out", str(tmp_path / "warn")]) == 0
    s = json.loads((tmp_path / "warn" / "summary.json").read_text())
    thr, key = s["policies"][0]["threshold"], s["policies"][0]["statistic"]
    assert key == DEFAULT_ALARM                          # the default alarm's statistic
    nov = [json.loads(x)[key]
           for x in (tmp_path / "warn" / "steps.jsonl").read_text().splitlines()]
    assert s["n_events"]["warn"] == (nov[0] > thr) + sum(
        b > thr >= a for a, b in zip(nov[:-1], nov[1:], strict=True))


def test_missing_statistic_is_refused_before_writing(tiny_run, tmp_path, common, capsys):
    rc = main(["relax", *common, "--warn-rate", "0.1", "--on", "q90",
               "--out", str(tmp_path / "r")])
    assert rc == 2
    # the default alarm's signal
    assert stat_key(parse_stat_key(DEFAULT_ALARM)[0], "q90") in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
