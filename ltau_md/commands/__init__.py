"""Handlers of the ``ltau-md`` subcommands, one module per command.

Each module defines ``NAME`` (the subcommand), ``register(subparsers)`` (argparse only, so
``ltau-md --help`` stays fast) and ``run(args) -> int`` (imports the work lazily). This package
sits above everything else: it may import the core and the adapters (``ltau_md.nequip``,
``ltau_md.is2rs``, ``ltau_md.demo``); nothing imports it but :mod:`ltau_md.cli`.
"""

from __future__ import annotations

#: subcommand modules, in the order ``ltau-md --help`` lists them
MODULES = ("demo", "fit", "calibrate", "evaluate", "relax", "md", "is2rs", "is2rs_generate")
