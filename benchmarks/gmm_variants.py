"""GMM density variants beside the product's, on an evaluation's frames: is the GMM's place in
the head-to-head an artefact of its settings?

The product's :class:`~ltau_md.core.signals.GMMDensity` chooses each element's number of
components by BIC among 1-16 with ``reg_covar`` 1e-4 (the issue's specification, the
comparator of the benchmarks). This script fits variants of it on the estimator's training
descriptors, scores every atom of an evaluation's frames with them and writes the
evaluation's ``per_atom.npz`` again with the variants added as signals, for
``alarm_combinations.py --extra`` to score:

- ``gmm_k1``: one component per element (a per-element Mahalanobis distance);
- ``gmm_reg2`` / ``gmm_reg1``: BIC as the product's, ``reg_covar`` 1e-2 / 1e-1 (features are
  standardised per element first, so that is 1 % / 10 % of each feature's variance).

Each set of the evaluation (``in_domain`` and the out-of-domain ones) takes the frames it was
made from, in the same order (checked atom by atom against the file's atomic numbers). The
record (``gmm_variants``) holds the components BIC chose per element for every variant and for
the product's GMM fitted here again, with the largest difference of the latter's values from
the evaluation's ``gmm`` (the check that the variants score the same features).

    python benchmarks/gmm_variants.py --model OUT/work/member0/last.ckpt \\
        --estimator OUT/estimator --per-atom OUT/evaluation/per_atom.npz \\
        --set in_domain=DATA/test_MD_300K.xyz 600K=DATA/test_MD_600K.xyz ... \\
        --out OUT/gmm_variants.npz --record gmm_variants_acac
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _record import record

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: the variants: signal name -> GMMDensity parameters (the rest the product's defaults)
VARIANTS = {"gmm_k1": {"n_components": (1,)},
            "gmm_reg2": {"reg_covar": 1e-2},
            "gmm_reg1": {"reg_covar": 1e-1}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="the evaluated model (a checkpoint)")
    p.add_argument("--estimator", required=True, help="its estimator (a flat or hnsw index)")
    p.add_argument("--per-atom", required=True, help="the evaluation's per_atom.npz")
    p.add_argument("--set", nargs="+", required=True, metavar="NAME=FRAMES",
                   help="every set of the evaluation and the frames it was made from")
    p.add_argument("--out", required=True, help="the per_atom.npz with the variants (new)")
    p.add_argument("--record", default=None, help="record name (default gmm_variants)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        p.error(f"--out {out} exists; give a new path")
    sets = dict(s.partition("=")[::2] for s in args.set)
    if any(not v for v in sets.values()):
        p.error("--set takes NAME=FRAMES")
    with np.load(args.per_atom) as z:
        arrays = {k: z[k] for k in z.files}
    names = [str(s) for s in arrays["sets"]]
    if sorted(names) != sorted(sets):
        p.error(f"--set must name the evaluation's sets {names}, got {sorted(sets)}")

    import ase.io
    import torch

    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.core.files import atomic_path
    from ltau_md.core.model import evaluate_structures
    from ltau_md.core.signals import GMMDensity
    from ltau_md.integrations.nequip import NequIPFeatureModel

    torch.set_num_threads(1)
    model = NequIPFeatureModel.from_file(args.model)
    est = LTAUEstimator.load(args.estimator)
    x_train = est.training_descriptors()
    if x_train is None:
        p.error("the estimator's index stores no exact descriptors (ivfpq); use flat or hnsw")
    t0 = time.perf_counter()
    fitted = {n: GMMDensity(**kw).fit(x_train, est.train_species_) for n, kw in VARIANTS.items()}
    fit_s = time.perf_counter() - t0
    # the product's GMM fitted here too: it must give the evaluation's "gmm" values again
    product = GMMDensity().fit(x_train, est.train_species_)
    product_diff = 0.0
    for name in names:
        frames = ase.io.read(sets[name], ":")
        numbers = np.concatenate([a.numbers for a in frames])
        if not np.array_equal(numbers, arrays[f"{name}/numbers"]):
            p.error(f"--set {name}: its frames' atoms are not the evaluation's (a different "
                    "file, order or subset)")
        x = np.concatenate([o.features for o in evaluate_structures(model, frames)])
        for n, sig in fitted.items():
            arrays[f"{name}/{n}"] = sig.score(x, numbers)
        if f"{name}/gmm" in arrays:
            product_diff = max(product_diff, float(np.max(np.abs(
                product.score(x, numbers) - arrays[f"{name}/gmm"]))))
    with atomic_path(out, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    result = {"variants": {n: {"params": {k: list(v) if isinstance(v, tuple) else v
                                          for k, v in kw.items()},
                               "components": fitted[n].chosen_components_}
                           for n, kw in VARIANTS.items()},
              "product_gmm_components": product.chosen_components_,
              "product_gmm_max_abs_difference": product_diff,
              "training_atoms": int(x_train.shape[0]), "fit_seconds": round(fit_s, 2),
              "sets": {n: int(arrays[f"{n}/offsets"].size - 1) for n in names}}
    print(json.dumps(result, indent=1))
    record(__file__, result, name=args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
