"""The fitted scale calibration of an estimator (``estimator.calibration_``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ltau_md.core._param_validation import check_positive
from ltau_md.core.exceptions import InvalidParameterError

__all__ = ["Calibration"]


@dataclass
class Calibration:
    """The fitted tolerance scale of an estimator (``estimator.calibration_``), set by
    :meth:`LTAUEstimator.set_calibration` (:func:`ltau_md.core.calibration.fit_scale` calls
    it) and saved in the manifest's ``"calibration"`` section.

    Attributes
    ----------
    s : float
        Scale of the training tolerance (confidences are read at atol*s).
    target_atol : float
        Target tolerance T in eV/A: a calibrated confidence p is P(|F_ref - F_model| <= T).
    s_per_group : dict[str, float]
        Scale per group label (e.g. per ``config_type``), used instead of ``s`` when a query's
        group is known (``predict(..., group=)``, the calculator).
    group_key : str or None
        ``atoms.info`` key holding the group label (read by the calculator), if fitted from
        structures.
    area, area_unscaled : float or None
        Miscalibration area on the calibration atoms at ``s`` and at s = 1.
    n_atoms, n_bins, binning : calibration atoms, bins and binning of the fit.
    area_per_group, n_per_group : per-group areas (at the group's s) and atom counts.
    """

    s: float
    target_atol: float
    s_per_group: dict[str, float] = field(default_factory=dict)
    group_key: str | None = None
    area: float | None = None
    area_unscaled: float | None = None
    n_atoms: int = 0
    n_bins: int = 20
    binning: str = "uniform"
    area_per_group: dict[str, float] = field(default_factory=dict)
    n_per_group: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.s = check_positive("calibration s", self.s)
        self.target_atol = check_positive("target_atol (eV/A)", self.target_atol)
        self.s_per_group = {str(g): check_positive(f"s of group {g!r}", v)
                            for g, v in dict(self.s_per_group).items()}
        if self.group_key is not None and not isinstance(self.group_key, str):
            raise InvalidParameterError(f"group_key must be a string, got {self.group_key!r}")

    def scale(self, group: Any = None) -> float:
        """The scale for ``group`` (its own if fitted, else the global one)."""
        if group is None:
            return self.s
        return self.s_per_group.get(str(group), self.s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the manifest's ``"calibration"`` section)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`; InvalidParameterError names missing or unknown keys."""
        if not isinstance(d, Mapping):
            raise InvalidParameterError(f"a calibration must be a dict, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        missing = sorted({"s", "target_atol"} - set(d))
        if unknown or missing:
            raise InvalidParameterError(f"calibration has unknown keys {unknown} / lacks {missing}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"invalid calibration: {exc}") from exc
