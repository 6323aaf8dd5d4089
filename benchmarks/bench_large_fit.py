"""A large fit measured end to end: N training atoms (default 2e7) x E epochs x M members with an
IVF-PQ index, from files on disk to a saved estimator; CPU and wall time per stage, peak RSS.

Data: bench_estimator.py's synthetic clustered descriptors (D=32, a memory-mapped .npy) and an
error log of M members x E epochs (member m > 0: member 0's errors times a lognormal factor),
written once by a separate process. The fit runs in a fresh process with ``--threads`` FAISS
threads: ``LTAUEstimator(index="ivfpq", n_threads=...)`` fed the memory-mapped descriptors and
the log; the stages are read from the ``ltau_md.fit`` logger (summary, index, leave_one_out),
then ``save``. Peak RSS (``ru_maxrss``) is taken after the save. Afterwards, not counted: 200
query atoms are searched and their recall@k scored against an exact search over the file.

    python benchmarks/bench_large_fit.py --n 2e7 --epochs 100 --members 2 --threads 2 \\
        --out bench_out/large

Needs about N x (E x M x 4 + 128) bytes of disk (2e7 x 100 x 2: 18 GB), all under a fresh
directory in ``--out`` that the run removes at the end (``--keep`` keeps it). Prints one JSON
line; writes a record to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import record
from bench_estimator import K, generate, queries


def _generate(n: int, d: Path, epochs: int, members: int) -> dict:
    from ltau_md.core.errorlog import ErrorLog

    t = time.perf_counter()
    generate(n, 32, epochs, d)
    log = ErrorLog.open(d / "log")
    for m in range(1, members):
        rng = np.random.default_rng(100 + m)
        for e in range(epochs):
            log.append((log.read_epoch(e) * rng.lognormal(0.0, 0.3, n).astype(np.float32)),
                       member=m)
    return {"generate_wall_s": time.perf_counter() - t}


class _Stages(logging.Handler):
    """Collects the ``ltau_md.fit`` stage lines with the wall time they arrive at."""

    def __init__(self) -> None:
        super().__init__()
        self.stages: dict[str, dict] = {}
        self.t0 = time.perf_counter()
        self.last = self.t0

    def emit(self, record: logging.LogRecord) -> None:
        m = re.match(r"fit stage (\w+): ([\d.]+) s CPU", record.getMessage())
        if m:
            now = time.perf_counter()
            self.stages[m.group(1)] = {"cpu_s": float(m.group(2)), "wall_s": now - self.last}
            self.last = now


def _fit(d: Path, threads: int) -> dict:
    import faiss

    from ltau_md.core.errorlog import ErrorLog
    from ltau_md.core.estimator import LTAUEstimator

    faiss.omp_set_num_threads(threads)
    handler = _Stages()
    log = logging.getLogger("ltau_md.fit")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    x = np.load(d / "descriptors.npy", mmap_mode="r")
    c0, w0 = time.process_time(), time.perf_counter()
    est = LTAUEstimator(k=K, index="ivfpq", n_threads=threads).fit(x, ErrorLog.open(d / "log"))
    fit_cpu, fit_wall = time.process_time() - c0, time.perf_counter() - w0
    c1, w1 = time.process_time(), time.perf_counter()
    est.save(d / "estimator")
    save = {"cpu_s": time.process_time() - c1, "wall_s": time.perf_counter() - w1}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(f.stat().st_size for f in (d / "estimator").iterdir()) / 2**20
    # not counted above: recall@k of 200 query atoms against an exact search of the file
    q = queries(32, est.n_train_, 2)[1]
    t = time.process_time()
    found = est.kneighbors(q)[1]
    query_ms = (time.process_time() - t) * 1e3
    best_d = np.full((q.shape[0], K), np.inf, np.float32)
    best_i = np.zeros((q.shape[0], K), np.int64)
    for a in range(0, x.shape[0], 1 << 21):
        dd, ii = faiss.knn(q, np.ascontiguousarray(x[a:a + (1 << 21)]), K)
        dd, ii = np.concatenate([best_d, dd], 1), np.concatenate([best_i, ii + a], 1)
        o = np.argsort(dd, axis=1, kind="stable")[:, :K]
        best_d, best_i = np.take_along_axis(dd, o, 1), np.take_along_axis(ii, o, 1)
    recall = float((found[:, :, None] == best_i[:, None, :]).any(-1).mean())
    ivf = faiss.extract_index_ivf(est.index_)
    return {"fit_cpu_s": fit_cpu, "fit_wall_s": fit_wall, "stages": handler.stages,
            "save": save, "peak_rss_mb_fit_and_save": rss, "artifact_mb": size,
            "ivf_nlist": int(ivf.nlist), "nprobe": int(ivf.nprobe), "pq_m": est.pq_m,
            "loo_atoms": None if est.loo_rows_ is None else int(est.loo_rows_.size),
            "query_200_atoms_cpu_ms": query_ms, "recall_at_k_200_atoms": recall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=float, default=2e7)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench_out/large")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--_child", choices=["generate", "fit"], help=argparse.SUPPRESS)
    ap.add_argument("--_dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = int(args.n)
    if args._child == "generate":
        print(json.dumps(_generate(n, Path(args._dir), args.epochs, args.members)))
        return
    if args._child == "fit":
        print(json.dumps(_fit(Path(args._dir), args.threads)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-large-fit-", dir=out))  # ours to remove
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    base = [sys.executable, __file__, "--n", str(n), "--epochs", str(args.epochs),
            "--members", str(args.members), "--threads", str(args.threads), "--_dir", str(work)]
    load0 = os.getloadavg()[0]
    try:
        res: dict = {"benchmark": "large_fit", "n_train": n, "epochs": args.epochs,
                     "members": args.members, "threads": args.threads, "dim": 32, "k": K}
        for child in ("generate", "fit"):
            r = subprocess.run(base + ["--_child", child], capture_output=True, text=True,
                               env=env)
            if r.returncode:
                raise SystemExit(f"{child} failed:\n{r.stderr[-3000:]}")
            res.update(json.loads(r.stdout.strip().splitlines()[-1]))
        res["data_gb"] = sum(f.stat().st_size for f in work.rglob("*") if f.is_file()
                             and "estimator" not in f.parts) / 2**30
    finally:
        if args.keep:
            print(f"data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    res["target_peak_rss_le_6gb"] = res["peak_rss_mb_fit_and_save"] <= 6 * 1024
    res["loadavg_1min"] = [load0, os.getloadavg()[0]]
    print(json.dumps(res), flush=True)
    if not args.no_record:
        record(__file__, res)


if __name__ == "__main__":
    main()
