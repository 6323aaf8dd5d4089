"""What does IS2RS generation with a universal-potential reference cost? A pilot generation,
uncached, with the reference end to end (lattice constants, relaxed targets, training
frames), OC20's adsorbates if their wheel is given.

Records per split the systems, the reference calls, the attempts and the rejected
relaxations (not converged, desorbed, dissociated), the CPU seconds per system, and the
projection to ``--project`` systems per split.

Usage::

    python benchmarks/is2rs_generate_cost.py --out OUT [--oc20-adsorbates WHEEL]
        [--reference ltau_md.workflows.is2rs.universal:chgnet] [--n-train 6] [--n-val 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _record import record

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="a new directory for the pilot benchmark")
    p.add_argument("--reference", default="ltau_md.workflows.is2rs.universal:chgnet")
    p.add_argument("--oc20-adsorbates", default=None, metavar="WHEEL_OR_PKL")
    p.add_argument("--n-train", type=int, default=6)
    p.add_argument("--n-val", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", type=int, default=100, help="systems per split projected")
    args = p.parse_args(argv)
    import torch

    from ltau_md.workflows.is2rs.generate import GeneratorConfig, generate_benchmark

    torch.set_num_threads(1)
    kw: dict = {"reference": args.reference}
    if args.oc20_adsorbates:
        from ltau_md.workflows.is2rs.adsorbates import oc20_generator_settings

        kw.update(oc20_generator_settings(args.oc20_adsorbates))
    t0, c0 = time.perf_counter(), time.process_time()
    manifest = generate_benchmark(args.out, seed=args.seed, n_train=args.n_train,
                                  n_val=args.n_val, cfg=GeneratorConfig(**kw), cache=False,
                                  progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    splits = {}
    for name, s in manifest["splits"].items():
        n = s["n_systems"]
        splits[name] = {k: s[k] for k in ("n_systems", "reference_calls", "attempts",
                                          "rejected", "generation_cpu_s")}
        splits[name]["cpu_s_per_system"] = s["generation_cpu_s"] / n if n else None
    n_sys = sum(s["n_systems"] for s in splits.values())
    per_system = sum(s["generation_cpu_s"] for s in splits.values()) / max(n_sys, 1)
    line = {"benchmark": "is2rs_generate_cost", "reference": args.reference,
            "oc20_adsorbates": bool(args.oc20_adsorbates), "seed": args.seed,
            "splits": splits, "cpu_s_per_system": per_system,
            "attempts_per_system": sum(s["attempts"] for s in splits.values()) / max(n_sys, 1),
            "reference_calls_per_system":
                sum(s["reference_calls"] for s in splits.values()) / max(n_sys, 1),
            "projected_cpu_hours": {f"{args.project}_per_split": per_system * args.project
                                    * len(splits) / 3600},
            "process_cpu_s": cpu, "wall_s": wall}
    print(json.dumps(line))
    record(__file__, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
