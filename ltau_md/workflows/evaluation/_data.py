"""Model passes over a structure set and the per-atom signals scored on it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ltau_md.core.baselines import element_error, force_std, latent_distance
from ltau_md.core.calibration import tags_and_free
from ltau_md.core.exceptions import LTAUError
from ltau_md.core.model import MODEL_SIGNALS, evaluate_structures, structure_offsets
from ltau_md.core.signals import SIGNAL_CLASSES
from ltau_md.core.structures import read_structures, reference_forces

if TYPE_CHECKING:
    from ase import Atoms

    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.core.model import FeatureModel


__all__ = ["SIGNALS", "SPREAD_SIGNALS", "has_forces", "model_outputs", "set_data", "signal_values"]

#: the signals scored, by their per-atom result names: LTAU's uncertainty 1 - p (at the
#: fitted s), predicted error (eV/A) and novelty; the latent distance (mean k-NN distance),
#: the element baseline (training force MAE of the element, eV/A), with members the
#: ensemble force spread (eV/A), every latent signal fitted on the estimator
#: (:data:`~ltau_md.core.signals.SIGNAL_CLASSES`) and the signals the model computes itself
#: (:data:`~ltau_md.core.model.MODEL_SIGNALS`, e.g. a shallow ensemble's heads). Higher = less
#: trusted for all of them.
SIGNALS = {
    "uncertainty": "LTAU uncertainty 1 - p (fitted s)",
    "predicted_error": "LTAU predicted error (eV/Å)",
    "novelty": "LTAU novelty",
    "latent_distance": "latent distance (mean k-NN)",
    "element_error": "element training MAE (eV/Å)",
    "force_std": "ensemble force std (eV/Å)",
    **{name: cls.label for name, cls in SIGNAL_CLASSES.items()},
    **MODEL_SIGNALS,
}


#: the signals that are Gaussian force spreads (eV/A, sqrt of a variance summed over x, y,
#: z), whose calibration evaluate reports (``spread_calibration``)
SPREAD_SIGNALS = ("force_std", *MODEL_SIGNALS)

# ---------------------------------------------------------------------------- model passes
def model_outputs(model: FeatureModel, frames: Sequence[Atoms], batch_size: int
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(energies (F,) eV, forces (n, 3) eV/A, features (n, D), the model's own per-atom
    signals {name: (n,)}) of all ``frames``."""
    outs = evaluate_structures(model, frames, batch_size)
    energy = np.array([float(o.energy) for o in outs])
    forces = np.concatenate([np.asarray(o.forces, dtype=np.float64) for o in outs])
    feats = np.concatenate([np.asarray(o.features, dtype=np.float32) for o in outs])
    names = set(getattr(outs[0], "signals", None) or ()) if outs else set()
    signals = {n: np.concatenate([np.asarray(o.signals[n], dtype=np.float64) for o in outs])
               for n in sorted(names)}
    return energy, forces, feats, signals


def set_data(name: str, frames: Sequence[Atoms], model: FeatureModel,
              members: Sequence[FeatureModel], estimator: LTAUEstimator, batch_size: int,
              labelled: bool | None) -> dict[str, Any]:
    """Model passes and neighbours of one set; ``labelled``: True requires reference forces,
    None uses them where every structure has them. Also the atoms' tags (None if all 0) and
    which atoms are free (not fixed by FixAtoms), as the monitor reads them."""
    frames = read_structures(frames)
    off = structure_offsets(frames)
    numbers = np.concatenate([a.numbers for a in frames])
    try:
        estimator.check_species(numbers)
        energy, forces, feats, own = model_outputs(model, frames, batch_size)
        dist, idx = estimator.kneighbors(feats, numbers)
    except LTAUError as exc:
        raise type(exc)(f"set {name!r}: {exc}") from exc
    d: dict[str, Any] = {"frames": frames, "offsets": off, "numbers": numbers,
                         "energy": energy, "forces": forces, "dist": dist, "idx": idx,
                         "latent": estimator.signal_values(feats, numbers), "own": own,
                         **tags_and_free(frames)}
    if members:
        d["member_forces"] = [forces] + [model_outputs(m, frames, batch_size)[1] for m in members]
    if labelled is None:
        labelled = all(has_forces(a) for a in frames)
    if labelled:
        ref = np.concatenate([reference_forces(a, i, f"the error of set {name!r}")
                              for i, a in enumerate(frames)])
        d["err"] = np.linalg.norm(ref - forces, axis=1)
    return d


def has_forces(atoms: Atoms) -> bool:
    res = getattr(getattr(atoms, "calc", None), "results", None) or {}
    return "forces" in res or "forces" in atoms.arrays


def signal_values(d: dict[str, Any], estimator: LTAUEstimator, s: float) -> dict[str, np.ndarray]:
    """Per-atom values of every signal on one set, LTAU read at scale ``s``."""
    pred = estimator.predict_from_neighbors(d["dist"], d["idx"], s=s, species=d["numbers"])
    out = {
        "uncertainty": np.asarray(pred.uncertainty, dtype=np.float64),
        "predicted_error": np.asarray(pred.predicted_error, dtype=np.float64),
        "novelty": np.asarray(pred.novelty, dtype=np.float64),
        "latent_distance": latent_distance(pred),
        "element_error": element_error(estimator, d["numbers"]),
    }
    if "member_forces" in d:
        out["force_std"] = force_std(d["member_forces"])
    out.update(d["latent"])
    out.update(d.get("own", {}))
    return out


