"""``ltau-md evaluate`` now against an earlier commit, on the same inputs: CPU time of each
whole command and whether every number of ``evaluation.json`` is the same.

The earlier code is exported with ``git archive`` into a temporary directory (nothing in the
repository changes) and run with it first on ``PYTHONPATH``. The two versions run alternately,
``--rounds`` times each, in fresh processes at 1 thread (``OMP_NUM_THREADS=1``); the CPU time
is the child's (``getrusage``). Numbers are compared after dropping what measures time
(``cost_per_step``, ``timing``, ``ranking`` cost columns).

Inputs are those of an acac benchmark run (``benchmarks/acac.py --out RUN``): its first
member's checkpoint, its estimator, the other members as the ensemble, and the acac test sets.

    python benchmarks/bench_evaluate.py --run RUN --data ../shared/data/acac --old b38f580

Prints one JSON line; writes a record to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _record import record

ROOT = Path(__file__).resolve().parents[1]
TIME_KEYS = ("cost_per_step", "timing", "cost", "seconds", "wall", "_s")


def _strip(obj):
    """``obj`` without the entries that measure time, floats rounded to 12 significant
    digits (the summation order of a vectorised bootstrap may move the last bits)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items()
                if not any(k == t or k.endswith(t) or k.startswith(t) for t in TIME_KEYS)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    if isinstance(obj, float):
        return float(f"{obj:.12g}")
    return obj


def _diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in one" for k in set(a) ^ set(b)]
        for k in set(a) & set(b):
            out += _diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="an acac benchmark output directory")
    ap.add_argument("--data", required=True, help="the acac data directory")
    ap.add_argument("--old", required=True, help="the earlier commit")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    run, data = Path(args.run).resolve(), Path(args.data).resolve()
    members = sorted((run / "work").glob("member*/last.ckpt"))
    if not members or not (run / "estimator").is_dir():
        ap.error(f"{run} is not an acac benchmark run (work/member*/last.ckpt, estimator/)")
    scratch = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))  # ours to remove
    try:
        old_src = scratch / "old"
        old_src.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old, "ltau_md"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive, check=True)
        cmd = [sys.executable, "-m", "ltau_md.cli", "evaluate", "--model", str(members[0]),
               "--estimator", str(run / "estimator"),
               "--in-domain", str(data / "test_MD_300K.xyz"),
               "--ood", f"600K={data / 'test_MD_600K.xyz'}",
               "--ood", f"H_transfer={data / 'test_H_transfer.xyz'}",
               "--ood", f"dihedral={data / 'test_dihedral.xyz'}", "--no-progress", "--json"]
        if len(members) > 1:
            cmd += ["--members", *map(str, members[1:])]
        cpu: dict[str, list[float]] = {"old": [], "new": []}
        reports: dict[str, dict] = {}
        for r in range(args.rounds):
            for version in (("old", "new") if r % 2 == 0 else ("new", "old")):
                out = scratch / f"{version}{r}"
                env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
                       "PYTHONPATH": str(old_src if version == "old" else ROOT)}
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                p = subprocess.run(cmd + ["--out", str(out)], env=env, capture_output=True,
                                   text=True, cwd=scratch)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if p.returncode:
                    raise SystemExit(f"{version} evaluate failed:\n{p.stderr[-3000:]}")
                cpu[version].append((after.ru_utime - before.ru_utime)
                                    + (after.ru_stime - before.ru_stime))
                # the output directory differs by run: paths are compared below it
                text = (out / "evaluation.json").read_text().replace(str(out), "OUT")
                reports[version] = json.loads(text)
        diffs = _diff(_strip(reports["old"]), _strip(reports["new"]))
        med = {v: float(np.median(t)) for v, t in cpu.items()}
        res = {"benchmark": "evaluate", "old_commit": args.old, "members": len(members),
               "rounds": args.rounds, "cpu_s": cpu, "cpu_s_median": med,
               "speedup": med["old"] / med["new"], "identical_numbers": not diffs,
               "differences": diffs[:20], "target_ge_2x": med["old"] / med["new"] >= 2.0}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(res), flush=True)
    if not args.no_record:
        record(__file__, res)


if __name__ == "__main__":
    main()
