"""The :class:`Threshold` policy: fire an action when a frame statistic of a per-atom signal
has stayed above a threshold (fixed, or chosen as an in-domain alarm rate) for ``patience``
steps."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from ltau_md.core._param_validation import Interval, StrOptions, validate_params
from ltau_md.core.exceptions import InvalidParameterError, LTAUError
from ltau_md.core.metrics import alarm_threshold, is_combined, parse_selection, stat_key
from ltau_md.core.observers._event import Event

if TYPE_CHECKING:
    from ltau_md.core.observers._monitor import UQMonitor

__all__ = ["ACTIONS", "Action", "Threshold", "UNIT_SIGNALS", "size_ratio"]


Action = Literal["stop", "resample", "warn"]
#: what a policy does when it fires: stop the run, save the frame for relabelling, or record
#: a warning
ACTIONS: tuple[str, ...] = get_args(Action)


#: signals whose values lie in [0, 1]; an ``above`` threshold on them must lie there too
UNIT_SIGNALS = ("uncertainty", "confidence", "novelty_pvalue")


def size_ratio(entry: dict[str, Any], n_atoms: int | None) -> float:
    """Atoms of the watched structure / atoms per in-domain frame of the in-domain statistic
    ``entry`` (its ``atoms_per_frame``); 1 when either is unknown or zero."""
    if not n_atoms or not entry.get("atoms_per_frame"):
        return 1.0
    return float(n_atoms) / float(entry["atoms_per_frame"])


@dataclass
class Threshold:
    """Fire ``action`` when a structure's statistic of a per-atom signal has been above the
    threshold for ``patience`` consecutive observed steps.

    Parameters
    ----------
    action : "stop", "resample" or "warn"
    above : float, optional
        The threshold itself, in the units of the signal (uncertainty and confidence: [0, 1]).
    signal : str
        Any per-atom result of the calculator: "uncertainty" (default), "novelty",
        "predicted_error" (eV/A), "confidence", "novelty_pvalue", ...; or a combined signal
        ("doptimality/element+clustered_doptimality/element",
        :mod:`ltau_md.core.metrics._combined`, the default alarm's), scored against the
        in-domain references the estimator holds for it.
    on : "max", "mean" or a quantile "qNN" (e.g. "q90") over the selected atoms.
    select : None, boolean mask, index array or "tags=T[,T...]"
        Atoms the statistic is taken over (see :func:`ltau_md.core.metrics.selection_mask`; tags are
        read from the atoms at every step; "tags=2" = OC20 adsorbate atoms). None: the
        monitor's free atoms (not fixed by FixAtoms).
    alarm_rate : float, optional
        Instead of ``above``: the threshold that in-domain structures exceed with probability
        <= alarm_rate, resolved on first use from the calculator's estimator
        (``estimator.alarm_statistics_[stat_key(signal, on, select)]``, the sorted
        in-domain values fitted by ``ltau-md fit``/``calibrate`` or
        :func:`ltau_md.core.calibration.fit_alarm_thresholds`) by
        :func:`ltau_md.core.metrics.alarm_threshold`. Exactly one of ``above``/``alarm_rate``.
    patience : int >= 1
    hysteresis : float >= 0
        After firing, the policy re-arms once the value drops below ``threshold - hysteresis``.
    callback : callable, optional
        ``callback(event, monitor)`` on every firing.

    A NaN statistic (no selected atom, e.g. "tags=2" on a bare slab) is "no value": it never
    fires and resets the patience count. ``threshold`` is the numeric threshold in use (None
    until an ``alarm_rate`` is resolved); ``resolved_from`` names the in-domain statistic.
    """

    action: Action
    above: float | None = None
    signal: str = field(default="uncertainty", kw_only=True)
    on: str = field(default="max", kw_only=True)
    select: Any = field(default=None, kw_only=True)
    alarm_rate: float | None = field(default=None, kw_only=True)
    patience: int = field(default=1, kw_only=True)
    hysteresis: float = field(default=0.0, kw_only=True)
    callback: Callable[[Event, UQMonitor], None] | None = field(default=None, kw_only=True)
    _count: int = field(default=0, init=False, repr=False)
    _armed: bool = field(default=True, init=False, repr=False)
    _resolved: float | None = field(default=None, init=False, repr=False)
    resolved_from: dict[str, Any] | None = field(default=None, init=False, repr=False)

    # Per-field forms, checked by validate_params (no annotation: a class attribute, not a
    # dataclass field); the cross-field rules (exactly one of above/alarm_rate, above in
    # [0, 1] for unit signals, on/select syntax) stay in __post_init__.
    _parameter_constraints = {
        "action": [StrOptions(set(ACTIONS))],
        "above": [Interval(Real, None, None), None],
        "signal": [str],
        "on": [str],
        "alarm_rate": [Interval(Real, 0, 1, closed="neither"), None],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "hysteresis": [Interval(Real, 0, None, closed="left")],
        "callback": [Callable, None],
    }

    def __post_init__(self) -> None:
        validate_params(self._parameter_constraints, {
            "action": self.action, "above": self.above, "signal": self.signal, "on": self.on,
            "alarm_rate": self.alarm_rate, "patience": self.patience,
            "hysteresis": self.hysteresis, "callback": self.callback}, owner="Threshold")
        if not self.signal:
            raise InvalidParameterError(f"signal must be a per-atom result name, got "
                                        f"{self.signal!r}")
        stat_key(self.signal, self.on)  # validates both (a combined signal's parts too)
        if isinstance(self.select, str):
            parse_selection(self.select)
        if (self.above is None) == (self.alarm_rate is None):
            raise InvalidParameterError(
                "give exactly one of above= (a threshold on the signal) and alarm_rate= (the "
                "in-domain alarm rate the threshold is chosen for), got "
                f"above={self.above!r}, alarm_rate={self.alarm_rate!r}")
        if self.above is not None:
            self.above = _real("above", self.above)
            if self.signal in UNIT_SIGNALS and not 0.0 <= self.above <= 1.0:
                raise InvalidParameterError(
                    f"above must lie in [0, 1] for the {self.signal} (which runs from 0 to 1), "
                    f"got {self.above}")
        else:
            a = _real("alarm_rate", self.alarm_rate)
            if not 0.0 < a < 1.0:
                raise InvalidParameterError(f"alarm_rate must lie in (0, 1), got {a}")
            self.alarm_rate = a
            stat_key(self.signal, self.on, self.select)  # a mask/indices names no statistic
        h = _real("hysteresis", self.hysteresis)
        if h < 0:
            raise InvalidParameterError(f"hysteresis must be >= 0, got {h}")
        self.hysteresis = h

    @property
    def key(self) -> str:
        """Name of the watched statistic, e.g. "novelty:max@tags=2" ("...@custom" for a mask
        or index selection)."""
        if self.select is None or isinstance(self.select, str):
            return stat_key(self.signal, self.on, self.select)
        return f"{self.signal}:{self.on}@custom"

    @property
    def threshold(self) -> float | None:
        """The numeric threshold: ``above``, or the resolved ``alarm_rate`` threshold."""
        return self.above if self.above is not None else self._resolved

    def resolve(self, calc: Any, n_atoms: int | None = None) -> float:
        """The numeric threshold; for ``alarm_rate`` looked up (once) in ``calc.estimator``'s
        in-domain statistics. LTAUError when the estimator holds no such statistic.

        ``n_atoms``: the atoms the statistic is taken over in the watched structure. For a
        maximum ("max") whose in-domain statistic records its ``atoms_per_frame``, the
        threshold is adjusted to the size (:func:`~ltau_md.core.metrics.alarm_threshold`
        ``size_ratio``), so the alarm rate holds for structures larger or smaller than the
        in-domain frames."""
        if self.threshold is not None:
            return float(self.threshold)
        key = stat_key(self.signal, self.on, self.select)
        est = getattr(calc, "estimator", None)
        stats = getattr(est, "alarm_statistics_", None) or {}
        entry = stats.get(key)
        if entry is None:
            have = sorted(stats)
            raise LTAUError(
                f"alarm_rate={self.alarm_rate:g} needs the in-domain statistic {key!r}, which "
                f"the calculator's estimator does not hold (it has {have or 'none'}): fit them "
                "with `ltau-md calibrate` / ltau_md.core.calibration.fit_alarm_thresholds (or "
                "`ltau-md fit --validation`), or pass above=")
        if not isinstance(entry, dict) or not isinstance(entry.get("values"), list):
            raise LTAUError(f"the estimator's in-domain statistic {key!r} is malformed (no "
                            "'values' list): fit it again")
        ratio = size_ratio(entry, n_atoms) if self.on == "max" else 1.0
        # a combined statistic takes the size into its p-values (the monitor's value), so its
        # threshold is the in-domain one
        self._resolved = alarm_threshold(entry["values"], float(self.alarm_rate),
                                         1.0 if is_combined(self.signal) else ratio)
        self.resolved_from = {"key": key, "alarm_rate": self.alarm_rate,
                              "n_frames": entry.get("n_frames", len(entry["values"])),
                              "source": entry.get("source")}
        if ratio != 1.0:  # a structure of another size than the in-domain frames
            self.resolved_from["size_ratio"] = ratio
        return self._resolved

    def describe(self) -> dict[str, Any]:
        """JSON-able description (action, statistic, numeric threshold and its origin)."""
        return {"action": self.action, "statistic": self.key, "threshold": self.threshold,
                "above": self.above, "alarm_rate": self.alarm_rate,
                "patience": self.patience, "hysteresis": self.hysteresis,
                "resolved_from": self.resolved_from}

    def reset(self) -> None:
        """Forget the steps seen so far (patience count zero, armed): a new or rewound run."""
        self._count, self._armed = 0, True

    def update(self, value: float) -> bool:
        """Feed one step's value; True when the policy fires at this step."""
        thr = self.threshold
        if thr is None:
            raise LTAUError("the alarm_rate threshold is not resolved yet: call resolve(calc)")
        if not self._armed:
            if value < thr - self.hysteresis:
                self._armed = True
            else:
                return False
        self._count = self._count + 1 if value > thr else 0
        if self._count >= self.patience:
            self._count = 0
            self._armed = False
            return True
        return False


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise InvalidParameterError(f"{name} must be a finite number, got {value!r}")
    return float(value)
