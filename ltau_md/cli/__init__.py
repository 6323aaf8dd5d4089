"""The ``ltau-md`` command line: parsing and dispatch only.

Each subcommand is a module of :mod:`ltau_md.cli` (``register`` adds its parser, ``run``
does the work, importing torch/nequip/FAISS lazily so ``ltau-md --help`` is fast). Every ltau-md
error, a missing file or a refused output directory ends with one line on stderr and exit
status 2 (an option value out of range: argparse's usage line and error, also status 2), and so
does a failed write (disk full, read-only: the path and the cause); Ctrl-C with 130, SIGTERM
(handled like Ctrl-C) with 143. ``md`` and ``relax`` exit 3 when the monitor halted the run
and 4 when it stopped for non-finite values (``ltau_md.cli._common.EXIT_STATUS``); any other,
unexpected error prints one line and exits 1, or its full traceback with
``ltau-md --traceback COMMAND ...`` (as ASE's CLI). Every command takes ``--threads N`` (torch
and FAISS threads of this process, set before the command runs).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ltau_md._version import __version__
from ltau_md.cli._common import positive_int

__all__ = ["EXIT_BAD_INPUT", "EXIT_UNEXPECTED", "MODULES", "build_parser", "main", "set_threads"]

#: subcommand modules of this package, in the order ``ltau-md --help`` lists them
MODULES = ("demo", "fit", "calibrate", "evaluate", "relax", "md", "learn", "is2rs",
           "is2rs_generate")

#: exit status of a run ended by bad input (ltau-md error, missing file, refused output)
EXIT_BAD_INPUT = 2

#: exit status of an unexpected error (a bug or an environment problem; see --traceback)
EXIT_UNEXPECTED = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ltau-md",
        description="Per-atom LTAU uncertainty (0 = trusted .. 1 = untrusted) for NequIP "
        "relaxations and molecular dynamics.",
    )
    p.add_argument("--version", action="version", version=f"ltau-md {__version__}")
    p.add_argument("-T", "--traceback", action="store_true",
                   help="show the full traceback of an error instead of one line")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in MODULES:
        importlib.import_module(f"ltau_md.cli.{name}").register(sub)
    for cmd in sub.choices.values():
        cmd.add_argument("--threads", type=positive_int, default=None, metavar="N",
                         help="torch and FAISS (OpenMP) threads of this process, >= 1 "
                         "(default: leave as is, i.e. torch's default or OMP_NUM_THREADS)")
    return p


def set_threads(n: int | None) -> None:
    """torch.set_num_threads(n) and faiss.omp_set_num_threads(n); None leaves both as is."""
    if n is None:
        return
    import faiss
    import torch

    torch.set_num_threads(int(n))
    faiss.omp_set_num_threads(int(n))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_usage(sys.stderr)
        print("ltau-md: error: a command is required (ltau-md --help lists them)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    from ltau_md.cli._common import EXIT_STATUS
    from ltau_md.core.exceptions import LTAUError, Terminated

    previous = _on_sigterm(Terminated)
    shown = _one_line_warnings(args.command)
    try:
        set_threads(args.threads)
        return int(args.func(args) or 0)
    except (LTAUError, FileNotFoundError, FileExistsError, NotADirectoryError,
            IsADirectoryError, PermissionError) as exc:
        if args.traceback:
            raise
        print(f"ltau-md {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # writing failed: a full disk, a read-only or vanished directory
        if args.traceback:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"ltau-md {args.command}: error: cannot write{where}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"ltau-md {args.command}: interrupted", file=sys.stderr)
        return EXIT_STATUS["interrupted"]
    except Terminated:
        print(f"ltau-md {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_STATUS["terminated"]
    except Exception as exc:  # one line unless --traceback
        if args.traceback:
            raise
        print(f"ltau-md {args.command}: unexpected error: {type(exc).__name__}: {exc} "
              "(rerun with ltau-md --traceback for the full traceback)", file=sys.stderr)
        return EXIT_UNEXPECTED
    finally:
        _restore_sigterm(previous)
        import warnings

        warnings.showwarning = shown


def _one_line_warnings(command: str) -> object:
    """Show ltau-md's own warnings as one line, ``ltau-md CMD: warning: ...`` (others as
    Python shows them); returns the previous ``warnings.showwarning`` to restore."""
    import os
    import warnings

    previous = warnings.showwarning
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def show(message, category, filename, lineno, file=None, line=None):
        if os.path.abspath(filename).startswith(package + os.sep):
            print(f"ltau-md {command}: warning: {message}", file=file or sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    return previous


def _on_sigterm(error: type[BaseException]) -> object:
    """Make SIGTERM raise ``error`` (handled like Ctrl-C) in the main thread; returns the
    previous handler (None where signals cannot be set, e.g. outside the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def raise_error(signum, frame):  # noqa: ARG001
        raise error()

    return signal.signal(signal.SIGTERM, raise_error)


def _restore_sigterm(previous: object) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
