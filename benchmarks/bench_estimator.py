"""Estimator benchmark: fit and index build time, peak RSS, artifact size, per-step query time of
cold HNSW, warm-started HNSW and flat (exact) search, recall and its worst cases.

Synthetic clustered descriptors (D=32) and a synthetic E-epoch error log whose per-atom error
level follows the cluster, for N training atoms. Each N runs in fresh processes: one writes the
data to disk, one fits, saves and queries (so its peak RSS is the fit's own, index included).

    python benchmarks/bench_estimator.py --sizes 2e3,1e4,3e4,1e5 --epochs 50

Timing is like for like: at every step of a 200-atom query 'trajectory' the three searches
(cold HNSW at the estimator's efSearch, ``TrajectoryNeighbors`` warm start, flat) run on the
same step's queries, one after the other in an order that cycles through all permutations, and
each is summarised by the same statistics (median and p90 over steps). This is repeated at
every FAISS thread count of ``--threads`` (default 1 and 2); ratios come from the same run.
With other jobs on the cores, multi-thread timings are quantised to the scheduler tick
(about 4 ms) and say more about contention than about the search; ``loadavg_1min`` is recorded.

Accuracy is scored against the flat search of the same step, per atom: recall@k (mean, min,
fraction of atoms below 0.5), confidence error (mean, max) and, for atoms with recall < 0.5,
how much farther the nearest found neighbour is than the true nearest one.

Prints one JSON line per N and a final JSON line with the crossover N at which a cold HNSW
query becomes faster than flat (per thread count) and the targets checked. JSON only on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import record

CENTERS = 400
N_QUERY = 200
K = 10
EF_SWEEP = (16, 32, 64)


def _centers(dim: int) -> np.ndarray:
    return np.random.default_rng(1234).normal(size=(CENTERS, dim)).astype(np.float32) * 2.0


def generate(n: int, dim: int, epochs: int, out: Path) -> None:
    """Write descriptors.npy (memory-mappable) and an ErrorLog with ``epochs`` epochs."""
    from ltau_md.core.errorlog import ErrorLog

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


def queries(dim: int, n_train: int, n_steps: int = 20) -> list[np.ndarray]:
    """A 200-atom 'trajectory' of ``n_steps`` steps drifting slowly near the training clusters
    (the first 20 steps do not depend on ``n_steps``)."""
    rng = np.random.default_rng(99)
    c = _centers(dim)
    q0 = c[rng.integers(0, CENTERS, N_QUERY)] + rng.normal(size=(N_QUERY, dim)) * 0.35
    drift = rng.normal(size=(N_QUERY, dim)) * 0.01
    return [(q0 + t * drift).astype(np.float32) for t in range(n_steps)]


# ---------------------------------------------------------------------------- accuracy
def _atom_recall(exact: np.ndarray, approx: np.ndarray) -> np.ndarray:
    """Per query atom: fraction of its k exact neighbours found by the approximate search."""
    return (approx[:, :, None] == exact[:, None, :]).any(-1).sum(-1) / exact.shape[1]


def _accuracy(flat, exact: list[tuple], approx: list[tuple]) -> dict:
    """Worst cases beside means, over all (step, atom) pairs; ``exact``/``approx`` hold one
    (distances, indices) pair per step."""
    rec, cerr, far, low_atoms, step_rec = [], [], [], set(), []
    for (de, ie), (da, ia) in zip(exact, approx, strict=True):
        r = _atom_recall(ie, ia)
        rec.append(r)
        step_rec.append(float(r.mean()))
        ce, _ = flat.confidence_from_neighbors(ie)
        ca, _ = flat.confidence_from_neighbors(ia)
        cerr.append(np.abs(ca - ce))
        low = np.flatnonzero(r < 0.5)
        low_atoms.update(low.tolist())
        far.append(da[low, 0] / np.maximum(de[low, 0], 1e-12))
    rec, cerr, far = np.concatenate(rec), np.concatenate(cerr), np.concatenate(far)
    res = {
        "recall_mean": float(rec.mean()),
        "recall_min_atom": float(rec.min()),
        "recall_min_step_mean": float(min(step_rec)),
        "frac_atoms_recall_lt_0.5": float(np.mean(rec < 0.5)),
        "n_atom_steps_recall_lt_0.5": int(np.sum(rec < 0.5)),
        "n_distinct_atoms_recall_lt_0.5": len(low_atoms),
        "conf_err_mean": float(cerr.mean()),
        "conf_err_p99": float(np.quantile(cerr, 0.99)),
        "conf_err_max": float(cerr.max()),
        # nearest found / true nearest distance, for atoms with recall < 0.5
        "low_recall_nn_dist_ratio_median": float(np.median(far)) if far.size else None,
        "low_recall_nn_dist_ratio_max": float(far.max()) if far.size else None,
    }
    if far.size:
        res["low_recall_conf_err_max"] = float(cerr[rec < 0.5].max())
    return res


# ---------------------------------------------------------------------------- timing
def _stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"median": float(np.median(ms)), "p90": float(np.quantile(ms, 0.9)),
            "mean": float(ms.mean()), "min": float(ms.min()), "max": float(ms.max())}


def _per_step(flat, hnsw, steps: list[np.ndarray], threads: int) -> tuple[dict, dict]:
    """Cold HNSW, warm-started HNSW and flat search on each step's queries, interleaved (the
    order cycles through all 6 permutations), at ``threads`` FAISS threads. Returns the timing
    figures and each method's (distances, indices) per step (steps 1..T-1)."""
    import faiss

    from ltau_md.core.estimator import TrajectoryNeighbors

    faiss.omp_set_num_threads(threads)
    tracker = TrajectoryNeighbors(hnsw)
    search = {"cold": hnsw.kneighbors, "warm": tracker.kneighbors, "flat": flat.kneighbors}
    # step 0 is the warm start's cold first step; it also warms caches for the other two
    for fn in search.values():
        fn(steps[0])
    orders = list(itertools.permutations(search))
    times: dict[str, list[float]] = {m: [] for m in search}
    found: dict[str, list[tuple]] = {m: [] for m in search}
    for t, q in enumerate(steps[1:], 1):
        for m in orders[t % len(orders)]:
            t0 = time.perf_counter()
            r = search[m](q)
            times[m].append(time.perf_counter() - t0)
            found[m].append(r)
    res: dict = {"threads": threads, "steps_timed": len(steps) - 1,
                 "warm_ef_search": tracker.ef_search}
    for m in search:
        res[f"{m}_ms"] = _stats(times[m])
    med = {m: float(np.median(times[m])) for m in search}
    paired = {m: np.asarray(times[m]) for m in search}
    res["ratio"] = {
        # > 1: the second method is faster; medians of each, and the median of the per-step ratio
        "cold_over_warm": med["cold"] / med["warm"],
        "cold_over_warm_paired": float(np.median(paired["cold"] / paired["warm"])),
        "flat_over_cold": med["flat"] / med["cold"],
        "flat_over_cold_paired": float(np.median(paired["flat"] / paired["cold"])),
        "flat_over_warm": med["flat"] / med["warm"],
        "flat_over_warm_paired": float(np.median(paired["flat"] / paired["warm"])),
    }
    return res, found


def fit_and_query(n: int, dim: int, out: Path, threads: list[int], build_threads: int,
                  n_steps: int) -> dict:
    import faiss

    from ltau_md.core.confidence import ErrorSummary
    from ltau_md.core.errorlog import ErrorLog
    from ltau_md.core.estimator import LTAUEstimator

    load0 = os.getloadavg()[0]
    faiss.omp_set_num_threads(build_threads)
    x = np.load(out / "descriptors.npy", mmap_mode="r")
    log = ErrorLog.open(out / "log")
    res: dict = {"n_train": n, "dim": dim, "epochs": log.n_epochs(0), "k": K,
                 "n_query": N_QUERY, "build_threads": build_threads}
    t = time.perf_counter()
    summary = ErrorSummary.from_logs(log)
    res["summary_s"] = time.perf_counter() - t
    t = time.perf_counter()
    flat = LTAUEstimator(k=K, index="flat").fit(x, summary)
    res["build_flat_s"] = time.perf_counter() - t
    res["fit_flat_s"] = res["summary_s"] + res["build_flat_s"]
    rss_flat = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    hnsw = LTAUEstimator(k=K, index="hnsw")  # defaults: M 32, efConstruction 40, efSearch 32
    res["hnsw"] = {"m": hnsw.hnsw_m, "ef_construction": hnsw.ef_construction,
                   "ef_search": hnsw.ef_search}
    t = time.perf_counter()
    hnsw.fit(x, summary)
    res["build_hnsw_s"] = time.perf_counter() - t
    res["fit_hnsw_index_s"] = res["build_hnsw_s"]
    res["build_hnsw_over_flat"] = res["build_hnsw_s"] / res["build_flat_s"]
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["peak_rss_flat_fit_mb"] = rss_flat
    res["summary_bytes_per_atom"] = summary.nbytes_per_atom
    for name, est in (("flat", flat), ("hnsw", hnsw)):
        d = out / f"est_{name}"
        est.save(d)
        res[f"artifact_{name}_mb"] = sum(f.stat().st_size for f in d.iterdir()) / 2**20

    steps = queries(dim, n, n_steps)
    res["query"], found = {}, None
    for nt in threads:
        r, f = _per_step(flat, hnsw, steps, nt)
        res["query"][f"t{nt}"] = r
        found = found or f  # the searches are deterministic: score the first pass
    exact = found["flat"]
    acc = {"warm": _accuracy(flat, exact, found["warm"])}
    faiss.omp_set_num_threads(threads[0])
    for ef in EF_SWEEP:  # cold searches at other breadths: accuracy only, not timed
        if ef == hnsw.ef_search:
            approx = found["cold"]
        else:
            hnsw.ef_search = ef
            approx = [hnsw.kneighbors(q) for q in steps[1:]]
        acc[f"cold_ef{ef}"] = _accuracy(flat, exact, approx)
    hnsw.ef_search = res["hnsw"]["ef_search"]
    # the same cold search without the broad re-search of atoms that look novel
    acc[f"cold_ef{hnsw.ef_search}_no_confirm"] = _accuracy(
        flat, exact, [hnsw.kneighbors(q, confirm=False) for q in steps[1:]])
    res["accuracy"] = acc
    # how many 200-atom queries repay the HNSW build, at the first thread count
    q1 = res["query"][f"t{threads[0]}"]
    gain = (q1["flat_ms"]["median"] - q1["cold_ms"]["median"]) / 1e3
    extra = res["build_hnsw_s"] - res["build_flat_s"]
    res["hnsw_build_breakeven_queries"] = extra / gain if gain > 0 else None
    res["loadavg_1min"] = [load0, os.getloadavg()[0]]
    return res


# ---------------------------------------------------------------------------- summary
def _crossover(rows: list[dict], key: str, method: str) -> dict:
    """Smallest N from which ``method`` is faster than flat at every larger size measured, with
    a log-log interpolation of the flat/method ratio between the bracketing sizes."""
    pts = sorted((r["n_train"], r["query"][key]["flat_ms"]["median"]
                  / r["query"][key][f"{method}_ms"]["median"]) for r in rows
                 if key in r["query"])
    if not pts:
        return {}
    ns = [p[0] for p in pts]
    faster = [p[1] > 1.0 for p in pts]
    first = next((i for i in range(len(pts)) if all(faster[i:])), None)
    res: dict = {"ratio_flat_over_" + method: {str(n): r for n, r in pts}}
    if first is None:
        res.update(crossover_n=None, note=f"{method} never faster than flat up to N={ns[-1]}")
    elif first == 0:
        res.update(crossover_n=None, note=f"{method} already faster than flat at N={ns[0]}",
                   crossover_n_upper=ns[0])
    else:
        (n0, r0), (n1, r1) = pts[first - 1], pts[first]
        f = (0.0 - np.log(r0)) / (np.log(r1) - np.log(r0))
        est = float(np.exp(np.log(n0) + f * (np.log(n1) - np.log(n0))))
        res.update(crossover_n=round(est), crossover_bracket=[n0, n1])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2e3,5e3,1e4,3e4,1e5")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--threads", default="1,2",
                    help="FAISS thread counts for the per-step query comparison, e.g. 1,2")
    ap.add_argument("--build-threads", type=int, default=1,
                    help="FAISS threads for fitting/building the indexes")
    ap.add_argument("--steps", type=int, default=40,
                    help="trajectory steps (the first is the warm start's cold step)")
    ap.add_argument("--out", default="bench_out/estimator")
    ap.add_argument("--keep", action="store_true", help="keep generated data")
    ap.add_argument("--_child", choices=["generate", "fit"], help=argparse.SUPPRESS)
    ap.add_argument("--_n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    threads = [int(t) for t in str(args.threads).split(",")]
    out = Path(args.out)
    if args._child:
        d = out / f"n{args._n}"
        if args._child == "generate":
            generate(args._n, args.dim, args.epochs, d)
        else:
            print(json.dumps(fit_and_query(args._n, args.dim, d, threads, args.build_threads,
                                           args.steps)))
        return
    rows = []
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # a fresh folder of this run under --out: only what this run created is ever removed
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-estimator-", dir=out))
    for n in (int(float(s)) for s in args.sizes.split(",")):
        d = work / f"n{n}"
        d.mkdir()
        base = [sys.executable, __file__, "--out", str(work), "--_n", str(n), "--dim",
                str(args.dim), "--epochs", str(args.epochs), "--threads", args.threads,
                "--build-threads", str(args.build_threads), "--steps", str(args.steps)]
        t = time.perf_counter()
        subprocess.run(base + ["--_child", "generate"], check=True, stdout=sys.stderr, env=env)
        gen_s = time.perf_counter() - t
        r = subprocess.run(base + ["--_child", "fit"], check=True, capture_output=True,
                           text=True, env=env)
        row = json.loads(r.stdout.strip().splitlines()[-1])
        row["generate_s"] = gen_s
        print(json.dumps(row), flush=True)
        rows.append(row)
        if not args.keep:
            shutil.rmtree(d)
    if args.keep:
        print(f"generated data kept in {work}", file=sys.stderr)
    else:
        work.rmdir()
    by_n = {r["n_train"]: r for r in rows}
    summary: dict = {"benchmark": "estimator", "sizes": sorted(by_n), "threads": threads,
                     "crossover": {}}
    for nt in threads:
        for method in ("cold", "warm"):
            summary["crossover"][f"{method}_t{nt}"] = _crossover(rows, f"t{nt}", method)
    tkey = f"t{max(threads)}"
    if 400000 in by_n:
        r = by_n[400000]
        q, acc = r["query"][tkey], r["accuracy"]
        summary.update({
            "n4e5_threads": max(threads),
            "n4e5_query_cold_ef32_ms_median": q["cold_ms"]["median"],
            "n4e5_query_warm_ms_median": q["warm_ms"]["median"],
            "n4e5_speedup_warm_vs_cold": q["ratio"]["cold_over_warm"],
            "n4e5_recall_cold_ef32": acc["cold_ef32"]["recall_mean"],
            "n4e5_recall_warm_min_step": acc["warm"]["recall_min_step_mean"],
            "n4e5_conf_err_mean_warm": acc["warm"]["conf_err_mean"],
            "n4e5_conf_err_max_warm": acc["warm"]["conf_err_max"],
            "target_query_le_10ms_met": bool(
                min(q["cold_ms"]["median"] if acc["cold_ef32"]["recall_mean"] >= 0.95
                    else np.inf,
                    q["warm_ms"]["median"] if acc["warm"]["recall_min_step_mean"] >= 0.95
                    else np.inf) <= 10.0),
        })
    if 2000000 in by_n:
        r = by_n[2000000]
        summary.update({"n2e6_peak_rss_mb": r["peak_rss_mb"],
                        "target_rss_le_2gb_met": r["peak_rss_mb"] <= 2048})
    print(json.dumps(summary), flush=True)
    record(__file__, {"summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
