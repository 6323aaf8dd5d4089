"""Options shared by several subcommands, and the calculator they build."""

from __future__ import annotations

import argparse
from typing import Any


def window(text: str) -> tuple[int | None, int | None]:
    """Parse 'START:STOP' (either part may be empty) into a slice over logged epochs."""
    if ":" not in text:
        raise argparse.ArgumentTypeError(f"window must look like START:STOP, got {text!r}")
    a, b = text.split(":", 1)
    try:
        return (int(a) if a else None, int(b) if b else None)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"window must hold integers, got {text!r}") from exc


def add_model_args(p: argparse.ArgumentParser, *, out: bool = True) -> None:
    """--model, --estimator, --device, --s (and --out, --overwrite)."""
    p.add_argument("--model", required=True,
                   help="deployed NequIP model: checkpoint (.ckpt) or package (.nequip.zip)")
    p.add_argument("--estimator", required=True, help="estimator directory from `ltau-md fit`")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default cpu)")
    p.add_argument("--s", type=float, default=None,
                   help="tolerance scaling factor (default: the fitted calibration, else 1)")
    if out:
        add_out_args(p)


def add_out_args(p: argparse.ArgumentParser, help: str = "output directory") -> None:
    """--out and --overwrite (a non-empty --out is refused unless it is an earlier output of
    the same command and --overwrite is given)."""
    p.add_argument("--out", required=True, help=f"{help} (must be new or empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier output of this command in --out")


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def calculator_factory(args: argparse.Namespace) -> Any:
    """A picklable zero-argument factory of the LTAU calculator the options describe."""
    from functools import partial

    from ..nequip.loader import load_calculator

    return partial(load_calculator, model=args.model, estimator=args.estimator,
                   device=args.device, s=args.s)


def add_policy_args(p: argparse.ArgumentParser) -> None:
    """Threshold options on the max atom uncertainty (which runs from 0 to 1)."""
    p.add_argument("--stop-above", type=float,
                   help="stop when the max atom uncertainty (0..1) exceeds this")
    p.add_argument("--resample-above", type=float,
                   help="save frames whose max uncertainty (0..1) exceeds this for relabelling")
    p.add_argument("--warn-above", type=float,
                   help="record a warning when the max uncertainty (0..1) exceeds this")
    p.add_argument("--patience", type=int, default=1,
                   help="consecutive steps above a threshold before it fires (default 1)")
    p.add_argument("--hysteresis", type=float, default=0.0,
                   help="re-arm once the value is this far below the threshold (default 0)")


def policies(args: argparse.Namespace) -> list:
    """The Threshold policies of :func:`add_policy_args`' options."""
    from ..simulate import policies_from_args

    return policies_from_args(args.stop_above, args.resample_above, args.warn_above,
                              args.patience, args.hysteresis)
