"""Uncertainty policies of the monitored-run commands (``md``, ``relax``): the threshold
options, their checks, the default policy of each command and the factory of fresh
:class:`~ltau_md.core.observers.Threshold` policies a run gets."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from ltau_md.cli._common import (
    THRESHOLD_WHY,
    alarm_rate,
    given_number,
    positive_int,
    selection,
    statistic,
)
from ltau_md.core.calibration import DEFAULT_ALARM, FALLBACK_ALARMS
from ltau_md.core.observers import ACTIONS, Threshold

__all__ = ["DEFAULT_POLICIES", "add_policy_args", "check_policy_args",
           "default_policies", "policy_factory", "policy_off_reason"]

#: default policy per command when no threshold option is given: (action, alarm rate,
#: patience), on the default alarm (:func:`~ltau_md.core.calibration.default_alarm`: its
#: fallbacks for an estimator without its signals), applied only when the estimator holds
#: that in-domain statistic
DEFAULT_POLICIES = {"md": ("stop", 0.01, 2), "relax": ("warn", 0.01, 1)}


def add_policy_args(p: argparse.ArgumentParser, command: str) -> None:
    """Threshold options: fixed thresholds (--*-above) or in-domain alarm rates (--*-rate) on a
    frame statistic (--signal, --on, --select) of a per-atom signal; ``command`` ("md" or
    "relax") names the default policy in the help."""
    action, rate, patience = DEFAULT_POLICIES[command]
    g = p.add_argument_group(
        "uncertainty policies",
        "Each --X-above / --X-rate adds a policy with action X. Without any, the default is: "
        f"{action} at alarm rate {rate:g} on {DEFAULT_ALARM} (the default alarm; "
        f"{' or '.join(FALLBACK_ALARMS)} for an estimator fitted without its signals) with "
        f"patience {patience}, when the "
        "estimator holds that in-domain statistic (`ltau-md fit --validation`, `ltau-md "
        "calibrate`); otherwise no policy (a note says so).")
    g.add_argument("--signal", default=None, metavar="KEY",
                   help="per-atom signal the policies watch: novelty, uncertainty, "
                   "predicted_error (eV/A), confidence, novelty_pvalue, a latent signal "
                   "fitted on the estimator (gmm, doptimality, ...) or one the model computes "
                   "(shallow_ensemble, mve, evidential: heads models), or a combination "
                   f"such as the default alarm's {DEFAULT_ALARM.partition(':')[0]} "
                   "(default: the default "
                   "alarm's signal for --X-rate and the default policy, uncertainty for "
                   "--X-above)")
    g.add_argument("--on", type=statistic, default="max", metavar="STAT",
                   help="structure statistic over the atoms: max, mean or a quantile qNN, e.g. "
                   "q90 (default max)")
    g.add_argument("--select", type=selection, default=None, metavar="tags=T",
                   help="take the statistic over these atoms only, e.g. tags=2 (OC20 adsorbate "
                   "atoms) or tags=1,2 (default: the atoms not fixed by FixAtoms)")
    for act, what in (("stop", "stop"), ("resample", "save the frame for relabelling"),
                      ("warn", "record a warning")):
        g.add_argument(f"--{act}-above", type=given_number, metavar="V",
                       help=f"{what} when the statistic exceeds V: 0 <= V < 1 for uncertainty, "
                       "confidence, novelty_pvalue, V >= 0 otherwise (default: never)")
        g.add_argument(f"--{act}-rate", type=alarm_rate, metavar="A",
                       help=f"{what} when the statistic exceeds the threshold that in-domain "
                       "structures exceed with probability A (from the estimator's in-domain "
                       "statistics), 0 < A < 1 (default: never)")
    g.add_argument("--patience", type=positive_int, default=None,
                   help="consecutive steps above a threshold before it fires, >= 1 (default "
                   f"{patience}, for every policy of {command})")
    g.add_argument("--hysteresis", type=given_number, default=0.0,
                   help="re-arm once the value is this far below the threshold, in the units "
                   "of --signal: in [0, 1] for uncertainty (also when --signal is not given), "
                   "confidence, novelty_pvalue, >= 0 otherwise (default 0)")
    p.set_defaults(policy_parser=p)


def check_policy_args(args: argparse.Namespace) -> None:
    """Range checks of --X-above and --hysteresis, which depend on --signal (given in any
    order): refused as argparse refuses a value (usage, ``error: argument --X: must be ...``,
    exit status 2) before anything is read or written. The --X-above thresholds and the
    hysteresis are on the scale of ``--signal``, or of the uncertainty when it is not given."""
    from ltau_md.core.calculator import PER_ATOM_KEYS
    from ltau_md.core.exceptions import InvalidParameterError
    from ltau_md.core.metrics import statistic_signals
    from ltau_md.core.model import MODEL_SIGNALS
    from ltau_md.core.observers import UNIT_SIGNALS
    from ltau_md.core.signals import SIGNAL_CLASSES

    known = (*PER_ATOM_KEYS, *SIGNAL_CLASSES, *MODEL_SIGNALS)
    if args.signal is not None:
        try:  # a combined signal ("gmm+clustered_doptimality/element"): each part known
            parts = statistic_signals(args.signal)
        except InvalidParameterError:
            parts = {""}
        if any(b not in known for b in parts):
            args.policy_parser.error(
                f"argument --signal: must be one of {', '.join(known)}, or parts of them "
                "joined by '+' (a part ending in /element normalised per element), got "
                f"{args.signal!r}")
    unit = (args.signal or "uncertainty") in UNIT_SIGNALS
    checks = [(f"--{a}-above", getattr(args, f"{a}_above")) for a in ACTIONS]
    for flag, v in checks:
        if v is None:
            continue
        if unit and not 0 <= v < 1:
            _refuse(args, flag, "a number in [0, 1)", v, THRESHOLD_WHY)
        if not unit and v < 0:
            _refuse(args, flag, "a number >= 0", v)
    h = args.hysteresis
    if (unit and not 0 <= h <= 1) or h < 0:
        _refuse(args, "--hysteresis", "a number in [0, 1]" if unit else "a number >= 0", h)


def _refuse(args: argparse.Namespace, flag: str, what: str, value: float, why: str = ""
            ) -> None:
    text = getattr(value, "text", repr(value))
    args.policy_parser.error(f"argument {flag}: must be {what}, got {text!r}{why}")


def policy_factory(args: argparse.Namespace, estimator: Any, command: str
                   ) -> Callable[[], list]:
    """A function making fresh Threshold policies from :func:`add_policy_args`' options (the
    default policy of ``command`` when none is given), after :func:`check_policy_args`; an
    alarm rate whose in-domain statistic the estimator lacks raises LTAUError here, before any
    run. Prints one line about the default policy to stderr."""
    import sys

    from ltau_md.workflows.simulate import policies_from_args

    check_policy_args(args)
    # one patience default per command, for the default policy and explicit ones alike
    patience = DEFAULT_POLICIES[command][2] if args.patience is None else args.patience
    kw = {"patience": patience, "hysteresis": args.hysteresis, "signal": args.signal,
          "on": args.on, "select": args.select}
    given = any(getattr(args, f"{a}_{k}") is not None
                for a in ACTIONS for k in ("above", "rate"))
    if given:
        from ltau_md.core.calibration import default_alarm
        from ltau_md.core.metrics import parse_stat_key

        rate_signal = parse_stat_key(default_alarm(estimator))[0]

        def make() -> list:
            return policies_from_args(args.stop_above, args.resample_above, args.warn_above,
                                      stop_rate=args.stop_rate,
                                      resample_rate=args.resample_rate,
                                      warn_rate=args.warn_rate, rate_signal=rate_signal,
                                      **kw)
        from types import SimpleNamespace

        for pol in make():  # parameter errors and missing in-domain statistics, before any run
            if pol.alarm_rate is not None:
                entry = (getattr(estimator, "alarm_statistics_", None) or {}).get(pol.key)
                reason = policy_off_reason(pol.key, entry, pol.alarm_rate)
                if reason:
                    from ltau_md.core.exceptions import DataError

                    raise DataError(f"--{pol.action}-rate {pol.alarm_rate:g}: {reason}")
            pol.resolve(SimpleNamespace(estimator=estimator))
        return make
    make, note = default_policies(command, estimator, **kw)
    print(f"ltau-md {command}: {note}", file=sys.stderr)
    return make




def policy_off_reason(key: str, entry: dict | None, rate: float) -> str | None:
    """Why an alarm at ``rate`` on the in-domain statistic ``entry`` (of ``key``) would be
    off, or None: its frames cannot resolve the rate (n >= 1/rate - 1 needed)."""
    from ltau_md.core.metrics import alarm_off_reason as reason

    if entry is None:
        return None
    why = reason(entry["n_frames"], rate, f"{entry['source']} frames of {key}")
    return None if why is None else (
        f"{why}; fit it on more held-out frames (`ltau-md fit --validation`, >= 300 "
        "recommended) or choose a larger rate")


def default_policies(command: str, estimator: Any, *, signal: str | None = None,
                     on: str = "max", select: str | None = None, patience: int | None = None,
                     hysteresis: float = 0.0) -> tuple[Callable[[], list[Threshold]], str]:
    """The default policy of ``command`` (:data:`DEFAULT_POLICIES`) as a factory of fresh
    policies, and a one-line note saying what it is, or why there is none (the estimator
    holds no in-domain statistic for it: then the factory makes no policy)."""
    from ltau_md.core.calibration import default_alarm
    from ltau_md.core.metrics import parse_stat_key, stat_key

    action, rate, default_patience = DEFAULT_POLICIES[command]
    signal = signal or parse_stat_key(default_alarm(estimator))[0]
    key = stat_key(signal, on, select)
    entry = (getattr(estimator, "alarm_statistics_", None) or {}).get(key)
    if entry is None:
        return list, (f"no default {action} policy: the estimator holds no in-domain statistic "
                      f"{key} (fit it with `ltau-md fit --validation` or `ltau-md calibrate`, "
                      "or pass --stop-above/--stop-rate, ...)")
    reason = policy_off_reason(key, entry, rate)
    if reason:
        return list, f"no default {action} policy: {reason}"
    p = default_patience if patience is None else patience

    def make() -> list[Threshold]:
        return [Threshold(action, alarm_rate=rate, signal=signal, on=on, select=select,
                          patience=p, hysteresis=hysteresis)]

    thr = make()[0].resolve(SimpleNamespace(estimator=estimator))
    return make, (f"default policy: {action} when {key} exceeds {thr:.4g} (in-domain alarm "
                  f"rate {rate:g}, from {entry['n_frames']} {entry['source']} frames) for "
                  f"{p} step(s)")
