"""Threshold, RelaxSettings and GeneratorConfig declare their parameter constraints as data
(``_parameter_constraints``) and check them with ``validate_params``."""

import math

import pytest

from ltau_md.core.exceptions import InvalidParameterError
from ltau_md.core.observers import Threshold
from ltau_md.workflows.is2rs.generate import GeneratorConfig
from ltau_md.workflows.is2rs.runner import RelaxSettings


@pytest.mark.parametrize("kw,param", [
    ({"above": 0.5, "patience": 0}, "patience"),
    ({"above": 0.5, "patience": 1.5}, "patience"),
    ({"above": 0.5, "patience": True}, "patience"),
    ({"above": 0.5, "hysteresis": -1}, "hysteresis"),
    ({"above": 0.5, "hysteresis": math.inf}, "hysteresis"),
    ({"alarm_rate": 1.5}, "alarm_rate"),
    ({"alarm_rate": math.nan}, "alarm_rate"),
    ({"above": math.nan}, "above"),
    ({"above": "0.5"}, "above"),
    ({"action": "explode", "above": 0.5}, "action"),
    ({"above": 0.5, "signal": 3}, "signal"),
    ({"above": 0.5, "callback": "not callable"}, "callback"),
])
def test_threshold_bad_values(kw, param):
    action = kw.pop("action", "stop")
    with pytest.raises(InvalidParameterError, match=rf"Threshold: {param} must") as info:
        Threshold(action, **kw)
    assert isinstance(info.value, ValueError)


def test_threshold_valid_and_constraints_declared():
    t = Threshold("warn", alarm_rate=0.01, patience=3, hysteresis=0.1,
                  callback=lambda event, monitor: None)
    assert (t.alarm_rate, t.patience, t.hysteresis) == (0.01, 3, 0.1)
    assert Threshold("stop", above=4.0, signal="novelty").threshold == 4.0
    assert {"action", "alarm_rate", "patience", "hysteresis"} <= set(
        Threshold._parameter_constraints)


def test_threshold_cross_field_rules_kept():
    with pytest.raises(InvalidParameterError, match="exactly one"):
        Threshold("stop")
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\]"):
        Threshold("stop", above=1.5)


@pytest.mark.parametrize("kw,param", [
    ({"fmax": 0}, "fmax"), ({"fmax": -0.1}, "fmax"), ({"fmax": math.nan}, "fmax"),
    ({"steps": -1}, "steps"), ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"),
    ({"optimizer": "NoSuchOptimizer"}, "optimizer"),
    ({"ref_fmax": 0.0}, "ref_fmax"), ({"ref_steps": 0}, "ref_steps"),
    ({"trajectory_errors": 1}, "trajectory_errors"),
    ({"basin_tol": -1.0}, "basin_tol"), ({"energy_tol": 0}, "energy_tol"),
    ({"reference": 3}, "reference"),
])
def test_relax_settings_bad_values(kw, param):
    with pytest.raises(InvalidParameterError, match=rf"RelaxSettings: {param} must") as info:
        RelaxSettings(**{"reference": None, **kw})
    assert repr(kw[param]) in str(info.value)


def test_relax_settings_valid():
    s = RelaxSettings(fmax=0.1, steps=200, optimizer="FIRE", reference=None)
    assert (s.fmax, s.steps, s.optimizer) == (0.1, 200, "FIRE")
    RelaxSettings()  # the defaults, with the default EMT reference


@pytest.mark.parametrize("kw,param", [
    ({"max_attempts": -1}, "max_attempts"), ({"max_attempts": 0}, "max_attempts"),
    ({"frames_per_system": -1}, "frames_per_system"),
    ({"val_frames_per_system": -3}, "val_frames_per_system"),
    ({"ref_steps": -5}, "ref_steps"), ({"fmax": 0}, "fmax"), ({"vacuum": -1.0}, "vacuum"),
    ({"alloy_fraction": 1.5}, "alloy_fraction"), ({"size": (2, 0)}, "size"),
    ({"size": (2,)}, "size"), ({"height_range": (2.2, 1.3)}, "height_range"),
    ({"lateral_jitter": -0.1}, "lateral_jitter"), ({"bond_scale": 0}, "bond_scale"),
    ({"reject_dissociated": "yes"}, "reject_dissociated"),
])
def test_generator_config_bad_values(kw, param):
    with pytest.raises(InvalidParameterError, match=rf"GeneratorConfig: {param} must"):
        GeneratorConfig(**kw)


def test_generator_config_valid():
    cfg = GeneratorConfig(frames_per_system=8, val_frames_per_system=0, max_attempts=5,
                          size=(3, 3), height_range=(1.5, 1.5))
    assert (cfg.frames_per_system, cfg.size) == (8, (3, 3))
    # the constraint machinery leaves no names on the classes and adds no dataclass fields
    import dataclasses
    for cls in (GeneratorConfig, RelaxSettings):
        assert not hasattr(cls, "Interval")
        assert "_parameter_constraints" not in {f.name for f in dataclasses.fields(cls)}
