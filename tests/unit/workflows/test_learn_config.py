"""Stored loop settings written before a setting existed still match the same loop now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltau_md.core.exceptions import DataError
from ltau_md.workflows.learn._config import (
    ExploreSettings,
    FinetuneSettings,
    LearnConfig,
    with_defaults,
)
from ltau_md.workflows.learn._loop import _claim


def _cfg(tmp_path: Path, **kw) -> LearnConfig:
    p = Path("/nonexistent")
    return LearnConfig(out_dir=tmp_path / "loop", model=p / "m.ckpt", train=p / "t.xyz",
                       validation=p / "v.xyz", oracle="ase.calculators.emt:EMT",
                       explore=ExploreSettings(structures=p / "s.xyz"), estimator=p / "est",
                       **kw)


def _older(settings: dict) -> dict:
    """The settings as a version before ``ensemble``, ``explore.trust_levels`` and the
    ``finetune`` section wrote them."""
    old = {k: v for k, v in settings.items() if k not in ("ensemble", "finetune")}
    old["explore"] = {k: v for k, v in settings["explore"].items() if k != "trust_levels"}
    return old


def test_with_defaults_fills_exactly_the_missing_settings(tmp_path):
    now = _cfg(tmp_path).to_dict()
    old = _older(now)
    assert old != now
    assert with_defaults(old) == now
    # a stored value is never replaced by a default
    assert with_defaults({**old, "seed": 7})["seed"] == 7
    assert with_defaults(old)["finetune"] == {"epochs": FinetuneSettings.epochs,
                                              "lr": FinetuneSettings.lr}


def test_claim_resumes_an_older_loop_at_default_settings_only(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.out_dir.mkdir()
    stored = cfg.out_dir / "learn_config.json"
    stored.write_text(json.dumps(_older(cfg.to_dict())))
    assert _claim(cfg) == cfg.out_dir
    # a setting the older loop lacked, now not at its default: another loop
    other = _cfg(tmp_path, finetune=FinetuneSettings(epochs=3))
    with pytest.raises(DataError, match=r"other settings \(finetune\)"):
        _claim(other)
    stored.write_text(json.dumps({**_older(cfg.to_dict()), "seed": 5}))
    with pytest.raises(DataError, match=r"other settings \(seed\)"):
        _claim(cfg)
