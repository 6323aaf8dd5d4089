"""Options shared by several subcommands, their value checks (argparse ``type=`` helpers), the
calculator they build and the exit status of a monitored run.

A value outside its range is refused by argparse before anything runs: usage line, then
``ltau-md CMD: error: argument --X: ...``, exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

#: exit status of ``md`` / ``relax`` per run status (summary.json "status"); a command that
#: ran several structures exits with the highest code among them
#: (terminated: 128 + SIGTERM's 15, as a shell reports a killed process; failed: as bad input)
EXIT_STATUS = {"completed": 0, "halted": 3, "non_finite": 4, "interrupted": 130,
               "terminated": 143, "failed": 2, "not_run": 0}

#: epilog of the commands that run monitored dynamics (``md``, ``relax``)
STATUS_EPILOG = (
    "Exit status and summary.json \"status\": 0 completed (all steps run, or converged); "
    "3 halted by the monitor (a --stop-above/--stop-rate policy or md's default policy; in md "
    "also max |F| above --max-force or --max-retries rewinds used up); 4 stopped for "
    "non-finite positions, forces or energy; "
    "2 bad input (nothing written) or a failed write (disk full, read-only: one line names "
    "the path and the cause; summary.json says \"failed\" where it could still be written); "
    "130 interrupted (Ctrl-C) and 143 terminated (SIGTERM): the files written so far are "
    "complete, summary.json says \"interrupted\" / \"terminated\" and a relax summary "
    "lists the structures not run (\"not_run\"). While a run is going, its summary.json "
    "says \"running\"."
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
#: a fraction strictly between 0 and 1 (e.g. the calibration share of the frames)
open_fraction = _number(float, lambda v: 0 < v < 1, "a number in (0, 1)")
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


def statistic_key(text: str) -> str:
    """argparse type of --alarm-stats: a frame statistic "SIGNAL:ON[@tags=T]", the signal
    possibly combined ("gmm+clustered_doptimality/element:max")."""
    from ltau_md.core.metrics import parse_stat_key, stat_key

    try:
        return stat_key(*parse_stat_key(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def library_default(func: Callable[..., Any], name: str) -> Any:
    """The default of parameter ``name`` of the library function (or class) ``func``.

    Options whose library function has a default are declared with ``default=None``
    ("the library's default") and only passed on when given (:func:`given`); their help
    shows this value, so the default is defined once, in the library.
    """
    import inspect

    return inspect.signature(func).parameters[name].default


def given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options ``names`` that were given (not None), as keyword arguments."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


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


def add_mismatch_arg(p: argparse.ArgumentParser) -> None:
    """--allow-mismatch: use an estimator with a model or type map it was not fitted with."""
    p.add_argument("--allow-mismatch", action="store_true",
                   help="use the estimator although it was fitted on another model (its "
                   "manifest's model_sha256 / weights) or through another --type-map "
                   "(default: refuse, naming both)")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """--device: the torch device of the model."""
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default cpu)")


def add_model_args(p: argparse.ArgumentParser, *, out: bool = True) -> None:
    """--model, --estimator, --device, --type-map, --allow-mismatch, --s (and --out,
    --overwrite)."""
    add_model_arg(p)
    add_estimator_arg(p)
    add_device_arg(p)
    add_type_map_arg(p)
    add_mismatch_arg(p)
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
                   chemical_species_to_atom_type_map=getattr(args, "type_map", None),
                   allow_mismatch=getattr(args, "allow_mismatch", False))


def load_inputs(args: argparse.Namespace, structures: str, kind: str,
                frame: int | None = None, note_frames: bool = False) -> tuple[list, Any]:
    """Everything a monitored run needs, checked before any output is written: ``--out``
    (refused like the run itself would refuse it), the structures (all frames, or the one
    numbered ``frame``), each structure (:func:`~ltau_md.core.validation.check_structure`),
    the calculator (model and estimator) and every structure's elements against both.
    With ``note_frames`` (``frame`` is a default), a note on stderr says which frame of several
    is used. Returns ``(structures, calculator)``; raises the ltau-md error naming the
    problem."""
    from ltau_md.core.exceptions import DataError, LTAUError
    from ltau_md.core.files import check_output_dir
    from ltau_md.core.structures import read_structures
    from ltau_md.core.validation import check_structure

    check_output_dir(args.out, kind, args.overwrite)
    frames = read_structures(structures)
    numbers = range(len(frames))
    if frame is not None:
        if not -len(frames) <= frame < len(frames):
            raise DataError(f"--frame {frame}: {structures} holds {len(frames)} frame(s) "
                            f"(0 to {len(frames) - 1}, or negative from the end)")
        if note_frames and len(frames) > 1:
            print(f"ltau-md {args.command}: {structures} holds {len(frames)} frames; using "
                  f"frame {frame} (--frame N to choose another)", file=sys.stderr)
        numbers = [frame % len(frames)]
        frames = [frames[frame]]
    for i, atoms in zip(numbers, frames, strict=True):
        check_structure(atoms, f"structure {i} of {structures}")
    calc = calculator_factory(args)()
    for i, atoms in zip(numbers, frames, strict=True):
        try:
            calc.check_atoms(atoms)
        except LTAUError as exc:
            raise type(exc)(f"structure {i} of {structures}: {exc}") from exc
    return frames, calc








