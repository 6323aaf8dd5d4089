"""Calibrating on labelled structures: splitting frames, fitting s (and the alarm statistics
of the same structures) from ASE Atoms evaluated with a feature model."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ltau_md.core.calibration._alarms import (
    DEFAULT_ALARM_STATS,
    fit_alarm_thresholds,
    per_atom_uncertainty,
    tags_and_free,
)
from ltau_md.core.calibration._scale import ScaleFit, fit_scale
from ltau_md.core.exceptions import DataError, InvalidParameterError
from ltau_md.core.model import DEFAULT_BATCH_SIZE, evaluate_structures, structure_offsets
from ltau_md.core.structures import reference_forces
from ltau_md.core.validation import check_frame_offsets

if TYPE_CHECKING:
    from ltau_md.core.estimator import LTAUEstimator

__all__ = ["calibrate_structures", "split_frames"]


def split_frames(frame_offsets: np.ndarray, fraction: float = 0.5, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Split atoms by whole structures into (calibration, evaluation) boolean masks (n_atoms,).

    ``fraction`` of the frames (rounded, at least one each side) go to calibration, chosen
    with ``seed``; splitting by frame keeps correlated atoms of one structure together."""
    off = check_frame_offsets(frame_offsets, min_frames=2)
    if not 0 < fraction < 1:
        raise InvalidParameterError(f"fraction must be in (0, 1), got {fraction}")
    n_frames = off.size - 1
    n_cal = int(np.clip(round(fraction * n_frames), 1, n_frames - 1))
    rng = np.random.default_rng(seed)
    cal_frames = np.zeros(n_frames, dtype=bool)
    cal_frames[rng.choice(n_frames, n_cal, replace=False)] = True
    cal = np.repeat(cal_frames, np.diff(off))
    return cal, ~cal


def calibrate_structures(
    model: Any,
    estimator: LTAUEstimator,
    frames: Sequence[Any],
    *,
    group_key: str | None = None,
    target_atol: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    alarm_stats: bool = True,
    stats: Sequence[str] = DEFAULT_ALARM_STATS,
    **fit_kwargs: Any,
) -> tuple[ScaleFit, dict[str, np.ndarray]]:
    """Fit s on labelled structures (ASE Atoms with reference forces, eV/A) evaluated with a
    :class:`~ltau_md.core.model.FeatureModel` (the deployed model the estimator was fitted for).

    ``group_key``: an ``atoms.info`` key (e.g. "config_type") whose value labels every atom
    of a structure for per-group s (stored in the calibration, so the calculator reads it).
    Returns the :class:`ScaleFit` (stored as ``estimator.calibration_`` unless ``store=False``
    is passed) and the arrays used: ``errors`` (n,) eV/A,
    ``indices`` (n, k), ``groups`` (n,) or absent, ``frame_offsets`` (F+1,), ``novelty`` (n,).

    With ``alarm_stats`` (and ``store``) the in-domain frame statistics ``stats`` of the same
    structures (default :data:`DEFAULT_ALARM_STATS`, uncertainty at the fitted s) are stored
    too, source "calibration" (:func:`fit_alarm_thresholds`), so Threshold(alarm_rate=...)
    works."""
    frames = list(frames)
    if not frames:
        raise DataError("no calibration structures given")
    refs = [reference_forces(a, i, "calibration") for i, a in enumerate(frames)]
    outs = evaluate_structures(model, frames, batch_size)
    feats = np.concatenate([np.asarray(o.features) for o in outs])
    err = np.linalg.norm(np.concatenate(refs) - np.concatenate([o.forces for o in outs]), axis=1)
    species = np.concatenate([a.numbers for a in frames])
    dist, idx = estimator.kneighbors(feats, species)
    arrays: dict[str, np.ndarray] = {
        "errors": err, "indices": idx,
        "frame_offsets": structure_offsets(frames),
        "novelty": estimator.novelty_of(dist, idx, species)[0],
    }
    groups = None
    if group_key is not None:
        missing = [i for i, a in enumerate(frames) if group_key not in a.info]
        if missing:
            raise DataError(f"structures {missing[:10]} lack info[{group_key!r}]")
        groups = np.concatenate([[str(a.info[group_key])] * len(a) for a in frames])
        arrays["groups"] = groups
    ref_norm = None
    if float(estimator.summary_.rtol) > 0:
        ref_norm = np.linalg.norm(np.concatenate(refs), axis=1)
    with warnings.catch_warnings():
        if alarm_stats:  # refitted below
            warnings.filterwarnings("ignore", message="in-domain statistics")
        fit = fit_scale(estimator, None, err, groups, indices=idx, target_atol=target_atol,
                        ref_force_norm=ref_norm, group_key=group_key, **fit_kwargs)
    if alarm_stats and fit_kwargs.get("store", True):
        per_atom = {"novelty": arrays["novelty"],
                    "uncertainty": per_atom_uncertainty(estimator, idx, frames),
                    **estimator.signal_values(feats, species)}
        fit_alarm_thresholds(estimator, per_atom, arrays["frame_offsets"], stats=stats,
                             **tags_and_free(frames), numbers=species, source="calibration")
    return fit, arrays
