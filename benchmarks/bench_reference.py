"""ltau-md against the reference LTAU implementation (LLNL ltau-ff), like for like: fit CPU
time and peak RSS (flat and HNSW indexes), 200-atom query CPU time (cold, and along a
trajectory for ltau-md), recall@k and the confidence error against an exact search.

The reference is not a dependency and is never copied here: pass the path of a checkout of
https://github.com/LLNL/ltau-ff (``--reference``; its ``ltau_ff`` package is imported from
there, with the FAISS build installed here).

Data (per N, written once): bench_estimator.py's synthetic clustered descriptors (D=32) and an
error log of ``--members`` members x ``--epochs`` epochs. Both implementations start from the
same files on disk:

- reference: the epoch files are read into one (T, N) array per member (as its tutorial
  loads logs), ``UQEstimator(logs, from_error_logs=True, nbins=64, bin_spacing="log")`` builds
  the PDFs and the index (HNSW: ``IndexHNSWFlat`` with M 32, efConstruction 40, ltau-md's
  defaults, and efSearch 32);
- ltau-md: ``LTAUEstimator(k, index=...).fit(descriptors, log)`` (memory-mapped inputs;
  leave-one-out novelty reference included), its default efSearch (24; its broad re-search of
  novel-looking atoms makes up the recall).

Every fit runs in a fresh process (its CPU time is the process's own, from ``getrusage``,
its peak RSS ``ru_maxrss``), 1 FAISS/BLAS thread, the four fits interleaved (the order is
reversed on the second repeat). The query process loads both HNSW estimators and times, at
each step of a drifting 200-atom trajectory and in rotating order, the reference's confidence
query (``est(q, topk=k, atol=atol)``: search + PDF average + CDF at atol), ltau-md's cold
``predict`` (search + broad re-search of novel-looking atoms + confidence + novelty) and
ltau-md's warm-started ``TrajectoryNeighbors.predict``. Accuracy: recall@k against an exact
flat search, and each implementation's confidence error against its own confidence from the
exact neighbours (mean, p99, max; the reference's PDFs are densities, so its confidence is
read as probability mass below atol for this).

    python benchmarks/bench_reference.py --reference /path/to/ltau-ff --sizes 1e5,4e5,2e6

Prints one JSON line per N and a summary line with the issue's targets; writes a record to
benchmarks/results/ (``--no-record`` to skip).
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
import time
from pathlib import Path

import numpy as np
from _record import record
from bench_estimator import N_QUERY, K, generate, queries

HNSW = {"M": 32, "efConstruction": 40, "efSearch": 32}
NBINS = 64
THREAD_ENV = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


# ---------------------------------------------------------------------------- children
def _generate(n: int, d: Path, epochs: int, members: int) -> None:
    from ltau_md.core.errorlog import ErrorLog

    generate(n, 32, epochs, d)
    log = ErrorLog.open(d / "log")
    for m in range(1, members):
        rng = np.random.default_rng(100 + m)
        for e in range(epochs):
            log.append((log.read_epoch(e) * rng.lognormal(0.0, 0.3, n)).astype(np.float32),
                       member=m)


def _reference_logs(d: Path) -> list[np.ndarray]:
    from ltau_md.core.errorlog import ErrorLog

    log = ErrorLog.open(d / "log")
    return [np.stack([np.load(log.path / f"member_{m:03d}" / f"epoch_{e:06d}.npy")
                      for e in log.epochs(m)]) for m in log.members]


def _fit(impl: str, kind: str, d: Path, reference: str) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)
    t0, w0 = time.process_time(), time.perf_counter()
    stages = {}
    if impl == "reference":
        sys.path.insert(0, reference)
        from ltau_ff.uq_estimator import UQEstimator

        logs = _reference_logs(d)
        stages["read_logs_s"] = time.process_time() - t0
        x = np.load(d / "descriptors.npy")
        est = UQEstimator(logs, from_error_logs=True, nbins=NBINS, bin_spacing="log",
                          descriptors=x,
                          index_type="IndexFlatL2" if kind == "flat" else "IndexHNSWFlat",
                          index_args=None if kind == "flat" else dict(HNSW))
        cpu = time.process_time() - t0
        if kind == "hnsw":
            est.save(str(d / "ref_hnsw.faiss"))
            np.save(d / "ref_pdfs.npy", est.pdfs)
            np.save(d / "ref_bins.npy", est.bins)
    else:
        from ltau_md.core.errorlog import ErrorLog
        from ltau_md.core.estimator import LTAUEstimator

        x = np.load(d / "descriptors.npy", mmap_mode="r")
        est = LTAUEstimator(k=K, index=kind, hnsw_m=HNSW["M"],
                            ef_construction=HNSW["efConstruction"])  # its own efSearch
        summary = est.error_summary(ErrorLog.open(d / "log"))
        stages["summary_s"] = time.process_time() - t0
        est.fit(x, summary)
        cpu = time.process_time() - t0
        if kind == "hnsw":
            est.save(d / "ours_hnsw")
    return {"impl": impl, "kind": kind, "cpu_s": cpu, "wall_s": time.perf_counter() - w0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "stages_cpu_s": stages}


def _recall(exact: np.ndarray, approx: np.ndarray) -> np.ndarray:
    return (approx[:, :, None] == exact[:, None, :]).any(-1).sum(-1) / exact.shape[1]


def _err(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    e = np.abs(np.concatenate(a) - np.concatenate(b))
    return {"mean": float(e.mean()), "p99": float(np.quantile(e, 0.99)), "max": float(e.max())}


def _query(d: Path, reference: str, n_steps: int) -> dict:
    import faiss

    sys.path.insert(0, reference)
    from ltau_ff.uq_estimator import UQEstimator

    from ltau_md.core.estimator import LTAUEstimator, TrajectoryNeighbors

    faiss.omp_set_num_threads(1)
    ours = LTAUEstimator.load(d / "ours_hnsw")
    ref = UQEstimator(np.load(d / "ref_pdfs.npy"), bins=np.load(d / "ref_bins.npy"),
                      load_index=True, index_load_path=str(d / "ref_hnsw.faiss"))
    ref.index.hnsw.efSearch = HNSW["efSearch"]
    atol = float(ours.atol_)
    steps = queries(32, ours.n_train_, n_steps)
    track = TrajectoryNeighbors(ours)
    calls = {
        "reference_cold": lambda q: ref(q, topk=K, atol=atol),
        "ours_cold": lambda q: ours.predict(q).confidence,
        "ours_trajectory": lambda q: track.predict(q).confidence,
    }
    for fn in calls.values():  # step 0: the trajectory's cold start, and warm caches
        fn(steps[0])
    names = list(calls)
    cpu: dict[str, list[float]] = {m: [] for m in names}
    conf: dict[str, list[np.ndarray]] = {m: [] for m in names}
    for t, q in enumerate(steps[1:], 1):
        for m in names[t % 3:] + names[:t % 3]:
            c0 = time.process_time()
            conf[m].append(np.asarray(calls[m](q), dtype=np.float64))
            cpu[m].append(time.process_time() - c0)
    # accuracy: neighbours of each method against an exact search (not timed)
    x = np.load(d / "descriptors.npy", mmap_mode="r")
    flat = faiss.IndexFlatL2(32)
    for a in range(0, x.shape[0], 1 << 18):
        flat.add(np.ascontiguousarray(x[a:a + (1 << 18)]))
    exact = [flat.search(q, K)[1] for q in steps[1:]]
    track.reset()
    track.kneighbors(steps[0])
    found = {"reference_cold": [ref.get_neighbor_indices(q, k=K) for q in steps[1:]],
             "ours_cold": [ours.kneighbors(q)[1] for q in steps[1:]],
             "ours_trajectory": [track.kneighbors(q)[1] for q in steps[1:]]}
    # the reference's PDFs are densities; its confidence read as probability mass (what its
    # CDF at atol means), from the neighbours it found and from the exact ones
    x_at = np.where(ref.bins >= atol)[0][0]
    widths = np.diff(ref.bins)

    def ref_conf(idx):
        return np.cumsum(ref.pdfs[idx].mean(axis=1) * widths, axis=1)[:, x_at]

    ref_exact_conf = [ref_conf(i) for i in exact]
    conf["reference_cold"] = [ref_conf(i) for i in found["reference_cold"]]
    ours_exact_conf = [ours.confidence_from_neighbors(i)[0] for i in exact]
    res: dict = {"n_steps_timed": n_steps - 1, "n_query": N_QUERY, "k": K,
                 "ef_search": {"reference": HNSW["efSearch"], "ltau-md": ours.ef_search,
                               "ltau-md_trajectory": track.ef_search}}
    for m in names:
        ms = np.asarray(cpu[m]) * 1e3
        rec = np.concatenate([_recall(e, f) for e, f in zip(exact, found[m], strict=True)])
        res[m] = {"cpu_ms_median": float(np.median(ms)), "cpu_ms_p90": float(np.quantile(ms, .9)),
                  "recall_mean": float(rec.mean()), "recall_min": float(rec.min()),
                  "confidence_error": _err(conf[m], ref_exact_conf if m.startswith("ref")
                                           else ours_exact_conf)}
    return res


# ---------------------------------------------------------------------------- driver
def _child(args: list[str], env: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                       env=env)
    if r.returncode:
        raise SystemExit(f"child {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=False, help="path of an LLNL/ltau-ff checkout")
    ap.add_argument("--sizes", default="1e5,4e5")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="fits of each kind per N")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default="bench_out/reference")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--_child", choices=["generate", "fit", "query"], help=argparse.SUPPRESS)
    ap.add_argument("--_dir", help=argparse.SUPPRESS)
    ap.add_argument("--_n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_impl", help=argparse.SUPPRESS)
    ap.add_argument("--_kind", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        d = Path(args._dir)
        if args._child == "generate":
            _generate(args._n, d, args.epochs, args.members)
            print("{}")
        elif args._child == "fit":
            print(json.dumps(_fit(args._impl, args._kind, d, args.reference)))
        else:
            print(json.dumps(_query(d, args.reference, args.steps)))
        return
    if not args.reference or not (Path(args.reference) / "ltau_ff" / "uq_estimator.py").exists():
        ap.error("--reference must name a checkout of LLNL/ltau-ff (with ltau_ff/uq_estimator.py)")
    env = {**os.environ, **THREAD_ENV, "PYTHONWARNINGS": "ignore"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-reference-", dir=out))  # ours to remove
    common = ["--reference", str(Path(args.reference).resolve()), "--epochs", str(args.epochs),
              "--members", str(args.members), "--steps", str(args.steps)]
    rows = []
    try:
        for n in (int(float(s)) for s in args.sizes.split(",")):
            d = work / f"n{n}"
            d.mkdir()
            base = common + ["--_dir", str(d), "--_n", str(n)]
            _child(base + ["--_child", "generate"], env)
            fits: dict[str, list[dict]] = {}
            order = [(i, k) for k in ("flat", "hnsw") for i in ("reference", "ltau-md")]
            for r in range(args.repeats):
                for impl, kind in (order if r % 2 == 0 else order[::-1]):
                    res = _child(base + ["--_child", "fit", "--_impl", impl, "--_kind", kind],
                                 env)
                    fits.setdefault(f"{impl}_{kind}", []).append(res)
            row: dict = {"n_train": n, "epochs": args.epochs, "members": args.members,
                         "loadavg_1min": os.getloadavg()[0], "fit": {}}
            for key, rs in fits.items():
                row["fit"][key] = {"cpu_s": float(np.median([r["cpu_s"] for r in rs])),
                                   "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                                   "runs": rs}
            for kind in ("flat", "hnsw"):
                a, b = row["fit"][f"ltau-md_{kind}"], row["fit"][f"reference_{kind}"]
                row["fit"][f"ratio_{kind}"] = {"cpu": a["cpu_s"] / b["cpu_s"],
                                               "peak_rss": a["peak_rss_mb"] / b["peak_rss_mb"]}
            row["query"] = _child(base + ["--_child", "query"], env)
            print(json.dumps(row), flush=True)
            rows.append(row)
            shutil.rmtree(d)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary: dict = {"benchmark": "reference", "sizes": [r["n_train"] for r in rows],
                     "targets": {}}
    for r in rows:
        n, q, f = r["n_train"], r["query"], r["fit"]
        t = summary["targets"]
        for kind in ("flat", "hnsw"):
            t[f"fit_cpu_le_reference_{kind}_{n:.0e}"] = f[f"ratio_{kind}"]["cpu"] <= 1.0
            t[f"fit_rss_le_0.2x_{kind}_{n:.0e}"] = f[f"ratio_{kind}"]["peak_rss"] <= 0.2
        ref, cold, traj = q["reference_cold"], q["ours_cold"], q["ours_trajectory"]
        t[f"cold_query_cpu_le_reference_{n:.0e}"] = cold["cpu_ms_median"] <= ref["cpu_ms_median"]
        t[f"cold_recall_ge_reference_{n:.0e}"] = cold["recall_mean"] >= ref["recall_mean"]
        t[f"trajectory_ge_1.5x_faster_{n:.0e}"] = (ref["cpu_ms_median"]
                                                  >= 1.5 * traj["cpu_ms_median"])
        t[f"p99_confidence_error_le_0.03_{n:.0e}"] = max(
            cold["confidence_error"]["p99"], traj["confidence_error"]["p99"]) <= 0.03
    print(json.dumps(summary), flush=True)
    if not args.no_record:
        record(__file__, {"summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
