"""Estimator benchmark: fit time, peak RSS, artifact size, 200-atom query time and recall.

Synthetic clustered descriptors (D=32) and a synthetic E-epoch error log whose per-atom error
level follows the cluster, for N training atoms. Each N runs in fresh processes: one writes the
data to disk, one fits, saves and queries (so its peak RSS is the fit's own, index included).

    python benchmarks/bench_estimator.py --sizes 1e4,1e5,4e5,2e6 --epochs 100 --out bench_out

Prints one JSON line per N and a final summary line with the targets checked.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CENTERS = 400
N_QUERY = 200
K = 10


def _centers(dim: int) -> np.ndarray:
    return np.random.default_rng(1234).normal(size=(CENTERS, dim)).astype(np.float32) * 2.0


def generate(n: int, dim: int, epochs: int, out: Path) -> None:
    """Write descriptors.npy (memory-mappable) and an ErrorLog with ``epochs`` epochs."""
    from ltau_md import ErrorLog

    rng = np.random.default_rng(n)
    c = _centers(dim)
    lab = rng.integers(0, CENTERS, n)
    x = np.lib.format.open_memmap(out / "descriptors.npy", "w+", np.float32, (n, dim))
    for a in range(0, n, 1 << 18):
        b = min(n, a + (1 << 18))
        x[a:b] = c[lab[a:b]] + rng.normal(size=(b - a, dim)).astype(np.float32) * 0.35
    x.flush()
    del x
    level = np.exp(np.random.default_rng(7).normal(np.log(0.05), 0.6, CENTERS))[lab]
    level = level.astype(np.float32)
    log = ErrorLog.create(out / "log", species=np.full(n, 6), frame_offsets=[0, n],
                          ref_force_norm=np.ones(n, np.float32))
    for e in range(epochs):
        decay = np.float32(1.0 + 4.0 * np.exp(-e / 15.0))
        noise = rng.lognormal(0.0, 0.5, n).astype(np.float32)
        log.append(level * decay * noise)


def queries(dim: int, n_train: int) -> list[np.ndarray]:
    """A 200-atom 'trajectory' of 20 steps drifting slowly near the training clusters."""
    rng = np.random.default_rng(99)
    c = _centers(dim)
    q0 = c[rng.integers(0, CENTERS, N_QUERY)] + rng.normal(size=(N_QUERY, dim)) * 0.35
    drift = rng.normal(size=(N_QUERY, dim)) * 0.01
    return [(q0 + t * drift).astype(np.float32) for t in range(20)]


def _best_ms(fn, repeats: int = 5) -> float:
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def fit_and_query(n: int, dim: int, out: Path, threads: int) -> dict:
    import faiss

    from ltau_md import ErrorLog, LTAUEstimator
    from ltau_md.estimator import TrajectoryNeighbors

    faiss.omp_set_num_threads(threads)
    x = np.load(out / "descriptors.npy", mmap_mode="r")
    log = ErrorLog.open(out / "log")
    res: dict = {"n_train": n, "dim": dim, "epochs": log.n_epochs(0)}
    t = time.perf_counter()
    flat = LTAUEstimator(k=K, index="flat").fit(x, log)
    res["fit_flat_s"] = time.perf_counter() - t
    rss_flat = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = flat.summary_
    t = time.perf_counter()
    hnsw = LTAUEstimator(k=K, index="hnsw", hnsw_m=32, ef_construction=40, ef_search=32)
    hnsw.fit(x, summary)
    res["fit_hnsw_index_s"] = time.perf_counter() - t
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["peak_rss_flat_fit_mb"] = rss_flat
    res["summary_bytes_per_atom"] = summary.nbytes_per_atom
    for name, est in (("flat", flat), ("hnsw", hnsw)):
        d = out / f"est_{name}"
        est.save(d)
        res[f"artifact_{name}_mb"] = sum(f.stat().st_size for f in d.iterdir()) / 2**20
    steps = queries(dim, n)
    q = steps[0]
    exact = flat.predict(q)
    res["query_flat_ms"] = _best_ms(lambda: flat.predict(q))
    for ef in (16, 32, 64):
        hnsw.ef_search = ef
        res[f"query_hnsw_ef{ef}_ms"] = _best_ms(lambda: hnsw.predict(q))
        p = hnsw.predict(q)
        res[f"recall_hnsw_ef{ef}"] = _recall(exact.indices, p.indices)
        res[f"conf_maxdiff_hnsw_ef{ef}"] = float(np.max(np.abs(p.confidence - exact.confidence)))
        res[f"conf_meandiff_hnsw_ef{ef}"] = float(np.mean(np.abs(p.confidence - exact.confidence)))
    hnsw.ef_search = 32
    # along a trajectory: warm-started from the previous step's neighbours
    tracker = TrajectoryNeighbors(hnsw)
    tracker.predict(steps[0])
    times, recalls, diffs, mdiffs = [], [], [], []
    for qs in steps[1:]:
        t = time.perf_counter()
        p = tracker.predict(qs)
        times.append(time.perf_counter() - t)
        ex = flat.predict(qs)
        recalls.append(_recall(ex.indices, p.indices))
        diffs.append(float(np.max(np.abs(p.confidence - ex.confidence))))
        mdiffs.append(float(np.mean(np.abs(p.confidence - ex.confidence))))
    res["query_traj_ms_median"] = float(np.median(times) * 1e3)
    res["recall_traj_min"] = float(np.min(recalls))
    res["conf_maxdiff_traj"] = float(np.max(diffs))
    res["conf_meandiff_traj"] = float(np.mean(mdiffs))
    return res


def _recall(exact: np.ndarray, approx: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / exact.shape[1]
                          for a, b in zip(exact, approx, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e4,1e5,4e5,2e6")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench_out/estimator")
    ap.add_argument("--keep", action="store_true", help="keep generated data")
    ap.add_argument("--_child", choices=["generate", "fit"], help=argparse.SUPPRESS)
    ap.add_argument("--_n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    if args._child:
        d = out / f"n{args._n}"
        if args._child == "generate":
            generate(args._n, args.dim, args.epochs, d)
        else:
            print(json.dumps(fit_and_query(args._n, args.dim, d, args.threads)))
        return
    rows = []
    for n in (int(float(s)) for s in args.sizes.split(",")):
        d = out / f"n{n}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        base = [sys.executable, __file__, "--out", str(out), "--_n", str(n), "--dim",
                str(args.dim), "--epochs", str(args.epochs), "--threads", str(args.threads)]
        t = time.perf_counter()
        subprocess.run(base + ["--_child", "generate"], check=True)
        gen_s = time.perf_counter() - t
        r = subprocess.run(base + ["--_child", "fit"], check=True, capture_output=True,
                           text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        row = json.loads(r.stdout.strip().splitlines()[-1])
        row["generate_s"] = gen_s
        print(json.dumps(row), flush=True)
        rows.append(row)
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    by_n = {r["n_train"]: r for r in rows}
    summary: dict = {"benchmark": "estimator", "sizes": sorted(by_n)}
    if 400000 in by_n:
        r = by_n[400000]
        summary.update({
            "n4e5_query_hnsw_ef32_ms": r["query_hnsw_ef32_ms"],
            "n4e5_recall_hnsw_ef32": r["recall_hnsw_ef32"],
            "n4e5_query_traj_ms": r["query_traj_ms_median"],
            "n4e5_recall_traj_min": r["recall_traj_min"],
            "n4e5_conf_maxdiff_traj": r["conf_maxdiff_traj"],
            "n4e5_conf_meandiff_traj": r["conf_meandiff_traj"],
            "n4e5_conf_meandiff_hnsw_ef32": r["conf_meandiff_hnsw_ef32"],
            "target_query_le_10ms_met": bool(
                min(r["query_hnsw_ef32_ms"] if r["recall_hnsw_ef32"] >= 0.95 else np.inf,
                    r["query_traj_ms_median"] if r["recall_traj_min"] >= 0.95 else np.inf)
                <= 10.0),
            "speedup_traj_vs_hnsw_ef32": r["query_hnsw_ef32_ms"] / r["query_traj_ms_median"],
        })
    if 2000000 in by_n:
        r = by_n[2000000]
        summary.update({"n2e6_peak_rss_mb": r["peak_rss_mb"],
                        "target_rss_le_2gb_met": r["peak_rss_mb"] <= 2048})
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
