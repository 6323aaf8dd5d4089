"""Fit an LTAU estimator from ``nequip-train`` runs (one ensemble member per run).

Each run directory holds one member's error log (written by
:class:`~ltau_md.integrations.nequip.LTAUErrorLogger`, different seeds); the logs must share the
training
set fingerprint. The descriptors of the *deployed* model index the estimator.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ltau_md.core.calibration import (
    DEFAULT_ALARM_STATS,
    DEFAULT_SIGNALS,
    check_statistic_signals,
    check_training_statistics,
)
from ltau_md.core.errorlog import (
    FRAMES_FILE,
    VALIDATION_FILE,
    ErrorLog,
    check_same_dataset,
    is_error_log,
)
from ltau_md.core.exceptions import ArtifactError, DataError, InvalidParameterError
from ltau_md.core.files import check_output_dir, sha256_file
from ltau_md.core.model import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from ltau_md.core.estimator import LTAUEstimator

__all__ = ["find_error_log", "fit_from_runs", "fit_from_structures"]


def find_error_log(run_dir: str | os.PathLike) -> Path:
    """The error-log directory of a run: ``run_dir`` itself, ``run_dir/ltau_log``, or the
    single error log found below ``run_dir`` (ArtifactError if none or several)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"run directory {run_dir} does not exist")
    for cand in (run_dir, run_dir / "ltau_log"):
        if is_error_log(cand):
            return cand
    found = sorted(p.parent for p in run_dir.rglob("manifest.json") if is_error_log(p.parent))
    if not found:
        raise ArtifactError(f"no ltau-md error log under {run_dir}")
    if len(found) > 1:
        raise ArtifactError(f"several error logs under {run_dir}: "
                            f"{[str(p) for p in found]}; pass the one to use")
    return found[0]


def fit_from_runs(
    run_dirs: Sequence[str | os.PathLike],
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    k: int | None = None,
    index: str | None = None,
    atol: float | None = None,
    rtol: float = 0.0,
    window: tuple[int | None, int | None] = (None, None),
    data: str | os.PathLike | Sequence[Any] | None = None,
    *,
    validation: str | os.PathLike | Sequence[Any] | None = None,
    s: float | None = None,
    overwrite: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "cpu",
    progress: bool = True,
    chemical_species_to_atom_type_map: dict[str, str] | None = None,
    signals: tuple[str, ...] = DEFAULT_SIGNALS,
    alarm_stats: Sequence[str] = (),
    **estimator_kwargs: Any,
) -> LTAUEstimator:
    """Fit and save (to ``out_dir``) an :class:`~ltau_md.core.estimator.LTAUEstimator`.

    run_dirs: one directory per ensemble member (a run dir, or the log dir itself).
    model_path: the deployed model (``.ckpt`` or ``.nequip.zip``) whose descriptors index the
        estimator.
    k, index, atol (eV/A, None = final training force MAE), rtol, window (slice over logged
        epochs), s and ``estimator_kwargs``: passed to LTAUEstimator; ``k`` and ``index``
        None mean LTAUEstimator's defaults.
    signals: latent signals (:mod:`ltau_md.core.signals`) fitted with the estimator; default
        the default alarm's (:data:`~ltau_md.core.calibration.DEFAULT_SIGNALS`, of
        :data:`~ltau_md.core.calibration.DEFAULT_ALARM`).
    alarm_stats: in-domain statistics fitted besides the default ones (keys
        "SIGNAL:ON[@tags=T]", combined signals too, e.g.
        "doptimality+clustered_doptimality/element:max"), of novelty, uncertainty and
        ``signals``.
    overwrite: ``out_dir`` must be missing or empty, or (with ``overwrite``) an estimator saved
        earlier; anything else is refused (OutputExistsError) before any work is done.
    data: the training structures in the logged order (a file or a list of Atoms); default is
        the ``frames.traj`` the callback wrote next to the first log. Their fingerprint is
        checked against the logs'.
    validation: held-out in-domain structures (a file or a list of Atoms; no labels needed),
        e.g. the training run's validation set: the in-domain frame statistics behind
        ``Threshold(alarm_rate=...)`` are fitted on them
        (:func:`~ltau_md.core.calibration.alarm_statistics_from_structures`, source "validation").
        Default: the ``validation.traj`` the callback wrote next to the first log that has one
        (the run's own validation frames). Without any, novelty statistics come from the
        training atoms' leave-one-out novelty
        (:func:`~ltau_md.core.calibration.alarm_statistics_from_training`, source "training-loo",
        approximate: alarms fire more often than the nominal rate).
    """
    from ltau_md.core.calibration import (
        alarm_statistics_from_structures,
        alarm_statistics_from_training,
    )
    from ltau_md.core.estimator import FORMAT, LTAUEstimator
    from ltau_md.integrations.nequip.model import (
        NequIPFeatureModel,
        as_atoms_list,
        descriptors_for_dataset,
    )

    if not run_dirs:
        raise DataError("no run directories given")
    check_output_dir(out_dir, FORMAT, overwrite)
    check_statistic_signals(alarm_stats, {"novelty", "uncertainty", *signals})
    log_dirs: list[Path] = []
    for rd in run_dirs:
        d = find_error_log(rd).resolve()
        if d in log_dirs:
            warnings.warn(f"run {rd} was given twice (error log {d}): the duplicate is "
                          "dropped, one ensemble member each", UserWarning, stacklevel=2)
            continue
        log_dirs.append(d)
    logs = [ErrorLog.open(d) for d in log_dirs]
    check_same_dataset(logs)
    fp = logs[0].fingerprint
    for lg in logs:
        if not lg.members:
            raise ArtifactError(f"error log {lg.path} holds no logged epochs")
    if data is None:
        frames = next((d / FRAMES_FILE for d in log_dirs if (d / FRAMES_FILE).exists()), None)
        if frames is None:
            raise ArtifactError(f"no {FRAMES_FILE} next to the error logs {log_dirs}: pass the "
                                "training structures (data=...) in the logged order")
        data = frames
    if validation is None:
        validation = next((d / VALIDATION_FILE for d in log_dirs
                           if (d / VALIDATION_FILE).exists()), None)
    if validation is None:  # the statistics will come from the training frames
        check_training_statistics(alarm_stats, set(signals))
    # every input checked before the (slow) model load and descriptor pass
    metadata = estimator_kwargs.pop("metadata", None) or {}
    given = {name: v for name, v in (("k", k), ("index", index)) if v is not None}
    est = LTAUEstimator(s=s, atol=atol, rtol=rtol, window=window, **given,
                        signals=tuple(signals), **estimator_kwargs)
    summary = est.error_summary(logs)  # parameters, window and atol against the logs
    if int(est.k) > summary.n_atoms:
        raise InvalidParameterError(f"k={est.k} exceeds the {summary.n_atoms} training atoms "
                                    f"logged in {log_dirs[0]}")
    train_frames = _read_before_model(data)
    val_frames = _read_before_model(validation)
    model = NequIPFeatureModel.from_file(
        model_path, device=device,
        chemical_species_to_atom_type_map=chemical_species_to_atom_type_map)
    if train_frames is None:  # a nequip dataset: its types are read through the model's
        train_frames = as_atoms_list(data, model.type_names)
    if val_frames is None and validation is not None:
        val_frames = as_atoms_list(validation, model.type_names)
    desc = descriptors_for_dataset(model, train_frames, batch_size=batch_size,
                                   progress=progress, fingerprint=fp)
    meta = {**_model_metadata(model, model_path),
            "runs": [str(Path(r).resolve()) for r in run_dirs],
            "error_logs": [str(d) for d in log_dirs]}
    if not isinstance(data, (list, tuple)):
        meta["data"] = str(Path(data).resolve())
    if isinstance(validation, (str, os.PathLike)):
        meta["validation"] = str(Path(validation).resolve())
    est.metadata = {**meta, **metadata}
    est.fit(desc, summary, species=logs[0].species)
    stats = (*DEFAULT_ALARM_STATS, *alarm_stats)
    if val_frames is not None:
        alarm_statistics_from_structures(model, est, val_frames, source="validation",
                                         batch_size=batch_size, stats=stats)
    else:
        alarm_statistics_from_training(est, logs[0].frame_offsets, frames=train_frames,
                                       descriptors=desc, stats=stats)
    est.save(out_dir)
    return est


def _read_before_model(data: Any) -> list | None:
    """Structures from a file or a list of Atoms (read and checked before the model is
    loaded); None for anything else (a nequip dataset, read through the model's types)."""
    from ase import Atoms

    from ltau_md.core.structures import read_structures

    if data is None:
        return None
    if isinstance(data, (str, os.PathLike)) or (
            isinstance(data, Sequence) and all(isinstance(a, Atoms) for a in data)):
        return read_structures(data)
    return None


def _model_metadata(model: Any, model_path: str | os.PathLike) -> dict[str, Any]:
    """What an estimator records of the model it is fitted on: the file and its SHA-256, the
    weights' SHA-256 (the same for a package of that checkpoint), the element-to-type map, the
    descriptor, type names and cutoff (A); :func:`~ltau_md.integrations.nequip.loader.check_pairing`
    reads them back."""
    return {"model": str(Path(model_path).resolve()), "model_sha256": sha256_file(model_path),
            "weights_sha256": model.weights_sha256(), "type_map": model.species_map,
            "descriptor": "nequip node_features entering per_atom_energy_readout",
            "type_names": model.type_names, "r_max": model.r_max}


def fit_from_structures(
    model_path: str | os.PathLike,
    data: str | os.PathLike | Sequence[Any],
    out_dir: str | os.PathLike,
    *,
    validation: str | os.PathLike | Sequence[Any] | None = None,
    signals: tuple[str, ...] = DEFAULT_SIGNALS,
    alarm_stats: Sequence[str] = (),
    k: int | None = None,
    index: str | None = None,
    overwrite: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "cpu",
    progress: bool = True,
    chemical_species_to_atom_type_map: dict[str, str] | None = None,
) -> LTAUEstimator:
    """Fit and save an estimator for a model trained *without* the error-logging callback:
    from its training structures ``data`` (a file or a list of Atoms; no labels needed) alone.

    It holds novelty and the latent ``signals`` (default the default alarm's), not the
    LTAU confidence, uncertainty or predicted error, which need logged training errors
    (``has_error_log`` False; the calculator leaves those keys out). In-domain alarm
    statistics come from ``validation`` if given (source "validation"), else from the
    training atoms (novelty leave-one-out and the signals' training scores: approximate).
    Other arguments as :func:`fit_from_runs`.
    """
    from ltau_md.core.calibration import (
        alarm_statistics_from_structures,
        alarm_statistics_from_training,
    )
    from ltau_md.core.estimator import FORMAT, LTAUEstimator
    from ltau_md.core.model import structure_offsets
    from ltau_md.integrations.nequip.model import (
        NequIPFeatureModel,
        as_atoms_list,
        descriptors_for_dataset,
    )

    check_output_dir(out_dir, FORMAT, overwrite)
    check_statistic_signals(alarm_stats, {"novelty", *signals})
    if validation is None:  # the statistics will come from the training frames
        check_training_statistics(alarm_stats, set(signals))
    given = {name: v for name, v in (("k", k), ("index", index)) if v is not None}
    est = LTAUEstimator(signals=tuple(signals), **given)
    est.check_params()  # every input checked before the (slow) model load
    train_frames = _read_before_model(data)
    val_frames = _read_before_model(validation)
    model = NequIPFeatureModel.from_file(
        model_path, device=device,
        chemical_species_to_atom_type_map=chemical_species_to_atom_type_map)
    if train_frames is None:
        train_frames = as_atoms_list(data, model.type_names)
    if not train_frames:
        raise DataError("no training structures given")
    if val_frames is None and validation is not None:
        val_frames = as_atoms_list(validation, model.type_names)
    desc = descriptors_for_dataset(model, train_frames, batch_size=batch_size,
                                   progress=progress)
    species = np.concatenate([a.numbers for a in train_frames])
    meta = {**_model_metadata(model, model_path), "error_logs": []}
    if not isinstance(data, (list, tuple)):
        meta["data"] = str(Path(data).resolve())
    est.metadata = meta
    est.fit(desc, None, species=species)
    stats = (*DEFAULT_ALARM_STATS, *alarm_stats)
    if val_frames is not None:
        alarm_statistics_from_structures(model, est, val_frames, source="validation",
                                         batch_size=batch_size, stats=stats)
    else:
        alarm_statistics_from_training(est, structure_offsets(train_frames),
                                       frames=train_frames, descriptors=desc, stats=stats)
    est.save(out_dir)
    return est
