"""Single-model UQ that needs training, on acetylacetone: shallow-ensemble, mean-variance and
evidential heads fine-tuned on a trained NequIP model, scored beside LTAU, the latent signals
and a 4-member ensemble.

Data and base models as :mod:`acac` (``benchmarks/acac.py``; its member-training settings and
training/validation split): ``--members`` NequIP models trained with the LTAU error logger;
member 0 is the deployed model. Each process's CPU time is measured (``os.wait4``) and kept
beside its run (``RUN.cost.json``), so ``--reuse`` keeps the costs of finished runs.

Stages
------
1. members: the ensemble (as ``acac.py``), CPU time per member.
2. heads: from member 0's ``last.ckpt``, one ``nequip-train`` fine-tuning run per method
   (:mod:`ltau_md.integrations.nequip.heads`; backbone frozen, heads trained ``--head-epochs``
   epochs with the method's loss), CPU time each.
3. evaluate: :func:`ltau_md.workflows.evaluation.evaluate` once with member 0 and the other
   members (LTAU, latent signals, ensemble force std), and once per head model (its own
   per-atom signal, scored on its own errors, with the same estimator: the backbone and so
   the features are member 0's); in-domain ``test_MD_300K`` (calibration/evaluation halves),
   out of domain ``test_MD_600K``, ``test_H_transfer``, ``test_dihedral``.
4. cost per MD step of each head model (head forces by one batched backward and by M
   backward passes).

Usage::

    python benchmarks/acac_heads.py --data ../shared/data/acac --out OUT [--reuse]
    python benchmarks/acac_heads.py --data ../shared/data/acac --out OUT --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _record import record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import acac  # noqa: E402  (the member settings, split and data reader)

#: head methods fine-tuned, by their builder in ltau_md.integrations.nequip.heads
METHODS = ("shallow_ensemble", "mve", "evidential")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="directory of the acac xyz files")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--epochs", type=int, default=60, help="training epochs per member")
    p.add_argument("--head-epochs", type=int, default=10, help="fine-tuning epochs per head")
    p.add_argument("--heads", type=int, default=8, help="shallow-ensemble heads M")
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--r-max", type=float, default=4.0)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--lr-final", type=float, default=5e-4)
    p.add_argument("--head-lr", type=float, default=0.005)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--n-train", type=int, default=450)
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--fraction", type=float, default=0.5,
                   help="calibration fraction of the test_MD_300K frames (default 0.5)")
    p.add_argument("--alarm-rate", type=float, default=0.01)
    p.add_argument("--stage", choices=("members", "heads", "all"), default="all",
                   help="stop after this stage (default all)")
    p.add_argument("--reuse", action="store_true", help="keep finished training runs")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 2 members, 3 epochs, 2 head epochs, 60 frames")
    a = p.parse_args(argv)
    if a.quick:
        a.members, a.epochs, a.head_epochs, a.n_train, a.features = 2, 3, 2, 60, 8
    # the estimator as acac.py selects it (window start and k by the calibration half)
    a.k = [10, 30]
    a.window_start = sorted({0, a.epochs // 6, a.epochs // 3, a.epochs // 2})
    return a


# ---------------------------------------------------------------------------- runs
def timed_train(config: Path, run: Path, threads: int) -> dict[str, float]:
    """Run nequip-train on ``config`` into ``run``; its CPU and wall seconds (also written to
    ``RUN.cost.json``). RuntimeError with the output tail if it fails."""
    from ltau_md.core.files import write_json_atomic
    from ltau_md.integrations.nequip import toy

    cmd, env = toy.nequip_train_command(config, run, threads=threads)
    log = run.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"nequip-train {config} failed (exit {proc.returncode}):\n"
                           + log.read_text()[-4000:])
    cost = {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.perf_counter() - t0,
            "threads": threads}
    write_json_atomic(run.with_suffix(".cost.json"), cost)
    return cost


def finished(run: Path, epochs: int) -> bool:
    return run.with_suffix(".cost.json").exists() and acac.run_complete(run, epochs)


def run_all(jobs: list[tuple[Path, Path]], epochs: int, reuse: bool, n_jobs: int
            ) -> dict[str, dict[str, float]]:
    """Train every (config, run) not finished (all unless ``reuse``), ``n_jobs`` at once."""
    import shutil

    cores = os.cpu_count() or 1
    todo = [(c, r) for c, r in jobs if not (reuse and finished(r, epochs))]
    n = max(1, min(n_jobs or cores, len(todo) or 1))
    threads = 1  # every run at one thread, so the CPU times compare like with like

    def one(c: Path, r: Path) -> None:
        shutil.rmtree(r, ignore_errors=True)
        timed_train(c, r, threads)
        print(f"[acac_heads] {r.name} trained", file=sys.stderr)

    with ThreadPoolExecutor(n) as pool:
        for f in [pool.submit(one, c, r) for c, r in todo]:
            f.result()
    return {r.name: json.loads(r.with_suffix(".cost.json").read_text()) for _, r in jobs}


def prepare_data(args, work: Path) -> tuple[Path, Path, dict[str, list]]:
    import ase.io
    import numpy as np

    data = Path(args.data).resolve()
    train_all = acac.read(data / "train_300K.xyz")
    perm = np.random.default_rng(args.seed).permutation(len(train_all))
    n_val = min(50, len(train_all) - args.n_train)
    (work / "data").mkdir(parents=True, exist_ok=True)
    train_xyz, val_xyz = work / "data" / "train.xyz", work / "data" / "val.xyz"
    ase.io.write(train_xyz, [train_all[i] for i in perm[:args.n_train]], format="extxyz")
    ase.io.write(val_xyz, [train_all[i] for i in perm[args.n_train:args.n_train + n_val]],
                 format="extxyz")
    tests = {name: acac.read(data / f"{fname}.xyz") for name, fname in (
        ("300K", "test_MD_300K"), ("600K", "test_MD_600K"),
        ("H_transfer", "test_H_transfer"), ("dihedral", "test_dihedral"))}
    if args.quick:
        tests["300K"], tests["600K"] = tests["300K"][:120], tests["600K"][:120]
    return train_xyz, val_xyz, tests


def main(argv=None) -> int:
    args = parse_args(argv)
    from ltau_md.core.files import acquire_lock

    out = Path(args.out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(out)  # a second run on the same OUT is refused, never interleaved
    try:
        return _run(args, out, work)
    finally:
        lock.release()


def _run(args, out: Path, work: Path) -> int:
    from ltau_md.integrations.nequip import heads, toy

    t_start = time.perf_counter()
    train_xyz, val_xyz, tests = prepare_data(args, work)
    types = acac.type_names(acac.read(train_xyz))

    # -- 1. the ensemble ------------------------------------------------------------------
    member_jobs = [(toy.write_config(acac.member_config(args, train_xyz, val_xyz, m, types),
                                     work / f"member{m}.yaml"), work / f"member{m}")
                   for m in range(args.members)]
    member_cost = run_all(member_jobs, args.epochs, args.reuse, args.jobs)
    print(json.dumps({"members": member_cost}), file=sys.stderr)
    if args.stage == "members":
        return 0

    # -- 2. heads fine-tuned on member 0 ---------------------------------------------------
    ckpt = work / "member0" / "last.ckpt"
    base = acac.member_config(args, train_xyz, val_xyz, 0, types)
    head_jobs = []
    for method in METHODS:
        opts = {"n_heads": args.heads} if method == "shallow_ensemble" else {}
        cfg = heads.finetune_config(base, ckpt, method, max_epochs=args.head_epochs,
                                    lr=args.head_lr, **opts)
        head_jobs.append((toy.write_config(cfg, work / f"{method}.yaml"), work / method))
    head_cost = run_all(head_jobs, args.head_epochs, args.reuse, args.jobs)
    print(json.dumps({"heads": head_cost}), file=sys.stderr)
    if args.stage == "heads":
        return 0

    # -- 3. evaluation: the ensemble run, then one run per head model -----------------------
    import torch

    from ltau_md.core.errorlog import ErrorLog
    from ltau_md.integrations.nequip import NequIPFeatureModel, find_error_log
    from ltau_md.workflows.evaluation import evaluate

    torch.set_num_threads(1)
    runs = [r for _, r in member_jobs]
    logs = [ErrorLog.open(find_error_log(r)) for r in runs]
    members = [NequIPFeatureModel.from_file(r / "last.ckpt") for r in runs]
    est, _ = acac.select_estimator(args, runs, logs, members[0], tests["300K"],
                                   out / "estimator")
    ood = {n: tests[n] for n in ("600K", "H_transfer", "dihedral")}
    common = dict(fraction=args.fraction, seed=args.seed, alarm_rate=args.alarm_rate,
                  n_boot=args.n_boot, timing=(3, 5) if args.quick else (10, 20),
                  overwrite=True)
    reports = {"ensemble": evaluate(members[0], est, tests["300K"], ood, members[1:],
                                    out=out / "evaluation" / "ensemble", **common)}
    head_models = {}
    for method in METHODS:
        head_models[method] = NequIPFeatureModel.from_file(work / method / "last.ckpt")
        reports[method] = evaluate(head_models[method], est, tests["300K"], ood, signals=(),
                                   out=out / "evaluation" / method, **common)

    # -- 4. cost per step: head forces batched / looped, against the plain model ------------
    step = step_costs(members[0], head_models, tests["300K"][0], 3 if args.quick else 10,
                      5 if args.quick else 20)
    line = summarise(args, reports, member_cost, head_cost, step)
    line["wall_seconds"] = time.perf_counter() - t_start
    print(json.dumps(line))
    record(__file__, line, name="acac_heads_quick" if args.quick else "acac_heads")
    return 0


def step_costs(plain, head_models: dict, atoms, rounds: int, calls: int) -> dict[str, float]:
    """Median ms per model call on ``atoms`` (positions jittered), interleaved rounds: the
    plain member-0 model, each head model, and the shallow ensemble with its head forces by
    one batched backward ("batched"), M backward passes ("loop") and none ("none")."""
    import numpy as np

    rng = np.random.default_rng(0)
    base = atoms.positions.copy()
    a = atoms.copy()
    se = head_models["shallow_ensemble"].model.model.func  # ShallowEnsembleEnergy

    def call(model, mode=None):
        def fn():
            if mode is not None:
                se.force_mode = mode
            a.positions = base + rng.normal(scale=0.01, size=base.shape)
            model.evaluate(a)
        return fn

    fns = {"plain_model": call(plain), "mve": call(head_models["mve"]),
           "evidential": call(head_models["evidential"])}
    for mode in ("batched", "loop", "none"):
        fns[f"shallow_ensemble_{mode}"] = call(head_models["shallow_ensemble"], mode)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.process_time()
            for _ in range(calls):
                fn()
            times[k].append((time.process_time() - t0) / calls * 1e3)
    se.force_mode = "batched"
    return {k: float(np.median(v)) for k, v in times.items()}


def _val(d: dict | None) -> list | None:
    if d is None:
        return None
    r = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
    return [r(d["value"]), [r(c) for c in d["ci95"]]]


def summarise(args, reports: dict, member_cost: dict, head_cost: dict, step: dict
              ) -> dict[str, Any]:
    """One row per method: per-atom Spearman with |dF| (its own model's errors), calibration
    (area at the target tolerance, NLL), frame OOD AUROC (max statistic) and the
    out-of-domain alarm rate at the 1 % in-domain threshold per set, training CPU relative
    to the ensemble and cost per step."""
    ens_cpu = sum(c["cpu_s"] for c in member_cost.values())
    base_cpu = member_cost["member0"]["cpu_s"]
    rows: dict[str, Any] = {}

    def row(report: dict, signal: str) -> dict[str, Any]:
        key = f"{signal}:max"
        at1 = report["alarms"][key]["at_rate"]["0.01"]
        return {
            "spearman": _val(report["per_atom"][signal]["spearman"]),
            "ood_auroc_max": {n: _val(d[key]) for n, d in report["detection"].items()},
            "ood_rate_at_1pct": {n: (None if v is None else round(v, 4))
                                 for n, v in at1["ood_rate"].items()},
            "ood_rate_at_1pct_ci95": at1.get("ood_rate_ci95"),
        }

    ens = reports["ensemble"]
    for signal in ("uncertainty", "novelty", "gmm", "llpr", "doptimality",
                   "clustered_doptimality", "force_std"):
        if signal in ens["per_atom"]:
            rows[signal] = row(ens, signal)
    rows["uncertainty"]["miscalibration_area"] = ens["calibration"]["area_fitted"]
    cal = ens["spread_calibration"]["force_std"]  # the ensemble's spread read as a Gaussian
    rows["force_std"].update({k: cal[k] for k in (
        "miscalibration_area", "nll_per_component", "scale", "miscalibration_area_fitted")})
    rows["force_std"]["train_cpu_over_ensemble"] = 1.0
    for method in METHODS:
        rep = reports[method]
        r = row(rep, method)
        cal = rep["spread_calibration"][method]
        r.update(miscalibration_area=cal["miscalibration_area"],
                 nll_per_component=cal["nll_per_component"], scale=cal["scale"],
                 miscalibration_area_fitted=cal["miscalibration_area_fitted"],
                 force_mae_in_domain=rep["in_domain_force_mae"],
                 finetune_cpu_s=head_cost[method]["cpu_s"],
                 train_cpu_over_ensemble=head_cost[method]["cpu_s"] / ens_cpu,
                 train_cpu_with_base_over_ensemble=(head_cost[method]["cpu_s"] + base_cpu)
                 / ens_cpu)
        rows[method] = r
    se = rows["shallow_ensemble"]
    return {
        "benchmark": "acac_heads", "quick": bool(args.quick), "members": args.members,
        "epochs": args.epochs, "head_epochs": args.head_epochs, "heads": args.heads,
        "ensemble_train_cpu_s": ens_cpu, "member0_train_cpu_s": base_cpu,
        "in_domain_force_mae": {"ensemble_member0": ens["in_domain_force_mae"],
                                **{m: reports[m]["in_domain_force_mae"] for m in METHODS}},
        "target_atol": ens["calibration"]["target_atol"],
        "rows": rows, "step_ms": step,
        "targets_met": {
            "shallow_ensemble_miscalibration_area_le_0.05": se["miscalibration_area"] <= 0.05,
            "shallow_ensemble_train_cpu_le_0.2_ensemble": se["train_cpu_over_ensemble"] <= 0.2,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
