"""Options shared by several subcommands, their value checks (argparse ``type=`` helpers), the
calculator they build and the exit status of a monitored run.

A value outside its range is refused by argparse before anything runs: usage line, then
``ltau-md CMD: error: argument --X: ...``, exit status 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from typing import Any

#: exit status of ``md`` / ``relax`` per run status (summary.json "status"); a command that
#: ran several structures exits with the highest code among them
EXIT_STATUS = {"completed": 0, "halted": 3, "non_finite": 4, "interrupted": 130}

#: epilog of the commands that run monitored dynamics (``md``, ``relax``)
STATUS_EPILOG = (
    "Exit status and summary.json \"status\": 0 completed (all steps run, or converged); "
    "3 halted by the monitor (a --stop-above/--stop-rate policy or md's default policy; in md "
    "also max |F| above --max-force or --max-retries rewinds used up); 4 stopped for "
    "non-finite positions, forces or energy; "
    "2 bad input (nothing written); 130 interrupted (Ctrl-C; the files written so far are "
    "complete and summary.json says \"interrupted\")."
)


def exit_code(statuses: Iterable[str]) -> int:
    """The command's exit status for the run statuses (see :data:`EXIT_STATUS`)."""
    return max((EXIT_STATUS[s] for s in statuses), default=0)


def _number(kind: Callable[[str], Any], ok: Callable[[Any], bool], what: str, why: str = ""
            ) -> Callable[[str], Any]:
    """An argparse ``type=`` converting with ``kind`` and refusing values failing ``ok`` (or
    not finite) with "must be WHAT, got 'TEXT'WHY"."""
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or (isinstance(value, float) and not math.isfinite(value)) \
                or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}{why}")
        return value
    convert.__name__ = what  # argparse names the type in some messages
    return convert


#: argparse types: an integer >= 1, an integer >= 0, a finite float > 0, a finite float >= 0
positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")
#: a fraction in [0, 1] (e.g. a hysteresis on the uncertainty scale)
unit_float = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
#: an uncertainty threshold: the uncertainty lies in [0, 1] and a policy fires when it is
#: *above* the threshold, so a threshold of 1 or more could never fire
threshold = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)",
                    " (the uncertainty runs from 0 to 1; a policy fires above its threshold, "
                    "so 1 or more never fires)")
#: why a fixed threshold on a signal that runs from 0 to 1 must lie in [0, 1)
THRESHOLD_WHY = (" (the uncertainty runs from 0 to 1; a policy fires above its threshold, so 1 "
                 "or more never fires)")


class Given(float):
    """A float that remembers how it was written (``text``), for error messages of checks that
    can only run once all options are parsed."""

    text: str


def given_number(text: str) -> Given:
    """argparse type: any finite number, range-checked later (:func:`check_policy_args`)."""
    try:
        value = Given(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    value.text = text
    return value


#: an in-domain alarm rate: the fraction of in-domain structures allowed to raise the alarm
alarm_rate = _number(float, lambda v: 0 < v < 1, "a number in (0, 1)",
                     " (the fraction of in-domain structures that may raise the alarm)")


def statistic(text: str) -> str:
    """argparse type of --on: "max", "mean" or a quantile "qNN"."""
    from ltau_md.core.metrics import stat_key

    try:
        stat_key("x", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def selection(text: str) -> str:
    """argparse type of --select: "tags=T[,T...]" (OC20 tags; 2 = adsorbate atoms)."""
    from ltau_md.core.metrics import parse_selection

    try:
        return "tags=" + ",".join(map(str, parse_selection(text)[1]))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def window(text: str) -> tuple[int | None, int | None]:
    """Parse 'START:STOP' (either part may be empty) into a slice over logged epochs."""
    if ":" not in text:
        raise argparse.ArgumentTypeError(f"window must look like START:STOP, got {text!r}")
    a, b = text.split(":", 1)
    try:
        return (int(a) if a else None, int(b) if b else None)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"window must hold integers, got {text!r}") from exc


def type_map(text: str) -> dict[str, str]:
    """Parse 'H=Htype,C=Ctype' (element symbol = model type name) into a dict."""
    from ase.data import atomic_numbers

    out: dict[str, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        sym, sep, name = item.partition("=")
        if not sep or not name or sym not in atomic_numbers:
            raise argparse.ArgumentTypeError(
                f"type map entries look like SYMBOL=TYPE (e.g. H=H,C=C_sp2), got {item!r}")
        out[sym] = name
    if not out:
        raise argparse.ArgumentTypeError("the type map is empty")
    return out


def add_type_map_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type-map", type=type_map, default=None, metavar="SYMBOL=TYPE,...",
                   help="element symbol -> model type name, for models whose type names are "
                   "not element symbols (nequip's chemical_species_to_atom_type_map; "
                   "default: the type names are the symbols)")


def add_model_arg(p: argparse.ArgumentParser) -> None:
    """--model: the deployed NequIP model (declared here once for every command)."""
    p.add_argument("--model", required=True,
                   help="deployed NequIP model: checkpoint (.ckpt) or package (.nequip.zip) "
                   "(required)")


def add_estimator_arg(p: argparse.ArgumentParser) -> None:
    """--estimator: the estimator directory of ``ltau-md fit``."""
    p.add_argument("--estimator", required=True,
                   help="estimator directory from `ltau-md fit` for --model (required)")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """--device: the torch device of the model."""
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default cpu)")


def add_model_args(p: argparse.ArgumentParser, *, out: bool = True) -> None:
    """--model, --estimator, --device, --type-map, --s (and --out, --overwrite)."""
    add_model_arg(p)
    add_estimator_arg(p)
    add_device_arg(p)
    add_type_map_arg(p)
    p.add_argument("--s", type=positive_float, default=None,
                   help="tolerance scaling factor > 0 (default: the fitted calibration, else 1)")
    if out:
        add_out_args(p)


def add_out_args(p: argparse.ArgumentParser, help: str = "output directory") -> None:
    """--out and --overwrite (a non-empty --out is refused unless it is an earlier output of
    the same command and --overwrite is given)."""
    p.add_argument("--out", required=True, help=f"{help}, must be new or empty (required)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier output of this command in --out (default: refuse)")


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true",
                   help="hide progress bars (default: shown)")


def calculator_factory(args: argparse.Namespace) -> Any:
    """A picklable zero-argument factory of the LTAU calculator the options describe."""
    from functools import partial

    from ltau_md.integrations.nequip.loader import load_calculator

    return partial(load_calculator, model=args.model, estimator=args.estimator,
                   device=args.device, s=args.s,
                   chemical_species_to_atom_type_map=getattr(args, "type_map", None))


def load_inputs(args: argparse.Namespace, structures: str, kind: str,
                first_only: bool = False) -> tuple[list, Any]:
    """Everything a monitored run needs, checked before any output is written: ``--out``
    (refused like the run itself would refuse it), the structures (all frames, or the first),
    the calculator (model and estimator) and every structure's elements against both.
    Returns ``(structures, calculator)``; raises the ltau-md error naming the problem."""
    from ltau_md.core._io import check_output_dir
    from ltau_md.core._validate import check_no_overlap
    from ltau_md.core.exceptions import LTAUError
    from ltau_md.core.structures import read_structures

    check_output_dir(args.out, kind, args.overwrite)
    frames = read_structures(structures)
    if first_only:
        frames = frames[:1]
    calc = calculator_factory(args)()
    for i, atoms in enumerate(frames):
        try:
            calc.check_atoms(atoms)
        except LTAUError as exc:
            raise type(exc)(f"structure {i} of {structures}: {exc}") from exc
        check_no_overlap(atoms, f"structure {i} of {structures}")
    return frames, calc


def add_policy_args(p: argparse.ArgumentParser, command: str) -> None:
    """Threshold options: fixed thresholds (--*-above) or in-domain alarm rates (--*-rate) on a
    frame statistic (--signal, --on, --select) of a per-atom signal; ``command`` ("md" or
    "relax") names the default policy in the help."""
    from ltau_md.workflows.simulate import DEFAULT_POLICIES

    action, rate, patience = DEFAULT_POLICIES[command]
    g = p.add_argument_group(
        "uncertainty policies",
        "Each --X-above / --X-rate adds a policy with action X. Without any, the default is: "
        f"{action} at alarm rate {rate:g} on novelty:max with patience {patience}, when the "
        "estimator holds that in-domain statistic (`ltau-md fit --validation`, `ltau-md "
        "calibrate`); otherwise no policy (a note says so).")
    g.add_argument("--signal", default=None, metavar="KEY",
                   help="per-atom signal the policies watch: novelty, uncertainty, "
                   "predicted_error (eV/A), confidence, novelty_pvalue (default: novelty for "
                   "--X-rate and the default policy, uncertainty for --X-above)")
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
                   help="consecutive steps above a threshold before it fires, >= 1 (default 1; "
                   f"{patience} for the default policy)")
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
    from ltau_md.core.observers import UNIT_SIGNALS

    if args.signal is not None and args.signal not in PER_ATOM_KEYS:
        args.policy_parser.error(f"argument --signal: must be one of {', '.join(PER_ATOM_KEYS)}"
                                 f", got {args.signal!r}")
    unit = (args.signal or "uncertainty") in UNIT_SIGNALS
    checks = [(f"--{a}-above", getattr(args, f"{a}_above")) for a in ("stop", "resample", "warn")]
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

    from ltau_md.workflows.simulate import default_policies, policies_from_args

    check_policy_args(args)
    kw = {"patience": args.patience, "hysteresis": args.hysteresis, "signal": args.signal,
          "on": args.on, "select": args.select}
    given = any(getattr(args, f"{a}_{k}") is not None
                for a in ("stop", "resample", "warn") for k in ("above", "rate"))
    if given:
        def make() -> list:
            return policies_from_args(args.stop_above, args.resample_above, args.warn_above,
                                      stop_rate=args.stop_rate,
                                      resample_rate=args.resample_rate,
                                      warn_rate=args.warn_rate, **kw)
        from types import SimpleNamespace

        for pol in make():  # parameter errors and missing in-domain statistics, before any run
            pol.resolve(SimpleNamespace(estimator=estimator))
        return make
    make, note = default_policies(command, estimator, **kw)
    print(f"ltau-md {command}: {note}", file=sys.stderr)
    return make
