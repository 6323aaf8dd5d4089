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

from ase.calculators.calculator import Calculator, all_changes

from ltau_md.core.exceptions import DataError

__all__ = ["Float32Guard", "chgnet", "sevennet0"]


class Float32Guard(Calculator):
    """An ASE calculator that runs ``inner`` with torch's default dtype float32 and restores
    the process's default afterwards.

    A NequIP model loaded in the same process sets torch's default dtype to float64; the
    universal potentials build their input tensors with the default dtype and hold float32
    weights, so without the guard every call fails ("expected m1 and m2 to have the same
    dtype"). Results (energy eV, forces eV/A) are the inner calculator's.

    Parameters
    ----------
    inner
        The calculator to guard (built under float32 too, see :func:`chgnet`).
    """

    def __init__(self, inner: Calculator) -> None:
        super().__init__()
        self.inner = inner
        self.implemented_properties = list(inner.implemented_properties)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """Evaluate ``inner`` on ``atoms`` under float32 and copy its results."""
        super().calculate(atoms, properties, system_changes)
        with _float32():
            self.inner.calculate(self.atoms, properties, all_changes)
        self.results = dict(self.inner.results)


class _float32:
    """Context: torch's default dtype float32 inside, the previous one restored after."""

    def __enter__(self) -> None:
        import torch

        self.old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float32)

    def __exit__(self, *exc) -> None:
        import torch

        torch.set_default_dtype(self.old)


def _missing(package: str, how: str) -> DataError:
    return DataError(f"the reference needs the {package!r} package, which is not installed: "
                     f"{how}")


def sevennet0() -> Calculator:
    """SevenNet-0 (11Jul2024 weights, from the ``sevenn`` wheel) on the CPU, in float32
    whatever torch's default dtype (:class:`Float32Guard`)."""
    try:
        from sevenn.calculator import SevenNetCalculator
    except ImportError as exc:
        raise _missing("sevenn", 'pip install -e ".[sevennet]"') from exc
    with _float32():
        return Float32Guard(SevenNetCalculator("7net-0", device="cpu"))


def chgnet() -> Calculator:
    """CHGNet (its wheel's default weights) on the CPU, in float32 whatever torch's default
    dtype (:class:`Float32Guard`)."""
    try:
        from chgnet.model.dynamics import CHGNetCalculator
    except ImportError as exc:
        raise _missing("chgnet", 'pip install -e ".[universal]"') from exc
    with _float32():
        return Float32Guard(CHGNetCalculator(use_device="cpu"))
