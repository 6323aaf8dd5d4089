"""IS2RS campaign results on disk: one JSON per system (NaN <-> null), and the result list."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

from ltau_md.core.exceptions import InvalidParameterError
from ltau_md.core.files import to_json_safe, write_json_atomic
from ltau_md.core.metrics import parse_stat_key, stat_key
from ltau_md.workflows.is2rs.metrics import ADSORBATE_TAG, OC20_TAGS

__all__ = [
    "CampaignResults",
    "FERR",
    "FERR_ADS",
    "NOVELTY",
    "NOVELTY_ADS",
    "PERR",
    "RESULT_VERSION",
    "STAT_NAMES",
    "UQ",
    "UQ_ADS",
    "UQ_ATOM_MEAN",
    "is_series_key",
    "load_result",
    "result_path",
    "save_result",
    "series_key",
]

RESULT_VERSION = 4
"""Version of the per-system result records; a saved result of another version is recomputed
(3: step statistics named ``SIGNAL:STAT[@SELECTION]/REDUCTION``, e.g. ``uncertainty:max/max``,
by :func:`series_key`, instead of the ad-hoc ``uq_*`` / ``ferr_*`` names of version 2; 4: the
free atoms from the FixAtoms mask (tags as the fallback), and ``is2re_error``)."""

STAT_NAMES: tuple[str, ...] = ("initial", "final", "max", "mean")
"""The reductions of a per-step series in a result: :func:`series_key` ``(frame_key, name)``."""

_ADS = f"tags={ADSORBATE_TAG}"
_EVERY_TAG = "tags=" + ",".join(map(str, OC20_TAGS))
# The per-step frame statistics of a relaxation (keys of :func:`ltau_md.core.metrics.stat_key`;
# without a selection: over the free atoms, the monitor's selection).
UQ = stat_key("uncertainty", "max")
"""Max uncertainty 1 - p over the free atoms (the monitor's aggregate)."""
UQ_ATOM_MEAN = stat_key("uncertainty", "mean")
"""Mean uncertainty 1 - p over the free atoms."""
PERR = stat_key("predicted_error", "max")
"""Max predicted force error over the free atoms (eV/A)."""
UQ_ADS = stat_key("uncertainty", "max", _ADS)
"""Max uncertainty 1 - p over the adsorbate atoms."""
NOVELTY = stat_key("novelty", "max", _EVERY_TAG)
"""Max latent-distance novelty over all atoms (every OC20 tag)."""
NOVELTY_ADS = stat_key("novelty", "max", _ADS)
"""Max latent-distance novelty over the adsorbate atoms."""
FERR = stat_key("force_error", "max")
"""Max over the free atoms of the true force error |F_ref - F_model| (eV/A)."""
FERR_ADS = stat_key("force_error", "max", _ADS)
"""Max over the adsorbate atoms of the true force error |F_ref - F_model| (eV/A)."""


def series_key(frame_key: str, reduction: str) -> str:
    """The result field of the step reduction ``reduction`` (one of :data:`STAT_NAMES`) of the
    per-step series of the frame statistic ``frame_key``, e.g. ``("uncertainty:max", "max")``
    -> ``"uncertainty:max/max"`` (the highest per-step max uncertainty along the relaxation),
    ``(NOVELTY_ADS, "initial")`` -> ``"novelty:max@tags=2/initial"``.

    Parameters
    ----------
    frame_key
        A frame statistic key ``SIGNAL:STAT[@tags=T]`` (:func:`~ltau_md.core.metrics.stat_key`).
    reduction
        How the steps are reduced: ``"initial"``, ``"final"``, ``"max"`` or ``"mean"``.

    Returns
    -------
    str
        ``f"{frame_key}/{reduction}"``.
    """
    if reduction not in STAT_NAMES:
        raise InvalidParameterError(
            f"a step reduction is one of {STAT_NAMES}, got {reduction!r}")
    parse_stat_key(frame_key)  # validates
    return f"{frame_key}/{reduction}"


def is_series_key(key: str) -> bool:
    """Whether ``key`` is a :func:`series_key` field (``SIGNAL:STAT[@tags=T]/REDUCTION``)."""
    head, sep, reduction = str(key).rpartition("/")
    if not sep or reduction not in STAT_NAMES:
        return False
    try:
        parse_stat_key(head)
    except InvalidParameterError:
        return False
    return True


class CampaignResults(list):
    """The results of the systems that are done (ok or error records), in input order, with
    ``not_done`` (sid -> reason: the cluster lost the task; nothing was saved for it) and
    ``n_systems`` (all systems asked for).

    Parameters
    ----------
    results
        Result dicts of the systems that are done, in input order.
    n_systems
        Number of systems the campaign was asked for.
    not_done
        sid -> reason for every system the cluster lost (nothing saved for it).
    """

    def __init__(self, results: Sequence[dict], n_systems: int,
                 not_done: dict[str, str] | None = None) -> None:
        super().__init__(results)
        self.n_systems = n_systems
        self.not_done = dict(not_done or {})

    @property
    def counts(self) -> dict[str, int]:
        """done (ok), failed (error records), not_done, total.

        Returns
        -------
        dict[str, int]
            ``{"done", "failed", "not_done", "total"}`` -> number of systems.
        """
        ok = sum(1 for r in self if r.get("status") == "ok")
        return {"done": ok, "failed": len(self) - ok, "not_done": len(self.not_done),
                "total": self.n_systems}


def _safe_name(sid: str) -> str:
    """A file name for ``sid``: unsafe characters replaced, plus a hash of ``sid`` when any
    was, so two sids never share a file."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", sid)
    if name != sid:
        name += "-" + hashlib.sha1(sid.encode()).hexdigest()[:8]
    return name


def result_path(out_dir: str | Path, sid: str) -> Path:
    """Where the result JSON of system ``sid`` lives in a campaign directory.

    Parameters
    ----------
    out_dir
        The campaign directory.
    sid
        The system id.

    Returns
    -------
    Path
        ``out_dir/results/<safe sid>.json``.
    """
    return Path(out_dir) / "results" / f"{_safe_name(sid)}.json"


#: result fields that are floats (NaN saved as JSON null)
_NUMERIC_KEYS = re.compile(
    r"^(rmsd|mean_distance|max_distance|ads_displacement|ref_travel|energy|fmax_final|"
    r"ml_fmax_initial|wall_s|force_mae|ref_energy_at_end|ref_fmax_at_end|ref_energy_given|"
    r"rerelax_energy|ref_energy_min|energy_above_min|rmsd_min|rmsd_min_sym|"
    r"mean_distance_min_sym|ads_displacement_min_sym|ref_wall_s|trajectory_reference_s)$"
)
"""Result fields that are floats besides the :func:`series_key` fields."""


def from_json(obj: dict) -> dict:
    """None -> NaN for the numeric fields written by :func:`save_result`."""
    out = dict(obj)
    for k, v in out.items():
        if v is None and (_NUMERIC_KEYS.match(k) or is_series_key(k)):
            out[k] = math.nan
        elif k in ("uq_series", "fmax_series") and isinstance(v, list):
            out[k] = [math.nan if x is None else x for x in v]
    return out


def save_result(out_dir: str | Path, result: dict) -> Path:
    """Write one system's result atomically; returns its path.

    Parameters
    ----------
    out_dir
        The campaign directory.
    result
        The system's result (NaN and inf are written as JSON null).

    Returns
    -------
    Path
        Where it was written (:func:`result_path`).
    """
    path = result_path(out_dir, result["sid"])
    write_json_atomic(path, to_json_safe(result))
    return path


def load_result(out_dir: str | Path, sid: str) -> dict | None:
    """A saved result, or None when absent or unreadable (e.g. written by another tool).

    Parameters
    ----------
    out_dir
        The campaign directory.
    sid
        The system id.

    Returns
    -------
    dict or None
        The result, JSON nulls of numeric fields read back as NaN.
    """
    path = result_path(out_dir, sid)
    try:
        return from_json(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
