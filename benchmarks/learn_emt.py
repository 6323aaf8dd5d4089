"""The active-learning loop on EMT slabs: does the alarm plus diversity selection improve the
model faster per label than picking alarmed frames by value or at random?

Protocol
--------
1. A tiny NequIP model is trained (nequip-train, error logging) on a narrow set: Cu(111)
   2x2x3 slabs with an O or H adsorbate at the fcc site, rattled by 0.08 A (``--n-train``
   frames, EMT labels), validated on 40 more such frames (the alarm statistics' in-domain
   frames).
2. Out-of-domain test set, fixed: frames of EMT Langevin MD at 1000 K of Cu(100)+O,
   Cu(100)+H (another facet) and Cu(111)+O (hotter) (``--n-test`` in all), labelled by EMT.
3. ``ltau-md learn`` from that model, once per method: ``d_optimal`` (the loop: LTAU's
   default alarm, D-optimal batch), ``top`` (the alarm without the diversity selection:
   highest alarm values), ``random`` (random alarmed frames), ``ensemble`` (DP-GEN's loop:
   ``--members`` models trained alike with other seeds, member 0 the same base model,
   alarm on the maximum force deviation above trust_lo, set at the same in-domain alarm
   rate on the validation frames, candidates picked at random as DP-GEN does, every member
   fine-tuned). Exploration MD at 800 and 1200 K from the three new systems (other seeds
   than the test set's), a 5 % in-domain alarm rate, ``--batch`` labels per iteration,
   ``--iterations`` iterations, ``--finetune-epochs`` epochs of fine-tuning each.
4. Per method and iteration: labels so far, test force MAE with a 95 % bootstrap interval
   over test frames, alarm share of the exploration, exploration CPU seconds (process
   time of the MD runs, the UQ included; the ensemble's trust levels included).
5. ``--summarise`` over the seeds run: per method and label count the test MAE averaged
   over seeds (95 % interval: bootstrap over test frames, paired across methods) and the
   worst seed, the labels each method needs to reach random's final MAE (linear in labels
   between iterations), the difference to the ensemble loop's final MAE, exploration CPU
   per loop and the alarm share per iteration.

Usage::

    python benchmarks/learn_emt.py --out OUT --seed S [--reuse]   # S = 0, 1, 2
    python benchmarks/learn_emt.py --out OUT --summarise
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

METHODS = ("d_optimal", "top", "random", "ensemble")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--n-test", type=int, default=45)
    p.add_argument("--epochs", type=int, default=40, help="base model training epochs")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=150, help="exploration MD steps per run")
    p.add_argument("--alarm-rate", type=float, default=0.05)
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="a loop whose alarm share is <= alarm_rate * (1 + tolerance) stops")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--members", type=int, default=4, help="ensemble loop's members")
    p.add_argument("--summarise", action="store_true",
                   help="combine the seeds already run in OUT into the learn_emt record")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--reuse", action="store_true", help="keep the base model and finished loops")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the loops (exploration MD, random selection); the data, the "
                   "base model and the test set stay the same. Seed s > 0 loops go to "
                   "OUT/loop_METHOD_seedS and record as learn_emt_seedS")
    return p.parse_args(argv)


def slab(facet: str, ads: str, rng: np.random.Generator, rattle: float):
    from ase.build import add_adsorbate, fcc100, fcc111

    s = (fcc111 if facet == "111" else fcc100)("Cu", size=(2, 2, 3), vacuum=5.0,
                                              periodic=True)
    add_adsorbate(s, ads, {"O": 1.5, "H": 1.75}[ads] if facet == "111" else 1.4,
                  "fcc" if facet == "111" else "hollow")
    s.info.pop("adsorbate_info", None)
    s.pbc = True
    s.rattle(rattle, seed=int(rng.integers(2**31)))
    return s


def labelled(frames):
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for a in frames:
        a = a.copy()
        a.calc = EMT()
        e, f, st = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=st)
        out.append(a)
    return out


def emt_md(start, temperature: float, n: int, every: int, seed: int):
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin

    from ltau_md.core.structures import thermalize

    a = start.copy()
    a.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize(a, temperature, rng)
    dyn = Langevin(a, 1 * units.fs, temperature_K=temperature, friction=0.02 / units.fs,
                   rng=rng)
    frames = []
    for _ in range(n):
        dyn.run(every)
        b = a.copy()
        b.calc = None
        frames.append(b)
    return frames


def per_frame_mae(model_path: Path, frames) -> np.ndarray:
    from ltau_md.core.model import evaluate_structures
    from ltau_md.integrations.nequip import NequIPFeatureModel

    outs = evaluate_structures(NequIPFeatureModel.from_file(model_path), frames)
    return np.array([np.linalg.norm(a.get_forces() - o.forces, axis=1).mean()
                     for a, o in zip(frames, outs, strict=True)])


def boot(x: np.ndarray, n: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    m = x[rng.integers(0, x.size, (n, x.size))].mean(1)
    return [float(x.mean()), float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))]


def train_base(out: Path, data: Path, name: str, seed: int, epochs: int) -> Path:
    """A base model (nequip-train, error logging) in ``out/name``; returns its checkpoint."""
    import shutil

    from ltau_md.integrations.nequip import toy

    run = out / name
    shutil.rmtree(run, ignore_errors=True)
    cfg = toy.tiny_config(data / "train.xyz", data / "val.xyz", seed=seed, max_epochs=epochs,
                          num_features=16, lr=0.01, lr_min=5e-4)
    t0 = time.perf_counter()
    toy.nequip_train(toy.write_config(cfg, out / f"{name}.yaml"), run, threads=1, timeout=None)
    print(f"[learn_emt] {name} trained ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return run / "last.ckpt"


def main(argv=None) -> int:
    args = parse_args(argv)
    import ase.io
    import torch

    from ltau_md.integrations.nequip import fit_from_runs
    from ltau_md.workflows.learn import load_config, run_learn

    torch.set_num_threads(1)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        line = summarise(out, args.n_boot)
        print(json.dumps(line))
        record(__file__, line, name="learn_emt")
        return 0
    suffix = f"_seed{args.seed}"
    t_start = time.perf_counter()
    lock = _wait_for_lock(out)  # the shared data and base models: one seed's run builds them
    try:
        data = out / "data"
        data.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        if not (args.reuse and (data / "test.xyz").exists()):
            narrow = labelled([slab("111", "OH"[i % 2], rng, 0.08)
                               for i in range(args.n_train + 40)])
            ase.io.write(data / "train.xyz", narrow[:args.n_train])
            ase.io.write(data / "val.xyz", narrow[args.n_train:])
            systems = [("100", "O"), ("100", "H"), ("111", "O")]
            starts = [slab(f, a, rng, 0.05) for f, a in systems]
            ase.io.write(data / "starts.xyz", starts)
            per = -(-args.n_test // len(systems))
            test = []
            for i, s in enumerate(starts):
                test += emt_md(s, 1000.0, per, 20, seed=100 + i)
            ase.io.write(data / "test.xyz", labelled(test[:args.n_test]))
        test = ase.io.read(data / "test.xyz", ":")

        base = out / "base"
        if not (args.reuse and (out / "estimator").exists()):
            train_base(out, data, "base", 1, args.epochs)
            fit_from_runs([base], base / "last.ckpt", out / "estimator", progress=False,
                          overwrite=True)
        members = []
        if "ensemble" in args.methods:  # members 1.. trained alike with seeds 2, 3, ...
            for m in range(1, args.members):
                ckpt = out / f"base_member{m}" / "last.ckpt"
                if not (args.reuse and ckpt.exists()):
                    train_base(out, data, f"base_member{m}", 1 + m, args.epochs)
                members.append(str(ckpt))
    finally:
        lock.release()
    # every loop holds its own directory's lock: seeds may run side by side
    base_mae = per_frame_mae(base / "last.ckpt", test)
    runs, per_frame = {}, {}
    for method in args.methods:
        ensemble = method == "ensemble"
        loop_cfg = {
            "out_dir": str(out / f"loop_{method}{suffix}"),
            "model": str(base / "last.ckpt"),
            "train": str(data / "train.xyz"),
            "validation": str(data / "val.xyz"), "test": str(data / "test.xyz"),
            "oracle": "ase.calculators.emt:EMT",
            "explore": {"structures": str(data / "starts.xyz"),
                        "temperatures_K": [800, 1200], "steps": args.steps,
                        "interval": 5, "alarm_rate": args.alarm_rate},
            "select": {"batch_size": args.batch,
                       "method": "random" if ensemble else method},
            "finetune": {"epochs": args.finetune_epochs, "lr": 0.005},
            "iterations": args.iterations, "label_budget": args.batch * args.iterations,
            "tolerance": args.tolerance, "seed": args.seed,
            **({"ensemble": members} if ensemble else
               {"estimator": str(out / "estimator")})}
        t0 = time.process_time()
        report = run_learn(load_config(loop_cfg))
        rows, maes = [], []
        for row in report["iterations"]:
            it = out / f"loop_{method}{suffix}" / f"ITER_{row['iteration']:03d}"
            ckpt = it / "finetune" / "run" / "last.ckpt"
            mae = per_frame_mae(ckpt, test) if ckpt.exists() else None
            if mae is not None:
                maes.append({"labels": row["labels_total"], "mae": mae.tolist()})
            rows.append({"iteration": row["iteration"],
                         "labels": row.get("labels_total"),
                         "alarm_share": row["alarm_share"],
                         "explore_cpu_s": row.get("explore_cpu_s"),
                         "test_force_mae": None if mae is None else boot(mae, args.n_boot)})
        runs[method] = {"iterations": rows, "stopped": report["stopped"],
                        "loop_cpu_s": time.process_time() - t0}
        per_frame[method] = maes
        print(json.dumps({method: runs[method]}), file=sys.stderr)

    line = {"benchmark": "learn_emt", "n_train": args.n_train, "n_test": len(test),
            "iterations": args.iterations, "batch": args.batch,
            "finetune_epochs": args.finetune_epochs, "alarm_rate": args.alarm_rate,
            "members": args.members, "seed": args.seed,
            "base_test_force_mae": boot(base_mae, args.n_boot), "runs": runs,
            "wall_seconds": time.perf_counter() - t_start}
    from ltau_md.core.files import write_json_atomic

    write_json_atomic(out / f"per_frame{suffix}.json",
                      {"base": base_mae.tolist(), "runs": per_frame, "summary": line})
    print(json.dumps(line))
    record(__file__, line, name=f"learn_emt{suffix}")
    return 0


def _wait_for_lock(out: Path):
    from ltau_md.core.exceptions import OutputBusyError
    from ltau_md.core.files import acquire_lock

    while True:
        try:
            return acquire_lock(out)
        except OutputBusyError:
            time.sleep(5)


def summarise(out: Path, n_boot: int) -> dict:
    """The seeds' per-frame test errors in ``out`` combined (see the module docstring)."""
    files = sorted(out.glob("per_frame_seed*.json"))
    if not files:
        raise SystemExit(f"no per_frame_seed*.json in {out}: run the seeds first")
    seeds = [json.loads(f.read_text()) for f in files]
    methods = [m for m in METHODS if all(m in s["runs"] for s in seeds)]
    base = np.array(seeds[0]["base"])
    n_it = seeds[0]["summary"]["iterations"]
    labels = [seeds[0]["summary"]["batch"] * (k + 1) for k in range(n_it)]

    def padded(rows: list[dict]) -> list:
        """A loop that stopped early (converged) keeps its last model for the label counts
        it did not reach."""
        maes = [r["mae"] for r in rows] or [base.tolist()]
        return maes + [maes[-1]] * (n_it - len(maes))

    # err[method] (n_seeds, n_iterations, n_test): per-frame MAE
    err = {m: np.array([padded(s["runs"][m]) for s in seeds]) for m in methods}
    used = {m: [s["runs"][m][-1]["labels"] if s["runs"][m] else 0 for s in seeds]
            for m in methods}
    rng = np.random.default_rng(0)
    idx = rng.integers(0, base.size, (n_boot, base.size))  # test frames, paired everywhere
    curve = {m: e.mean(0) for m, e in err.items()}  # seed mean (n_iterations, n_test)

    def labels_to_reach(c: np.ndarray, target: float) -> float | None:
        """Labels at which the curve (0 labels: the base model) first reaches ``target``,
        linear between iterations; None if it never does."""
        x = [0, *labels]
        y = [float(base.mean()), *c]
        for i in range(1, len(x)):
            if y[i] <= target:
                return x[i - 1] + (x[i] - x[i - 1]) * (y[i - 1] - target) / (y[i - 1] - y[i]) \
                    if y[i - 1] > target else float(x[i - 1])
        return None

    table = {}
    for m in methods:
        b = curve[m][:, idx].mean(2)  # (n_iterations, n_boot)
        table[m] = {
            "mae": [[float(curve[m][i].mean()), float(np.percentile(b[i], 2.5)),
                     float(np.percentile(b[i], 97.5))] for i in range(len(labels))],
            "mae_worst_seed": [float(err[m][:, i].mean(1).max()) for i in range(len(labels))],
            "mae_per_seed": [[float(v) for v in err[m][:, i].mean(1)]
                             for i in range(len(labels))],
            "labels_used_per_seed": used[m],
            "stopped_per_seed": [s["summary"]["runs"][m]["stopped"] for s in seeds]}
    result: dict = {"benchmark": "learn_emt", "seeds": [s["summary"]["seed"] for s in seeds],
                    "labels": labels, "base_test_force_mae": boot(base, n_boot),
                    "methods": table}
    if "random" in curve:
        target = float(curve["random"][-1].mean())
        boot_target = curve["random"][-1][idx].mean(1)
        reach = {}
        for m in methods:
            point = labels_to_reach(curve[m].mean(1), target)
            draws = [labels_to_reach(curve[m][:, j].mean(1), t)
                     for j, t in zip(idx[:200], boot_target[:200], strict=True)]
            never = sum(d is None for d in draws) / len(draws)
            finite = [d for d in draws if d is not None]
            reach[m] = {"labels": point, "share_of_random": None if point is None else
                        point / labels[-1],
                        "interval": [float(np.percentile(finite, 2.5)),
                                     float(np.percentile(finite, 97.5))] if finite else None,
                        "share_of_draws_never": never}
        result["labels_to_reach_random_final"] = {"target_mae": target, **reach}
    if "ensemble" in curve:
        diff = {}
        for m in methods:
            d = (curve[m][-1] - curve["ensemble"][-1])[idx].mean(1)
            diff[m] = [float((curve[m][-1] - curve["ensemble"][-1]).mean()),
                       float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]
        result["final_mae_minus_ensemble"] = diff
    cpu = {m: [sum(r["explore_cpu_s"] or 0 for r in s["summary"]["runs"][m]["iterations"])
               for s in seeds] for m in methods}
    n_runs = {m: [len(s["summary"]["runs"][m]["iterations"]) for s in seeds] for m in methods}
    result["explore_cpu_s_per_loop"] = {m: {"mean": float(np.mean(v)), "per_seed": v}
                                        for m, v in cpu.items()}
    result["explore_cpu_s_per_iteration"] = {
        m: float(np.sum(cpu[m]) / np.sum(n_runs[m])) for m in methods}
    if "ensemble" in cpu:
        per = result["explore_cpu_s_per_iteration"]
        result["explore_cpu_vs_ensemble"] = {m: per[m] / per["ensemble"] for m in methods}
    result["alarm_share"] = {m: [[r["alarm_share"] for r in s["summary"]["runs"][m]["iterations"]]
                                 for s in seeds] for m in methods}
    return result


if __name__ == "__main__":
    sys.exit(main())
