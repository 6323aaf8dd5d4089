"""Cost per step of the deployed model, the LTAU query, a calculator step, each latent signal
fitted on the estimator, each combined alarm statistic it holds (beyond its signals) and the
ensemble."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ase import Atoms

    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.core.model import FeatureModel


__all__ = ["cost_per_step"]

# ---------------------------------------------------------------------------- cost
def cost_per_step(model: FeatureModel, members: Sequence[FeatureModel],
                   estimator: LTAUEstimator, atoms: Atoms, rounds: int, calls: int
                   ) -> dict[str, Any]:
    """Seconds per MD step on ``atoms`` (positions jittered by 0.01 A every call), medians
    over interleaved rounds so a load change on a shared machine affects all alike."""
    from ltau_md.core.calculator import LTAUCalculator

    rng = np.random.default_rng(0)
    base = atoms.positions.copy()
    a, b = atoms.copy(), atoms.copy()
    a.calc = None
    b.calc = LTAUCalculator(model, estimator)

    def jitter(x: Atoms) -> None:
        x.positions = base + rng.normal(scale=0.01, size=base.shape)

    feats = np.asarray(model.evaluate(a).features)

    def calc_step() -> None:
        jitter(b)
        b.get_forces()

    fns = {"model_s": lambda: (jitter(a), model.evaluate(a)),
           "ltau_query_s": lambda: estimator.predict(feats, species=a.numbers),
           "ltau_calculator_step_s": calc_step}
    for name in estimator.signals_:  # each latent signal's own cost on the same features
        fns[f"{name}_s"] = (lambda n=name: estimator.signal_values(feats, a.numbers, [n]))
    # each combined statistic of latent signals over all atoms (the default alarm's): the
    # monitor's own work per step beyond the signals, against its prepared in-domain
    # references (one with another part, e.g. novelty, is left untimed)
    from ltau_md.core.metrics import (
        combined_statistics,
        is_combined,
        parse_stat_key,
        prepare_reference,
        statistic_signals,
    )

    for key, entry in (getattr(estimator, "alarm_statistics_", None) or {}).items():
        signal, on, select = parse_stat_key(key)
        if (not is_combined(signal) or select is not None or "reference" not in entry
                or not statistic_signals(key) <= set(estimator.signals_)):
            continue
        sig = estimator.signal_values(feats, a.numbers, sorted(statistic_signals(key)))
        ref = prepare_reference(entry["reference"])
        fns[f"{key}_s"] = (lambda s=signal, o=on, v=sig, r=ref: combined_statistics(
            s, o, v, np.array([0, len(a)]), r, a.numbers))
    if members:
        fns["ensemble_step_s"] = lambda: (jitter(a), model.evaluate(a),
                                          [m.evaluate(a) for m in members])
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[k].append((time.perf_counter() - t0) / calls)
    out: dict[str, Any] = {k: float(np.median(v)) for k, v in times.items()}
    out.update(n_atoms=len(atoms), rounds=rounds, calls_per_round=calls,
               ensemble_members=1 + len(members) if members else None)
    if members:
        ens = np.array(times["ensemble_step_s"])
        for k in ("model_s", "ltau_query_s", "ltau_calculator_step_s"):
            ratio = float(np.median(np.array(times[k]) / ens))
            out[k.removesuffix("_s") + "_over_ensemble"] = ratio
    return out


