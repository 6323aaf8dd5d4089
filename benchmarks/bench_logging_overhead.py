"""Training time per epoch of a small NequIP without / with the LTAU error-logging callback.

Configurations: no callback, mode "eval" (extra pass per epoch with the EMA weights), mode
"eval" with ``cache_graphs`` (neighbour lists kept between epochs), mode "train" (errors from
the training forward passes). The same model, data and seed are trained in-process
(nequip's ASEDataModule + EMALightningModule + lightning.Trainer, CPU) for ``--epochs``
epochs; the first epoch is warm-up and excluded. Configurations are run in ``--rounds``
interleaved rounds and the fastest round's median epoch time is kept (robust to other load on
the machine). An epoch's time includes validation (a small val set) and every callback's
epoch-end work. Prints one JSON line.

    python benchmarks/bench_logging_overhead.py --n-train 200 --epochs 4 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from _record import record
from lightning.pytorch.callbacks import Callback

from ltau_md.integrations.nequip import LTAUErrorLogger, toy


class _EpochStart(Callback):
    def __init__(self) -> None:
        self.t0: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t0.append(time.perf_counter())


class _EpochEnd(Callback):
    def __init__(self) -> None:
        self.t1: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.t1.append(time.perf_counter())


def _run(config: str, data: tuple[Path, Path], root: Path, args) -> dict:
    start, end = _EpochStart(), _EpochEnd()
    cbs: list[Callback] = [start]
    logger = None
    if config != "none":
        mode = "train" if config == "train" else "eval"
        logger = LTAUErrorLogger(out_dir=root / f"log_{config}", mode=mode,
                                 cache_graphs=(config == "eval_cached"),
                                 batch_size=args.batch_size)
        cbs.append(logger)
    cbs.append(end)
    toy.fit_inprocess(*data, root, cbs, max_epochs=args.epochs, batch_size=args.batch_size,
                      num_features=args.num_features, num_layers=args.num_layers,
                      checkpoint=False, threads=args.threads)
    dt = np.array(end.t1) - np.array(start.t0)
    out = {"epoch_s": float(np.median(dt[1:]))}
    if logger is not None and logger.eval_seconds:
        out["eval_pass_s"] = float(np.median(logger.eval_seconds[1:]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-val", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-features", type=int, default=16)
    ap.add_argument("--num-layers", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's default)")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (the first epoch is warm-up)")

    configs = ["none", "eval", "eval_cached", "train"]
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = toy.write_emt_dataset(root / "data", n_train=args.n_train, n_val=args.n_val)
        n_atoms = sum(len(a) for a in ase.io.read(data[0], ":"))
        for r in range(args.rounds):
            for c in configs:
                res = _run(c, data, root / f"r{r}_{c}", args)
                if c not in best or res["epoch_s"] < best[c]["epoch_s"]:
                    best[c] = res
    base = best["none"]["epoch_s"]
    result = {
        "benchmark": "ltau_logging_overhead",
        "system": f"EMT Cu/O/H, {args.n_train} train frames ({n_atoms} atoms), "
                  f"{args.n_val} val frames",
        "model": f"NequIP l_max=1 num_features={args.num_features} "
                 f"num_layers={args.num_layers} float32, batch_size={args.batch_size}",
        "device": "cpu", "torch_threads": args.threads or torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "epochs_timed": args.epochs - 1, "rounds": args.rounds,
        "epoch_s": {c: round(best[c]["epoch_s"], 4) for c in configs},
        "eval_pass_s": {c: round(best[c]["eval_pass_s"], 4)
                        for c in configs if "eval_pass_s" in best[c]},
        "overhead_ratio": {c: round(best[c]["epoch_s"] / base, 3) for c in configs[1:]},
    }
    print(json.dumps(result))
    record(__file__, result)


if __name__ == "__main__":
    main()
