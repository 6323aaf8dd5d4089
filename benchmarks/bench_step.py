"""Per-step cost of LTAU uncertainty next to the NequIP forward pass, in one run.

A NequIP model (trained for 1 epoch on EMT Cu data: the weights do not change the cost) runs
VelocityVerlet MD of a ~200-atom Cu cell with the LTAUCalculator against a 4e5-atom HNSW index
(descriptors of the model on rattled cells, jittered to 4e5 rows). ``--system molecule`` runs a
15-atom non-periodic cluster (13 Cu + 2 H, molecule-sized) against a 6750-atom index (the size
of the acetylacetone training set, 450 frames x 15 atoms; ``index="auto"`` builds a flat one),
where the fixed per-step overhead weighs most. Per step we time the model's
forward pass (energy, forces, stress, descriptors) and the rest of the step (descriptor copy,
warm-started k-NN, confidence/predicted-error gather, bookkeeping). The same is done for a cold
HNSW search, and a 4-member ensemble step (4 forward passes + force std) is timed for comparison.

    python benchmarks/bench_step.py --features 32 --lmax 2 --layers 4 --out bench_out/step
    python benchmarks/bench_step.py --system molecule --features 8 --lmax 1 --layers 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import record


def train_model(out: Path, features: int, lmax: int, layers: int) -> Path:
    from ltau_md.integrations.nequip import toy

    train, val = toy.write_emt_dataset(out / "data", n_train=16, n_val=4, seed=0)
    cfg = toy.tiny_config(train, val, max_epochs=1, num_features=features, l_max=lmax,
                          num_layers=layers, loggers=())
    toy.nequip_train(toy.write_config(cfg, out / "cfg.yaml"), out / "run")
    return out / "run" / "last.ckpt"


class Timed:
    """FeatureModel proxy recording the wall time of each evaluate call (s)."""

    def __init__(self, model):
        self.model, self.species, self.times = model, model.species, []

    def evaluate(self, atoms, stress=False):
        t = time.perf_counter()
        out = self.model.evaluate(atoms, stress)
        self.times.append(time.perf_counter() - t)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--lmax", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--system", choices=["bulk", "molecule"], default="bulk",
                    help="bulk: periodic Cu cell (--repeat); molecule: 15-atom cluster")
    ap.add_argument("--n-index", type=float, default=None,
                    help="training atoms in the index (default 4e5 bulk, 6750 molecule)")
    ap.add_argument("--repeat", type=int, default=3, help="Cu cell repeat (4*r^3 atoms)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--signals", nargs="*", default=None,
                    help="latent signals fitted and returned every step (default: the default "
                    "set, core.calibration.DEFAULT_SIGNALS; none with a bare --signals)")
    args = ap.parse_args()

    import faiss
    import torch
    from ase import units
    from ase.build import bulk
    from ase.md.verlet import VelocityVerlet

    from ltau_md.core.calculator import LTAUCalculator
    from ltau_md.core.confidence import ErrorSummary, make_edges
    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.integrations.nequip import NequIPFeatureModel

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    # without --out the trained model lives in a temporary directory removed at the end
    scratch = None if args.out else tempfile.TemporaryDirectory(prefix="bench_step_")
    out = Path(args.out or scratch.name)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ckpt = train_model(out, args.features, args.lmax, args.layers)
    train_s = time.perf_counter() - t0
    fm = NequIPFeatureModel.from_file(ckpt)
    rng = np.random.default_rng(0)
    if args.system == "molecule":
        from ase import Atoms
        from ase.cluster import Icosahedron

        base = Icosahedron("Cu", 2)
        tip = base.positions[np.argmax(base.positions[:, 2])]
        base += Atoms("H2", positions=[tip + [0, 0, 1.6], tip + [0, 1.5, 2.2]])
        base.center(vacuum=6.0)
        base.pbc = False
    else:
        base = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(args.repeat)
    n_atoms = len(base)
    periodic = bool(base.pbc.all())
    feats = []
    for _ in range(8):
        a = base.copy()
        a.rattle(0.1, seed=int(rng.integers(2**31)))
        feats.append(fm.evaluate(a).features)
    f = np.concatenate(feats)
    z_f = np.tile(base.numbers, 8)
    n_idx = int(args.n_index or (6750 if args.system == "molecule" else 4e5))
    scale = f.std(axis=0).mean() * 0.05
    rows = rng.integers(0, len(f), n_idx)
    x = (f[rows] + rng.normal(size=(n_idx, f.shape[1])).astype(np.float32) * scale
         ).astype(np.float32)
    # a synthetic 50-epoch summary for n_idx atoms (the values do not change the cost)
    atol = 0.05
    edges = make_edges(atol)
    hist = rng.multinomial(50, np.full(64, 1 / 64), size=n_idx).astype(np.uint8)[None]
    summ = ErrorSummary(hist=hist, p0=rng.random((1, n_idx), dtype=np.float32),
                        mean=rng.random((1, n_idx), dtype=np.float32) * 0.1,
                        n_epochs=np.array([50]), edges=edges,
                        ref_force_norm=np.ones(n_idx, np.float32),
                        species=z_f[rows].astype(np.int32), atol=atol, rtol=0.0,
                        fingerprint="bench")
    t0 = time.perf_counter()
    from ltau_md.core.calibration import DEFAULT_SIGNALS

    signals = tuple(DEFAULT_SIGNALS if args.signals is None else args.signals)
    est = LTAUEstimator(k=10, index="auto", ef_search=32, signals=signals).fit(x, summ)
    index_s = time.perf_counter() - t0

    def md_run(calc, timed):
        a = base.copy()
        a.rattle(0.05, seed=1)
        a.set_momenta(np.random.default_rng(2).normal(size=(n_atoms, 3)) * 0.3)
        a.calc = calc
        dyn = VelocityVerlet(a, timestep=1 * units.fs, logfile=None)
        step_times = []
        last = [time.perf_counter()]

        def tick():
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now
        dyn.attach(tick, interval=1)
        dyn.run(args.steps)
        steps = np.array(step_times[2:])  # skip warm-up
        model = np.array(timed.times[2:len(steps) + 2])
        return steps, model

    res = {"benchmark": "step", "system": args.system, "n_atoms": n_atoms, "n_index": n_idx,
           "index_kind": est.index_kind_,
           "feature_dim": int(f.shape[1]), "model": {"num_features": args.features,
                                                     "l_max": args.lmax,
                                                     "num_layers": args.layers},
           "threads": args.threads, "train_s": train_s, "index_build_s": index_s,
           "signals": list(signals)}
    for name, warm in (("warm", True), ("cold", False)):
        timed = Timed(fm)
        calc = LTAUCalculator(timed, est, warm_start=warm)
        steps, model = md_run(calc, timed)
        uq = steps - model  # the rest of the step includes ASE's integrator (tiny)
        res[f"forward_ms_{name}"] = float(np.median(model) * 1e3)
        res[f"uq_ms_{name}"] = float(np.median(uq) * 1e3)
        res[f"uq_over_forward_{name}"] = float(np.median(uq) / np.median(model))
    # ASE-only overhead baseline: the same MD with the bare model (no estimator)
    from ase.calculators.calculator import Calculator, all_changes

    class Bare(Calculator):
        implemented_properties = ["energy", "forces", "stress"]

        def __init__(self, m):
            super().__init__()
            self.m = m

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            o = self.m.evaluate(self.atoms, stress=periodic)
            self.results = {"energy": o.energy, "forces": o.forces}
            if periodic:
                self.results["stress"] = o.stress

    timed = Timed(fm)
    steps, model = md_run(Bare(timed), timed)
    res["bare_step_ms"] = float(np.median(steps) * 1e3)
    res["bare_rest_ms"] = float(np.median(steps - model) * 1e3)
    res["uq_only_ms_warm"] = res["uq_ms_warm"] - res["bare_rest_ms"]
    res["uq_only_over_forward_warm"] = res["uq_only_ms_warm"] / res["forward_ms_warm"]
    # 4-member ensemble: 4 forward passes + force std per step (same model, same cost)
    a = base.copy()
    a.rattle(0.05, seed=3)
    ens = []
    for _ in range(7):
        t = time.perf_counter()
        fs = np.stack([fm.evaluate(a, stress=periodic).forces for _ in range(4)])
        fs.std(axis=0)
        ens.append(time.perf_counter() - t)
    res["ensemble4_step_ms"] = float(np.median(ens[2:]) * 1e3)
    res["ltau_step_ms"] = res["forward_ms_warm"] + res["uq_ms_warm"]
    res["ltau_over_ensemble4"] = res["ltau_step_ms"] / res["ensemble4_step_ms"]
    res["target_uq_le_5pct_met"] = res["uq_over_forward_warm"] <= 0.05
    print(json.dumps(res), flush=True)
    record(__file__, res, name=f"bench_step_{args.system}")
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
