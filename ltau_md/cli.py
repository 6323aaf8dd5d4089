"""The ``ltau-md`` command line. Each subcommand's work lives in its concept's module; this file
only parses arguments and imports lazily (so ``ltau-md --help`` is fast)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def _window(text: str) -> tuple[int | None, int | None]:
    """Parse 'START:STOP' (either part may be empty) into a slice over logged epochs."""
    if ":" not in text:
        raise argparse.ArgumentTypeError(f"window must look like START:STOP, got {text!r}")
    a, b = text.split(":", 1)
    try:
        return (int(a) if a else None, int(b) if b else None)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"window must hold integers, got {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ltau-md",
        description="Per-atom LTAU uncertainty for NequIP relaxations and molecular dynamics.",
    )
    p.add_argument("--version", action="version", version=f"ltau-md {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    del sub  # subcommands are added below by add_*_parser(sub) helpers
    # Subcommands register here (keep one block per subcommand, alphabetical).
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .exceptions import LTAUError

    try:
        return int(args.func(args) or 0)
    except (LTAUError, FileNotFoundError, FileExistsError) as exc:
        print(f"ltau-md {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ltau-md {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
