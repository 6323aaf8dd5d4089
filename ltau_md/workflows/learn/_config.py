"""The loop's settings: ``ltau-md learn CONFIG.yaml`` reads them, :class:`LearnConfig` holds
them (paths resolved against the config file's folder), every bad entry refused in one line
naming it."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltau_md.core.baselines import ENSEMBLE_KEYS
from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.validation import json_form
from ltau_md.core.validation import with_defaults as fill_defaults
from ltau_md.workflows.is2rs.reference import check_reference
from ltau_md.workflows.learn._select import SELECTION_METHODS

__all__ = ["ENSEMBLE_SIGNAL", "ExploreSettings", "FinetuneSettings", "LearnConfig",
           "SelectSettings", "load_config", "with_defaults"]

#: the per-atom signal an ensemble-driven loop alarms on (eV/A): the members' force deviation
ENSEMBLE_SIGNAL = ENSEMBLE_KEYS[0]


@dataclass(frozen=True)
class ExploreSettings:
    """Langevin MD from every start structure at every temperature (K), ``steps`` steps of
    ``timestep_fs`` fs, observed every ``interval`` steps; a frame alarms when its
    ``alarm`` statistic exceeds the threshold that ``alarm_rate`` of in-domain frames
    exceed (None: the estimator's default alarm; an ensemble-driven loop's is
    ``force_std:max``, DP-GEN's maximum force deviation). ``trust_levels`` (eV/A, an
    ensemble-driven loop only): DP-GEN's ``(trust_lo, trust_hi)`` instead of the alarm rate;
    frames above ``trust_hi`` are counted as alarms but never labelled."""

    structures: Path
    temperatures_K: tuple[float, ...] = (300.0,)
    steps: int = 200
    timestep_fs: float = 1.0
    interval: int = 5
    alarm_rate: float = 0.01
    alarm: str | None = None
    trust_levels: tuple[float, float] | None = None


@dataclass(frozen=True)
class SelectSettings:
    """At most ``batch_size`` frames per iteration, chosen by ``method``
    (:data:`~ltau_md.workflows.learn.SELECTION_METHODS`) from one frame per alarm window of
    at most ``window`` observations."""

    batch_size: int = 8
    method: str = "d_optimal"
    window: int = 4


@dataclass(frozen=True)
class FinetuneSettings:
    """``epochs`` of nequip-train from the last checkpoint at learning rate ``lr``."""

    epochs: int = 10
    lr: float = 0.002


@dataclass(frozen=True)
class LearnConfig:
    """Everything one loop needs (see ``docs/guide/learn.md``).

    ``out_dir``: the loop's own directory (created by it; nothing outside is written).
    ``model``: the trained NequIP checkpoint; ``nequip_config``: the nequip-train config it
    was trained with (default: ``.hydra/config.yaml`` of its run). Exactly one of
    ``estimator``: the LTAU estimator fitted for it (in-domain alarm statistics included),
    and ``ensemble``: the checkpoints of the other members of a committee trained like it
    (the ensemble-driven loop of DP-GEN, to compare with: ``model`` moves the atoms, the
    members' force deviation raises the alarm, every member is fine-tuned). ``train``: its labelled
    training frames; ``validation``: held-out in-domain frames (fine-tuning validation and
    alarm thresholds, never trained on); ``test``: optional labelled frames for the report's
    force MAE. ``oracle``: an ASE calculator as ``module:Class`` (e.g.
    ``ase.calculators.emt:EMT``). The loop stops when the share of explored frames that
    alarm is at most ``alarm_rate * (1 + tolerance)`` (converged), after ``iterations``, or
    when ``label_budget`` labels are spent.
    """

    out_dir: Path
    model: Path
    train: Path
    validation: Path
    oracle: str
    explore: ExploreSettings
    estimator: Path | None = None
    ensemble: tuple[Path, ...] = ()
    nequip_config: Path | None = None
    test: Path | None = None
    select: SelectSettings = field(default_factory=SelectSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    iterations: int = 3
    label_budget: int = 100
    tolerance: float = 0.5
    seed: int = 0

    @property
    def members(self) -> tuple[Path, ...]:
        """Every model the loop starts from: ``model`` then the ``ensemble`` members."""
        return (self.model, *self.ensemble)

    def to_dict(self) -> dict[str, Any]:
        return json_form(dataclasses.asdict(self))


_SECTIONS = {"explore": ExploreSettings, "select": SelectSettings, "finetune": FinetuneSettings}


def with_defaults(stored: dict[str, Any], cls: type = LearnConfig) -> dict[str, Any]:
    """``stored`` settings (a :meth:`LearnConfig.to_dict` written by an earlier version) with
    every setting it lacks at its default, so a loop started before a setting existed
    compares equal to the same loop now (:func:`ltau_md.core.validation.with_defaults`)."""
    return fill_defaults(stored, cls, _SECTIONS)


def _section(cls: type, raw: Any, where: str, base: Path) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidParameterError(f"{where} must be a mapping, got {type(raw).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise InvalidParameterError(f"{where}: unknown entr{'y' if len(unknown) == 1 else 'ies'}"
                                    f" {unknown} (known: {sorted(names)})")
    missing = [n for n, f in names.items() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and n not in raw]
    if missing:
        raise InvalidParameterError(f"{where}: missing {missing}")
    return raw


def _path(v: Any, where: str, base: Path, must_exist: bool = True) -> Path:
    if not isinstance(v, (str, os.PathLike)) or not str(v):
        raise InvalidParameterError(f"{where} must be a path, got {v!r}")
    p = Path(v)
    p = (base / p if not p.is_absolute() else p).resolve()
    if must_exist and not p.exists():
        raise DataError(f"{where}: {p} does not exist")
    return p


def _positive(v: Any, where: str, kind: type = float, zero: bool = False) -> Any:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (
        kind is float or float(v).is_integer())
    if not ok or not (v >= 0 if zero else v > 0):
        raise InvalidParameterError(f"{where} must be a {'non-negative' if zero else 'positive'} "
                                    f"{'integer' if kind is int else 'number'}, got {v!r}")
    return kind(v)


def _trust_levels(v: Any) -> tuple[float, float] | None:
    if v is None:
        return None
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            or not 0 < v[0] < v[1]):
        raise InvalidParameterError(f"explore.trust_levels must be [trust_lo, trust_hi] in eV/A "
                                    f"with 0 < trust_lo < trust_hi, got {v!r}")
    return float(v[0]), float(v[1])


def load_config(source: str | os.PathLike | dict[str, Any], base: str | os.PathLike | None = None
                ) -> LearnConfig:
    """A :class:`LearnConfig` from a YAML file (paths relative to its folder) or a dict
    (paths relative to ``base``, default the working directory). InvalidParameterError or
    DataError naming the first bad entry."""
    import yaml

    if isinstance(source, dict):
        raw, base_dir = dict(source), Path(base or ".").resolve()
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"learn config {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise DataError(f"learn config {path} is not valid YAML: {exc}") from exc
        base_dir = path.resolve().parent
        if not isinstance(raw, dict):
            raise DataError(f"learn config {path} must be a mapping of settings")
    raw = _section(LearnConfig, raw, "learn config", base_dir)
    ex = _section(ExploreSettings, raw["explore"], "explore", base_dir)
    sel = _section(SelectSettings, raw.get("select"), "select", base_dir)
    ft = _section(FinetuneSettings, raw.get("finetune"), "finetune", base_dir)
    temps = ex.get("temperatures_K", ExploreSettings.temperatures_K)
    if not isinstance(temps, (list, tuple)) or not temps:
        raise InvalidParameterError(f"explore.temperatures_K must be a list of numbers, got "
                                    f"{temps!r}")
    explore = ExploreSettings(
        structures=_path(ex["structures"], "explore.structures", base_dir),
        temperatures_K=tuple(_positive(t, "explore.temperatures_K entry") for t in temps),
        steps=_positive(ex.get("steps", ExploreSettings.steps), "explore.steps", int),
        timestep_fs=_positive(ex.get("timestep_fs", ExploreSettings.timestep_fs),
                              "explore.timestep_fs"),
        interval=_positive(ex.get("interval", ExploreSettings.interval), "explore.interval",
                           int),
        alarm_rate=_positive(ex.get("alarm_rate", ExploreSettings.alarm_rate),
                             "explore.alarm_rate"),
        alarm=ex.get("alarm"),
        trust_levels=_trust_levels(ex.get("trust_levels")))
    if not explore.alarm_rate < 1:
        raise InvalidParameterError(f"explore.alarm_rate must lie in (0, 1), got "
                                    f"{explore.alarm_rate}")
    if explore.alarm is not None:
        from ltau_md.core.metrics import parse_stat_key

        parse_stat_key(str(explore.alarm))  # InvalidParameterError naming the key
    method = sel.get("method", SelectSettings.method)
    if method not in SELECTION_METHODS:
        raise InvalidParameterError(f"select.method must be one of {SELECTION_METHODS}, got "
                                    f"{method!r}")
    ensemble = raw.get("ensemble") or []
    if not isinstance(ensemble, (list, tuple)):
        raise InvalidParameterError(f"ensemble must be a list of checkpoints, got {ensemble!r}")
    ensemble = tuple(_path(m, "ensemble entry", base_dir) for m in ensemble)
    if (raw.get("estimator") is None) == (not ensemble):
        raise InvalidParameterError("give exactly one of estimator (the LTAU-driven loop) and "
                                    "ensemble (the other members' checkpoints: an "
                                    "ensemble-driven loop)")
    if ensemble and explore.alarm is not None and not str(explore.alarm).startswith(
            f"{ENSEMBLE_SIGNAL}:"):
        raise InvalidParameterError(f"explore.alarm of an ensemble-driven loop must be a "
                                    f"statistic of {ENSEMBLE_SIGNAL}, got {explore.alarm!r}")
    if not ensemble and explore.trust_levels is not None:
        raise InvalidParameterError("explore.trust_levels are for an ensemble-driven loop; the "
                                    "LTAU loop sets its threshold from explore.alarm_rate")
    oracle = check_reference(raw["oracle"], "oracle")  # refused now, not after exploring
    model = _path(raw["model"], "model", base_dir)
    nequip_config = (_path(raw["nequip_config"], "nequip_config", base_dir)
                     if raw.get("nequip_config") is not None else None)
    if nequip_config is None:
        guess = model.parent / ".hydra" / "config.yaml"
        if not guess.is_file():
            raise DataError(f"nequip_config not given and {guess} (the model's run config) does "
                            "not exist: give the nequip-train config the model was trained with")
        nequip_config = guess
    return LearnConfig(
        out_dir=_path(raw["out_dir"], "out_dir", base_dir, must_exist=False),
        model=model, ensemble=ensemble,
        estimator=(_path(raw["estimator"], "estimator", base_dir)
                   if raw.get("estimator") is not None else None),
        train=_path(raw["train"], "train", base_dir),
        validation=_path(raw["validation"], "validation", base_dir),
        oracle=oracle, explore=explore, nequip_config=nequip_config,
        test=_path(raw["test"], "test", base_dir) if raw.get("test") is not None else None,
        select=SelectSettings(batch_size=_positive(sel.get("batch_size",
                                                           SelectSettings.batch_size),
                                                   "select.batch_size", int), method=method,
                              window=_positive(sel.get("window", SelectSettings.window),
                                               "select.window", int)),
        finetune=FinetuneSettings(epochs=_positive(ft.get("epochs", 10), "finetune.epochs", int),
                                  lr=_positive(ft.get("lr", 0.002), "finetune.lr")),
        iterations=_positive(raw.get("iterations", 3), "iterations", int),
        label_budget=_positive(raw.get("label_budget", 100), "label_budget", int),
        tolerance=_positive(raw.get("tolerance", 0.5), "tolerance", zero=True),
        seed=_positive(raw.get("seed", 0), "seed", int, zero=True))
