"""``ltau-md relax``: relax structures with per-step uncertainty logging."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ltau_md.cli._common import (
    STATUS_EPILOG,
    add_model_args,
    add_progress_arg,
    exit_code,
    given,
    library_default,
    load_inputs,
    positive_float,
    positive_int,
)
from ltau_md.cli._policies import add_policy_args, check_policy_args, policy_factory

__all__ = [
    "NAME",
    "register",
    "run",
]

NAME = "relax"


def register(sub: argparse._SubParsersAction) -> None:
    from ltau_md.workflows.simulate import OPTIMIZERS, relax_many

    p = sub.add_parser(NAME, help="relax structures with per-step uncertainty logging",
                       description="Relax every structure in STRUCTURES with the LTAU "
                       "calculator; writes per-structure logs/trajectories and a summary table "
                       "(initial/max/mean/final uncertainty, which runs from 0 to 1). The "
                       "structures, model and estimator are checked before anything is "
                       "written.",
                       epilog=STATUS_EPILOG + " With several structures the highest code wins.")
    p.add_argument("structures", help="structure file, any ASE-readable format (all frames are "
                   "relaxed)")
    add_model_args(p)
    p.add_argument("--fmax", type=positive_float, default=None,
                   help="convergence: max force, eV/A, > 0 (default "
                   f"{library_default(relax_many, 'fmax')})")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="maximum optimizer steps per structure, >= 1 (default "
                   f"{library_default(relax_many, 'steps')})")
    p.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                   help=f"ASE optimizer (default {library_default(relax_many, 'optimizer')})")
    add_policy_args(p, NAME)
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Relax, print the summary table; exit status from the structures' run statuses."""
    from ltau_md.workflows.simulate import RELAX_KIND, relax_many

    check_policy_args(args)
    frames, calc = load_inputs(args, args.structures, RELAX_KIND)
    rows = relax_many(frames, lambda: calc, args.out,
                      **given(args, "fmax", "steps", "optimizer"),
                      policies=policy_factory(args, calc.estimator, NAME),
                      progress=not args.no_progress,
                      overwrite=args.overwrite)
    print(summary_table(rows))
    print(f"wrote {args.out}/summary.csv, summary.json and one folder per structure "
          f"({len(rows)})")
    return exit_code(r["status"] for r in rows)


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of summary rows for the terminal."""
    head = f"{'label':>10} {'steps':>6} {'initial':>8} {'max':>8} {'mean':>8} {'final':>8}  stop"
    lines = [head]
    for r in rows:
        def f(x: Any) -> str:
            return f"{x:8.3f}" if isinstance(x, float) else f"{'-':>8}"
        lines.append(f"{r['label']:>10} {r['n_observed']:>6} {f(r['initial'])} {f(r['max'])} "
                     f"{f(r['mean'])} {f(r['final'])}  {r['stop_reason'] or ''}")
    return "\n".join(lines)
