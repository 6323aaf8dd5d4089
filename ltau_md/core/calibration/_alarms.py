"""In-domain frame statistics for alarm-rate thresholds: computed from per-atom signals of
in-domain structures and added to ``estimator.alarm_statistics_``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ltau_md.core.estimator import loo_sample_size
from ltau_md.core.exceptions import DataError
from ltau_md.core.metrics import (
    ELEMENT,
    combined_components,
    fit_combined,
    frame_statistics,
    is_combined,
    parse_stat_key,
    selection_mask,
    stat_key,
    statistic_signals,
)
from ltau_md.core.model import DEFAULT_BATCH_SIZE, evaluate_structures, structure_offsets
from ltau_md.core.structures import free_atoms
from ltau_md.core.validation import check_frame_offsets, check_is_fitted

if TYPE_CHECKING:
    from ltau_md.core.estimator import LTAUEstimator

__all__ = [
    "DEFAULT_ALARM",
    "DEFAULT_ALARM_STATS",
    "DEFAULT_SIGNALS",
    "FALLBACK_ALARM",
    "FALLBACK_ALARMS",
    "check_statistic_signals",
    "check_training_statistics",
    "default_alarm",
    "alarm_statistics_from_structures",
    "alarm_statistics_from_training",
    "fit_alarm_thresholds",
    "per_atom_uncertainty",
    "tags_and_free",
]


DEFAULT_ALARM = "doptimality/element+clustered_doptimality/element:max"
"""The default frame alarm: the Fisher combination of two in-domain tail p-values, of the
frame maxima of the D-optimality extrapolation grade (:class:`~ltau_md.core.signals.DOptimality`)
and of the clustered D-optimality grade (:class:`~ltau_md.core.signals.ClusteredDOptimality`),
each normalised per element (:mod:`ltau_md.core.metrics._combined`). Chosen on acetylacetone
and the EMT IS2RS splits by the worst case, over their out-of-domain sets, of its
out-of-domain alarm rate at the 1 % in-domain threshold relative to the best statistic's,
and confirmed on a second, independently trained EMT model (docs: benchmarks); fixed since.
The previous default, "gmm+clustered_doptimality/element:max", is the first of
:data:`FALLBACK_ALARMS` (estimators fitted with its signals keep it)."""

DEFAULT_SIGNALS: tuple[str, ...] = tuple(
    b for b, _ in combined_components(parse_stat_key(DEFAULT_ALARM)[0]))
"""Latent signals the tools (``ltau-md fit``, the demo) fit with an estimator by default: the
default alarm's."""

FALLBACK_ALARMS: tuple[str, ...] = ("gmm+clustered_doptimality/element:max", "gmm:max",
                                     "novelty:max")
"""The alarms of an estimator without the default alarm's signals fitted, in order: the
earlier defaults (an estimator fitted with the GMM and clustered D-optimality, or with the GMM
alone), then LTAU novelty (always there)."""

FALLBACK_ALARM = FALLBACK_ALARMS[-1]
"""The alarm every fitted estimator can compute (LTAU novelty)."""

DEFAULT_ALARM_STATS = ("gmm:max", "gmm:mean", "novelty:max", "novelty:mean",
                       "uncertainty:max", "uncertainty:mean", DEFAULT_ALARM)
"""In-domain frame statistics fitted by default, of the signals at hand (a combined statistic
when the atomic numbers are at hand too), plus the maximum ("NAME:max") of every other signal
at hand (the latent signals fitted on the estimator, a model's own), and their "@tags=2"
variants (OC20 adsorbate atoms) when the structures carry tag 2."""


def _default_keys(signals: Sequence[str], combined: bool = True) -> list[str]:
    """The :data:`DEFAULT_ALARM_STATS` of ``signals`` (combined ones only if ``combined``),
    then "NAME:max" of the others."""
    named = {parse_stat_key(k)[0] for k in DEFAULT_ALARM_STATS}
    return ([k for k in DEFAULT_ALARM_STATS if statistic_signals(k) <= set(signals)
             and (combined or not is_combined(parse_stat_key(k)[0]))]
            + [stat_key(n, "max") for n in sorted(signals) if n not in named])


def check_statistic_signals(keys: Sequence[str], available: set[str]) -> None:
    """InvalidParameterError naming the first of the statistic ``keys`` that is malformed or
    needs a per-atom signal outside ``available`` (for a check before any slow work)."""
    from ltau_md.core.exceptions import InvalidParameterError

    for key in keys:
        parse_stat_key(key)  # validates, a combined signal's parts too
        missing = sorted(statistic_signals(key) - set(available))
        if missing:
            raise InvalidParameterError(
                f"alarm statistic {key!r} needs the signal {missing[0]!r}, which the "
                f"estimator does not have (it has {sorted(available)}; fit it with --signals)")


def check_training_statistics(keys: Sequence[str], latent: set[str]) -> None:
    """DataError naming the first statistic of ``keys`` that the training statistics
    (:func:`alarm_statistics_from_training`) cannot give: each must be of LTAU novelty alone
    or of the ``latent`` signals alone (a combination of both would mix leave-one-out novelty
    with in-sample latent values); for a check before any slow work too."""
    for k in keys:
        need = statistic_signals(k)
        if need <= {"novelty"} or need <= set(latent):
            continue
        missing = sorted(need - {"novelty", *latent})
        if missing:
            raise DataError(f"statistic {k!r} needs per_atom[{missing[0]!r}], which the "
                            "training statistics do not have; give held-out frames")
        raise DataError(f"statistic {k!r} combines novelty with latent signals, which the "
                        "training statistics take from different sources (leave-one-out "
                        "novelty, in-sample latent values); give held-out frames")


def _split_stats(stats: Sequence[str]) -> tuple[bool, list[str]]:
    """(whether ``stats`` starts with :data:`DEFAULT_ALARM_STATS`, the keys given besides)."""
    n = len(DEFAULT_ALARM_STATS)
    default = tuple(stats[:n]) == DEFAULT_ALARM_STATS
    return default, list(stats[n:] if default else stats)


def default_alarm(estimator: Any) -> str:
    """:data:`DEFAULT_ALARM` when ``estimator`` has its signals fitted (``signals_``), else the
    first of :data:`FALLBACK_ALARMS` it has."""
    fitted = set(getattr(estimator, "signals_", None) or {}) | {"novelty"}
    for key in (DEFAULT_ALARM, *FALLBACK_ALARMS):
        if statistic_signals(key) <= fitted:
            return key
    return FALLBACK_ALARM


def per_atom_uncertainty(estimator: LTAUEstimator, indices: np.ndarray, frames: Sequence[Any]
                 ) -> np.ndarray:
    """Per-atom uncertainty 1 - p at the scale the calculator would use for each structure
    (its calibration group's s where the calibration has a group key)."""
    cal = estimator.calibration_
    key = cal.group_key if cal is not None else None
    groups = np.concatenate([[str(a.info[key]) if key and key in a.info else ""] * len(a)
                             for a in frames])
    unc = np.empty(indices.shape[0])
    for g in np.unique(groups):
        m = groups == g
        unc[m] = 1.0 - estimator.confidence_from_neighbors(indices[m], group=g or None)[0]
    return unc


def tags_and_free(frames: Sequence[Any]) -> dict[str, np.ndarray | None]:
    """{"tags": concatenated tags (None if all 0), "free": atoms not fixed by FixAtoms (all
    atoms of a structure whose atoms are all fixed, as the monitor counts them)}."""
    tags = np.concatenate([a.get_tags() for a in frames])
    free = []
    for a in frames:
        f = free_atoms(a)
        free.append(f if f.any() else np.ones(len(a), dtype=bool))
    return {"tags": tags if tags.any() else None, "free": np.concatenate(free)}


def fit_alarm_thresholds(
    estimator: LTAUEstimator,
    per_atom: dict[str, np.ndarray],
    frame_offsets: np.ndarray,
    *,
    tags: np.ndarray | None = None,
    stats: Sequence[str] = DEFAULT_ALARM_STATS,
    source: str = "held-out",
    free: np.ndarray | None = None,
    numbers: np.ndarray | None = None,
    store: bool = True,
) -> dict[str, dict[str, Any]]:
    """Store the in-domain values of frame statistics, from which
    :class:`~ltau_md.core.observers.Threshold` (``alarm_rate=``) sets its threshold.

    Parameters
    ----------
    estimator : a fitted LTAUEstimator.
    per_atom : dict
        signal -> (n_atoms,) per-atom values of in-domain structures, e.g.
        ``{"novelty": ..., "uncertainty": ...}`` as the calculator returns them.
    frame_offsets : (F+1,) first atom of each structure, then n_atoms.
    tags : (n_atoms,) int, optional
        OC20 tags for "@tags=..." statistics.
    stats : keys "SIGNAL:ON[@tags=T]" (:func:`~ltau_md.core.metrics.stat_key`).
        The default, :data:`DEFAULT_ALARM_STATS`, keeps the signals present in ``per_atom``,
        adds "NAME:max" of every other signal there and the "@tags=2" variants when ``tags``
        hold a 2; ``(*DEFAULT_ALARM_STATS, KEY, ...)`` is the default plus those keys.
        Explicit keys must all be computable.
    source : where the values come from ("held-out", "validation", "calibration",
        "training-loo").
    free : (n_atoms,) bool, optional
        Atoms a statistic without "@" is taken over (the monitor uses the atoms not fixed by
        FixAtoms); default all atoms.
    numbers : (n_atoms,) int, optional
        Atomic numbers, for combined statistics with per-element components (e.g.
        :data:`DEFAULT_ALARM`; left out of the default statistics without them).
    store : add the entries to ``estimator.alarm_statistics_``
        (:class:`~ltau_md.core.estimator.InDomainStatistics`); ``estimator.save`` persists
        them.

    Returns
    -------
    {key: {"values": sorted in-domain frame values, "n_frames": F used, "source": source,
    "atoms_per_frame": median atoms per frame the statistic was taken over}}; a combined
    statistic (:func:`~ltau_md.core.metrics.fit_combined`) also holds its "reference", and its
    values are the frames' leave-one-frame-out combined values.
    Frames without a selected atom (e.g. no adsorbate) are left out; frames with an infinite
    value too, with a warning.
    """
    check_is_fitted(estimator)
    off = check_frame_offsets(frame_offsets)
    n = int(off[-1])
    sig = {}
    for name, v in per_atom.items():
        a = np.asarray(v, dtype=np.float64)
        if a.shape != (n,):
            raise DataError(f"per_atom[{name!r}] has shape {a.shape}, expected ({n},) (the "
                            "atoms of frame_offsets)")
        sig[name] = a
    t = None if tags is None else np.asarray(tags)
    default, given = _split_stats(stats)
    z = None if numbers is None else np.asarray(numbers)
    if z is not None and z.shape != (n,):
        raise DataError(f"numbers has shape {z.shape}, expected ({n},)")
    keys = _default_keys(list(sig), combined=z is not None) if default else []
    if default and t is not None and np.any(t == 2):
        keys += [stat_key(*parse_stat_key(k)[:2], "tags=2") for k in keys]
    keys += [k for k in given if k not in keys]
    if free is not None:
        free = selection_mask(np.asarray(free, dtype=bool), n)
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        signal, on, select = parse_stat_key(key)
        missing = sorted(statistic_signals(key) - set(sig))
        if missing:
            raise DataError(f"statistic {key!r} needs per_atom[{missing[0]!r}]")
        mask = free if select is None else selection_mask(select, n, t)
        reference = None
        if is_combined(signal):
            reference, vals = fit_combined(signal, on, sig, off, z, mask)
            if select is None:  # a selection (adsorbate atoms) may hold some elements only
                _warn_missing_elements(estimator, key, reference)
        else:
            vals = frame_statistics(sig[signal], off, on, mask)
        vals = vals[~np.isnan(vals)]
        if np.isinf(vals).any():
            warnings.warn(f"{key}: {int(np.isinf(vals).sum())} in-domain frames with an "
                          "infinite value left out", UserWarning, stacklevel=2)
            vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            warnings.warn(f"{key}: no frame has a value (no selected atom); not stored",
                          UserWarning, stacklevel=2)
            continue
        counts = np.add.reduceat((np.ones(n, bool) if mask is None else mask).astype(np.int64),
                                 off[:-1])
        out[stat_key(signal, on, select)] = {
            "values": np.sort(vals).tolist(), "n_frames": int(vals.size),
            "source": str(source), "atoms_per_frame": float(np.median(counts[counts > 0]))}
        if reference is not None:
            out[stat_key(signal, on, select)]["reference"] = reference
    if store and out:
        estimator.alarm_statistics_.update(out)
    return out


def _warn_missing_elements(estimator: LTAUEstimator, key: str, reference: dict) -> None:
    """Warn when a per-element reference lacks training elements (their atoms are then
    compared against every element's, :func:`~ltau_md.core.metrics.element_normalised`)."""
    species = getattr(estimator, "species_", None)
    for signal, by_element in reference["atoms"].items():
        missing = sorted(set(map(int, species if species is not None else ())) -
                         set(map(int, by_element)))
        if missing:
            warnings.warn(f"{key}: the in-domain frames hold no atoms of elements {missing} "
                          f"(Z) for {signal}{ELEMENT}; their atoms are compared against every "
                          "element's in-domain atoms pooled", UserWarning, stacklevel=3)


def alarm_statistics_from_structures(
    model: Any,
    estimator: LTAUEstimator,
    frames: Sequence[Any],
    *,
    stats: Sequence[str] = DEFAULT_ALARM_STATS,
    source: str = "held-out",
    batch_size: int = DEFAULT_BATCH_SIZE,
    store: bool = True,
) -> dict[str, dict[str, Any]]:
    """In-domain frame statistics of ASE structures (no labels needed) evaluated with a
    :class:`~ltau_md.core.model.FeatureModel`, stored by :func:`fit_alarm_thresholds` (novelty and
    uncertainty as the calculator computes them; tags and FixAtoms from the structures).

    Use structures from the training distribution the model never saw, e.g. the training
    run's validation set; the alarm rate holds for new structures exchangeable with them.
    The latent signals fitted on the estimator and those a model computes itself
    (``ModelOutput.signals``) add their maxima to the default statistics, so
    ``Threshold(signal=NAME, alarm_rate=...)`` works on every one of them."""
    frames = list(frames)
    if not frames:
        raise DataError("no in-domain structures given")
    outs = evaluate_structures(model, frames, batch_size)
    feats = np.concatenate([np.asarray(o.features) for o in outs])
    species = np.concatenate([a.numbers for a in frames])
    estimator.check_species(species)
    dist, idx = estimator.kneighbors(feats, species)
    per_atom = {"novelty": estimator.novelty_of(dist, idx, species)[0],
                **estimator.signal_values(feats, species)}
    if estimator.has_error_log:
        per_atom["uncertainty"] = per_atom_uncertainty(estimator, idx, frames)
    own = sorted(getattr(outs[0], "signals", None) or ())
    for name in own:  # the model's own signals (e.g. a shallow ensemble's spread)
        per_atom[name] = np.concatenate([np.asarray(o.signals[name]) for o in outs])
    off = structure_offsets(frames)
    where = tags_and_free(frames)
    return fit_alarm_thresholds(estimator, per_atom, off, stats=stats, source=source,
                                store=store, numbers=species, **where)


def alarm_statistics_from_training(
    estimator: LTAUEstimator,
    frame_offsets: np.ndarray,
    *,
    frames: Sequence[Any] | None = None,
    tags: np.ndarray | None = None,
    stats: Sequence[str] = DEFAULT_ALARM_STATS,
    store: bool = True,
    descriptors: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Fallback without held-out structures: novelty statistics of the training frames from
    each training atom's leave-one-out novelty (``estimator.train_novelty_``), source
    "training-loo". ``frame_offsets`` (F+1,): the training frames (``ErrorLog.frame_offsets``).
    ``frames``: the training structures in the logged order, if at hand: their tags and
    FixAtoms constraints are used as :func:`alarm_statistics_from_structures` uses them (else
    ``tags`` (n_atoms,), and all atoms for statistics without a selection).

    The latent signals fitted on the estimator (``signals_``) add their statistics of the
    training atoms themselves (source "training"), where the index holds the training
    descriptors exactly (flat, HNSW) or ``descriptors`` (N, D) are given.

    An estimator whose leave-one-out reference is a sample of atoms (``loo_rows_``, large
    training sets) has no whole frames of it: a seeded sample of whole frames of about as
    many atoms (:func:`~ltau_md.core.estimator.loo_sample_size`) is searched here instead
    (``descriptors`` needed for an IVF-PQ index).

    Approximate: leaving one atom out keeps its frame-mates and the neighbouring frames of the
    same trajectory in the index, so training atoms look more familiar than new in-domain
    structures do (and a density fitted on them scores them in-sample); thresholds come out
    low and alarms fire more often than the nominal rate. Prefer held-out structures
    (:func:`alarm_statistics_from_structures`)."""
    check_is_fitted(estimator)
    offsets = check_frame_offsets(np.asarray(frame_offsets), estimator.n_train_)
    extra: dict[str, Any] = {"tags": tags}
    if frames is not None:
        frames = list(frames)
        if sum(len(a) for a in frames) != estimator.n_train_:
            raise DataError(f"the frames hold {sum(len(a) for a in frames)} atoms, the "
                            f"estimator {estimator.n_train_} training atoms")
        extra = tags_and_free(frames)
    x = descriptors
    if x is None and (estimator.loo_rows_ is not None or estimator.signals_):
        x = estimator.training_descriptors()  # read once; None from an IVF-PQ index
    if estimator.loo_rows_ is None:
        rows = None
        novelty = estimator.train_novelty_
    else:
        rows, offsets = _frame_sample(offsets, loo_sample_size(estimator.index_kind_))
        novelty = estimator.leave_one_out_novelty(rows, x)
        extra = {k: None if v is None else np.asarray(v)[rows] for k, v in extra.items()}
    default, given = _split_stats(stats)
    latent: dict[str, np.ndarray] = {}
    species = None
    if x is not None and estimator.signals_:
        xs = x if rows is None else np.asarray(x)[rows]
        species = estimator.train_species_ if rows is None else estimator.train_species_[rows]
        latent = estimator.signal_values(xs, species)
    check_training_statistics(given, set(latent))

    def keys_of(available: set[str]) -> list[str]:
        part = [k for k in given if statistic_signals(k) <= available]
        return [*DEFAULT_ALARM_STATS, *part] if default else part

    out: dict[str, dict[str, Any]] = {}
    if keys_of({"novelty"}):
        out = fit_alarm_thresholds(estimator, {"novelty": novelty}, offsets,
                                   stats=keys_of({"novelty"}), source="training-loo",
                                   store=store, **extra)
    if latent and keys_of(set(latent)):
        out.update(fit_alarm_thresholds(estimator, latent, offsets, stats=keys_of(set(latent)),
                                        source="training", store=store, numbers=species,
                                        **extra))
    return out


def _frame_sample(offsets: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, offsets) of a seeded random sample of whole frames of about ``n_atoms`` atoms
    (at least one frame), in their original order."""
    sizes = np.diff(offsets)
    order = np.random.default_rng(0).permutation(sizes.size)
    n_pick = max(1, int(np.searchsorted(np.cumsum(sizes[order]), n_atoms)) + 1)
    pick = np.sort(order[:n_pick])
    rows = np.concatenate([np.arange(offsets[f], offsets[f + 1]) for f in pick])
    return rows, np.concatenate([[0], np.cumsum(sizes[pick])])
