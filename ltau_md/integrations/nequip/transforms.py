"""nequip data transforms of ltau-md (nequip keeps transforms in their own modules).

Use them through ``_target_`` entries of a ``nequip-train`` config::

    data:
      transforms:
        - _target_: ltau_md.integrations.nequip.transforms.RequireForces
        - ...nequip's own transforms...
"""

from __future__ import annotations

from nequip.data import AtomicDataDict

from ltau_md.core.exceptions import DataError

__all__ = ["RequireForces"]


class RequireForces:
    """A nequip data transform that raises ``DataError`` for a frame without reference forces.

    Put it first in ``data.transforms`` of a ``nequip-train`` config: nequip applies transforms
    to every frame it loads, including the pass computing the dataset statistics that
    ``nequip-train`` runs before training (and before any callback), so an energies-only frame
    is reported with its size and formula instead of nequip's ``KeyError: 'forces'``.
    Frames with forces pass unchanged."""

    def __call__(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        if AtomicDataDict.FORCE_KEY not in data:
            n = int(data[AtomicDataDict.POSITIONS_KEY].shape[0])
            what = f"{n} atoms"
            z = data.get(AtomicDataDict.ATOMIC_NUMBERS_KEY)
            if z is not None:
                from ase.formula import Formula

                what += ", " + Formula.from_list(
                    [_symbol(int(i)) for i in z.reshape(-1).tolist()]).format("hill")
            raise DataError(
                f"a frame of the data ({what}) has no reference '{AtomicDataDict.FORCE_KEY}' "
                "field: LTAU logs per-atom force errors, so every frame needs forces (check the "
                "data file and the dataset's key_mapping / include_keys)")
        return data

    def __repr__(self) -> str:
        return "RequireForces()"


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else "X"
