"""Universal potentials as IS2RS references, by import path (``--reference``).

The two whose weights ship inside their wheels (others download them at run time): CHGNet
(Deng et al., Nat. Mach. Intell. 2023; ``pip install -e ".[universal]"``), the documented
choice (closer to the Xu-Kitchin DFT minima than SevenNet-0 and cheaper per force call,
``benchmarks/is2rs_reference_dft.py``), and SevenNet-0 (Park et al., J. Chem. Theory Comput.
2024; ``pip install -e ".[sevennet]"``). Each factory takes no argument and returns an ASE
calculator on the CPU, e.g. ``ltau-md is2rs-generate --reference
ltau_md.workflows.is2rs.universal:chgnet``.
"""

from __future__ import annotations

from ase.calculators.calculator import Calculator

from ltau_md.core.exceptions import DataError

__all__ = ["chgnet", "sevennet0"]


def _missing(package: str, how: str) -> DataError:
    return DataError(f"the reference needs the {package!r} package, which is not installed: "
                     f"{how}")


def sevennet0() -> Calculator:
    """SevenNet-0 (11Jul2024 weights, from the ``sevenn`` wheel) on the CPU."""
    try:
        from sevenn.calculator import SevenNetCalculator
    except ImportError as exc:
        raise _missing("sevenn", 'pip install -e ".[sevennet]"') from exc
    return SevenNetCalculator("7net-0", device="cpu")


def chgnet() -> Calculator:
    """CHGNet (its wheel's default weights) on the CPU."""
    try:
        from chgnet.model.dynamics import CHGNetCalculator
    except ImportError as exc:
        raise _missing("chgnet", 'pip install -e ".[universal]"') from exc
    return CHGNetCalculator(use_device="cpu")
