"""The five stages of one iteration. Each writes into its own folder of ``ITER_k/`` and ends
by writing its ``result.json`` atomically: a stage is done exactly when that file exists, and
a rerun redoes (or continues) any stage without it."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ltau_md.core.exceptions import LTAUError
from ltau_md.core.files import write_json_atomic
from ltau_md.workflows.is2rs.reference import load_reference
from ltau_md.workflows.learn._config import LearnConfig
from ltau_md.workflows.learn._select import alarm_windows, d_optimal_selection

__all__ = ["RESULT", "explore", "finetune", "label", "member_run", "read_frames", "refit",
           "select", "trust_levels", "write_frames"]

#: the file that marks a stage (or an exploration run) done
RESULT = "result.json"


def _iteration(it_dir: Path) -> int:
    """k of an ``ITER_k`` folder."""
    return int(it_dir.name.split("_")[-1])


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_frames(path: Path, frames: list[Atoms]) -> None:
    """extxyz of ``frames`` written atomically (energies, forces and info kept)."""
    import ase.io

    from ltau_md.core.files import atomic_path

    with atomic_path(path, suffix=".extxyz") as tmp:
        ase.io.write(tmp, frames, format="extxyz")


def read_frames(path: Path) -> list[Atoms]:
    import ase.io

    return list(ase.io.read(path, ":", format="extxyz")) if path.stat().st_size else []


# ---------------------------------------------------------------------------- explore
def _explore_one(task: dict[str, Any]) -> dict[str, Any]:
    """One exploration MD run (on a dask worker or in process) into ``task["out"]``; returns
    its per-observation alarm values and threshold (``explore`` writes them to the run's
    ``result.json``). With several ``members`` the ensemble's force deviation is watched
    against ``task["above"]``; else the LTAU calculator's statistic at the alarm rate."""
    import torch

    from ltau_md.core.observers import Threshold
    from ltau_md.workflows.simulate import run_md

    torch.set_num_threads(1)
    t0 = time.process_time()
    signal_name, on = task["alarm"].split(":", 1)
    if len(task["members"]) > 1:
        from ltau_md.core.baselines import EnsembleCalculator
        from ltau_md.integrations.nequip import NequIPFeatureModel

        calc = EnsembleCalculator([NequIPFeatureModel.from_file(m) for m in task["members"]])
        pol = Threshold("warn", task["above"], signal=signal_name, on=on)
    else:
        from ltau_md.integrations.nequip import load_calculator

        calc = load_calculator(task["members"][0], task["estimator"])
        pol = Threshold("warn", alarm_rate=task["alarm_rate"], signal=signal_name, on=on)
    out = Path(task["out"])
    summary = run_md(task["atoms"], calc, out, temperature_K=task["temperature_K"],
                     timestep_fs=task["timestep_fs"], steps=task["steps"], policies=[pol],
                     interval=task["interval"], seed=task["seed"], progress=False,
                     overwrite=True)
    lines = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines() if x]
    values = [x.get(task["alarm"]) for x in lines]
    return {"run": out.name, "start": task["start"], "threshold": pol.threshold,
            "values": values,
            "steps": [x["step"] for x in lines], "status": summary.get("status"),
            "cpu_s": time.process_time() - t0}


def trust_levels(cfg: LearnConfig, members: list[Path], alarm: str, sizes: list[int]
                 ) -> list[tuple[float, float]]:
    """An ensemble-driven loop's (trust_lo, trust_hi) in eV/A for structures of ``sizes``
    free atoms: ``explore.trust_levels`` when given, else trust_lo the threshold that
    ``explore.alarm_rate`` of the validation frames' ``alarm`` statistic exceed with the
    current ``members`` (:func:`~ltau_md.core.metrics.alarm_threshold`, sized to each
    structure for a maximum, as LTAU's threshold) and no trust_hi (inf). The validation
    frames are evaluated once for all sizes."""
    if cfg.explore.trust_levels is not None:
        return [cfg.explore.trust_levels] * len(sizes)
    from ltau_md.core.baselines import force_std
    from ltau_md.core.metrics import alarm_threshold, frame_statistic
    from ltau_md.core.model import evaluate_structures
    from ltau_md.core.structures import free_atoms, read_structures
    from ltau_md.integrations.nequip import NequIPFeatureModel

    frames = read_structures(cfg.validation)
    outs = [evaluate_structures(NequIPFeatureModel.from_file(m), frames) for m in members]
    on = alarm.split(":", 1)[1]
    values, val_sizes = [], []
    for i, a in enumerate(frames):
        free = free_atoms(a)
        std = force_std([o[i].forces for o in outs])
        values.append(frame_statistic(std, on, free if free.any() else None))
        val_sizes.append(int(free.sum()) or len(a))
    values = np.array(values)
    return [(alarm_threshold(values, cfg.explore.alarm_rate,
                             n / float(np.mean(val_sizes)) if on == "max" else 1.0),
             math.inf) for n in sizes]


def explore(cfg: LearnConfig, it_dir: Path, members: list[Path], estimator: Path | None,
            alarm: str, n_workers: int = 0, scheduler: Any = None) -> dict[str, Any]:
    """MD from every start structure at every temperature with the current model
    (``members[0]``); every observed frame whose alarm statistic exceeds the in-domain
    threshold is a candidate (``explore/candidates.extxyz``, info: run, step, value), one
    per alarm window. With several ``members`` (the ensemble-driven loop) the threshold is
    trust_lo (:func:`trust_levels`, in ``explore/trust_levels.json``) and frames above
    trust_hi alarm but are not candidates. Finished runs are kept on a rerun
    (``RUN/result.json``)."""
    import ase.io

    from ltau_md.core.structures import free_atoms, read_structures

    out = it_dir / "explore"
    out.mkdir(parents=True, exist_ok=True)
    starts = read_structures(cfg.explore.structures)
    t0 = time.process_time()
    saved: dict[str, list[float | None]] = {}  # trust_levels.json: no trust_hi is null
    levels: dict[str, tuple[float, float]] = {}
    if len(members) > 1:
        path = out / "trust_levels.json"
        if not path.exists():  # per start structure (a maximum's threshold follows its size)
            sizes = [int(free_atoms(a).sum()) or len(a) for a in starts]
            write_json_atomic(path, {
                str(i): [lo, None if math.isinf(hi) else hi]
                for i, (lo, hi) in enumerate(trust_levels(cfg, members, alarm, sizes))})
        saved = read_json(path)
        levels = {i: (lo, math.inf if hi is None else hi) for i, (lo, hi) in saved.items()}
    tasks = []
    pairs = [(i, t) for i in range(len(starts)) for t in cfg.explore.temperatures_K]
    for j, (i, t) in enumerate(pairs):  # run j: start i at temperature t, whatever is done
        run = out / f"run_{j:03d}"
        if (run / RESULT).exists():
            continue
        b = starts[i].copy()
        b.calc = None
        tasks.append({"members": [str(m) for m in members],
                      "estimator": None if estimator is None else str(estimator),
                      "above": levels[str(i)][0] if levels else None, "atoms": b,
                      "alarm": alarm, "alarm_rate": cfg.explore.alarm_rate,
                      "temperature_K": float(t), "timestep_fs": cfg.explore.timestep_fs,
                      "steps": cfg.explore.steps, "interval": cfg.explore.interval,
                      "seed": cfg.seed * 1000 + _iteration(it_dir) * 100 + j,
                      "out": str(run), "start": i})
    for res in _map(_explore_one, tasks, n_workers, scheduler):
        write_json_atomic(out / res["run"] / RESULT, res)
    runs = sorted(p for p in out.glob("run_*") if (p / RESULT).exists())
    candidates, n_obs, n_alarm, n_above, thr = [], 0, 0, 0, None
    cpu = time.process_time() - t0  # the trust levels' evaluation, if any
    for run in runs:
        res = read_json(run / RESULT)
        thr, cpu = res["threshold"], cpu + res.get("cpu_s", 0.0)
        hi = levels[str(res["start"])][1] if levels else float("inf")
        v = np.array([np.inf if x is None else x for x in res["values"]], dtype=float)
        n_obs += v.size
        n_alarm += int((v > thr).sum())
        n_above += int((v > hi).sum())
        frames = ase.io.read(run / "trajectory.extxyz", ":")
        for k in alarm_windows(res["steps"], np.where(v > hi, -np.inf, v), thr,
                               max_length=cfg.select.window):
            f = frames[k]
            f.calc = None
            f.info.update(run=run.name, step=int(res["steps"][k]), alarm_value=float(v[k]))
            candidates.append(f)
    write_frames(out / "candidates.extxyz", candidates)
    result = {"n_runs": len(runs), "n_observed": n_obs, "n_alarmed": n_alarm,
              "alarm_share": n_alarm / n_obs if n_obs else None, "threshold": thr,
              "alarm": alarm, "n_candidates": len(candidates), "cpu_s": cpu}
    if levels:
        result.update(trust_levels=saved, n_above_trust_hi=n_above)
    write_json_atomic(out / RESULT, result)
    return result


def _map(fn, tasks: list, n_workers: int, scheduler: Any):
    """``fn`` over ``tasks``: in this process (``n_workers`` 0 and no scheduler) or on dask;
    a failed task raises (its run is redone by a rerun)."""
    if not tasks:
        return
    if n_workers == 0 and scheduler is None:
        for t in tasks:
            yield fn(t)
        return
    from ltau_md.workflows._dask import map_unordered

    for _, res, exc in map_unordered(fn, tasks, n_workers=n_workers, scheduler=scheduler):
        if exc is not None:
            raise LTAUError(f"an exploration run failed: {type(exc).__name__}: {exc}") from exc
        yield res


# ---------------------------------------------------------------------------- select
def select(cfg: LearnConfig, it_dir: Path, model: Path, reference: list[Atoms],
           n_labels: int) -> dict[str, Any]:
    """At most ``n_labels`` candidates (``select/selected.extxyz``): D-optimal against the
    training frames ``reference`` in the current model's features, or the highest alarm
    values ("top"), or a seeded random draw ("random")."""
    out = it_dir / "select"
    out.mkdir(parents=True, exist_ok=True)
    cands = read_frames(it_dir / "explore" / "candidates.extxyz")
    method = cfg.select.method
    if not cands or n_labels < 1:
        chosen: list[int] = []
    elif method == "top":
        chosen = list(np.argsort([-a.info["alarm_value"] for a in cands], kind="stable")
                      [:n_labels])
    elif method == "random":
        rng = np.random.default_rng(cfg.seed + _iteration(it_dir))
        chosen = sorted(rng.choice(len(cands), min(n_labels, len(cands)), replace=False))
    else:
        from ltau_md.core.model import structure_offsets
        from ltau_md.integrations.nequip import NequIPFeatureModel, descriptors_for_dataset

        fm = NequIPFeatureModel.from_file(model)
        ref = descriptors_for_dataset(fm, reference, progress=False)
        z_ref = np.concatenate([a.numbers for a in reference])
        feats = descriptors_for_dataset(fm, cands, progress=False)
        off = structure_offsets(cands)
        chosen = d_optimal_selection(
            [(feats[off[i]:off[i + 1]], cands[i].numbers) for i in range(len(cands))],
            (ref, z_ref), n_labels)
    picked = [cands[int(i)] for i in chosen]
    write_frames(out / "selected.extxyz", picked)
    result = {"method": method, "n_candidates": len(cands), "n_selected": len(picked),
              "selected": [int(i) for i in chosen]}
    write_json_atomic(out / RESULT, result)
    return result


# ---------------------------------------------------------------------------- label
def label(cfg: LearnConfig, it_dir: Path, stress: bool = False) -> dict[str, Any]:
    """Energy, forces (and with ``stress``, as the training frames carry it, the stress) of
    every selected frame from the oracle, one file per frame
    (``label/NNNN.extxyz``, or ``NNNN.failed.json`` with the reason), so a rerun labels only
    what is missing: no label is computed twice or lost. ``label/labelled.extxyz`` holds the
    successful ones in order."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = it_dir / "label"
    out.mkdir(parents=True, exist_ok=True)
    frames = read_frames(it_dir / "select" / "selected.extxyz")
    oracle = load_reference(cfg.oracle, "oracle")
    done, failed = [], []
    for i, a in enumerate(frames):
        ok, bad = out / f"{i:04d}.extxyz", out / f"{i:04d}.failed.json"
        if not ok.exists() and not bad.exists():
            b = Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc, info=dict(a.info))
            try:
                b.calc = oracle
                e, f = float(b.get_potential_energy()), np.asarray(b.get_forces())
                st = np.asarray(b.get_stress()) if stress else None
                if not (np.isfinite(e) and np.isfinite(f).all()
                        and (st is None or np.isfinite(st).all())):
                    raise ValueError("non-finite energy, forces or stress")
            except Exception as exc:  # the oracle's own failure: recorded, never dropped
                write_json_atomic(bad, {"frame": i, "error": f"{type(exc).__name__}: {exc}"})
            else:
                b.calc = SinglePointCalculator(b, energy=e, forces=f, stress=st)
                write_frames(ok, [b])
        if ok.exists():
            done.append(read_frames(ok)[0])
        else:
            failed.append(read_json(bad))
    write_frames(out / "labelled.extxyz", done)
    result = {"n_selected": len(frames), "n_labelled": len(done), "failed": failed}
    write_json_atomic(out / RESULT, result)
    return result


# ---------------------------------------------------------------------------- fine-tune
def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The training process is killed when the loop is (Linux): a killed loop never leaves
    a nequip-train writing into a run a rerun restarts."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def member_run(it_dir: Path, m: int) -> Path:
    """The nequip-train run of member ``m`` in an iteration's ``finetune/`` (member 0, the
    model that explores: ``run``)."""
    return it_dir / "finetune" / ("run" if m == 0 else f"run_member{m}")


def finetune(cfg: LearnConfig, it_dir: Path, members: list[Path], train: list[Atoms]
             ) -> dict[str, Any]:
    """nequip-train from each member's checkpoint (one for the LTAU loop) on ``train`` (the
    training frames plus every label so far) for ``finetune.epochs`` with the LTAU error
    logger, validated on the held-out frames, one member after the other. A member is done
    when its process ended cleanly and its error log holds every epoch (then
    ``RUN.done.json``); a killed run resumes from its ``last.ckpt``."""
    out = it_dir / "finetune"
    out.mkdir(parents=True, exist_ok=True)
    train_file = out / "train.extxyz"
    if not train_file.exists():
        write_frames(train_file, train)
    checkpoints = []
    for m, model in enumerate(members):
        run = member_run(it_dir, m)
        done = run.with_name(f"{run.name}.done.json")
        if not done.exists():
            write_json_atomic(done, _finetune_one(cfg, model, run, train_file))
        checkpoints.append(str(run / "last.ckpt"))
    result = {"checkpoint": checkpoints[0], "checkpoints": checkpoints,
              "epochs": cfg.finetune.epochs, "n_train_frames": len(train)}
    write_json_atomic(out / RESULT, result)
    return result


def _finetune_one(cfg: LearnConfig, model: Path, run: Path, train_file: Path) -> dict[str, Any]:
    """One member's fine-tuning into ``run`` (resumed from its ``last.ckpt`` if there)."""
    from ltau_md.core.errorlog import ErrorLog
    from ltau_md.integrations.nequip import toy
    from ltau_md.integrations.nequip.finetune import derive_config, from_checkpoint, read_config

    config = derive_config(read_config(cfg.nequip_config), from_checkpoint(model),
                           max_epochs=cfg.finetune.epochs, lr=cfg.finetune.lr,
                           train_file=train_file, val_file=cfg.validation)
    config_path = toy.write_config(config, run.with_name(f"{run.name}.yaml"))
    overrides = [f"++ckpt_path={run / 'last.ckpt'}"] if (run / "last.ckpt").exists() else []
    cmd, env = toy.nequip_train_command(config_path, run, overrides, threads=1)
    log = run.with_name(f"{run.name}.log")
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                              preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    if proc.returncode != 0:
        raise LTAUError(f"nequip-train (fine-tuning) failed with exit {proc.returncode}; see "
                        f"{log}")
    epochs = ErrorLog.open(run / "ltau_log").epochs(0)
    if len(epochs) < cfg.finetune.epochs:
        raise LTAUError(f"fine-tuning logged {len(epochs)} of {cfg.finetune.epochs} epochs; "
                        f"see {log}")
    return {"from": str(model), "checkpoint": str(run / "last.ckpt"), "epochs": len(epochs),
            "wall_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------- refit
def refit(cfg: LearnConfig, it_dir: Path) -> dict[str, Any]:
    """A new estimator (``ITER_k/estimator``) from the fine-tuning run's error log and the
    fine-tuned model, its in-domain alarm statistics on the held-out validation frames. An
    ensemble-driven loop has no estimator: its next threshold comes from the fine-tuned
    members at the next exploration (:func:`trust_levels`)."""
    out = it_dir / "refit"
    if cfg.ensemble:
        result: dict[str, Any] = {"estimator": None}
    else:
        from ltau_md.integrations.nequip import fit_from_runs

        run = member_run(it_dir, 0)
        est_dir = it_dir / "estimator"
        est = fit_from_runs([run], run / "last.ckpt", est_dir, validation=str(cfg.validation),
                            progress=False, overwrite=True)
        result = {"estimator": str(est_dir), "n_train": int(est.n_train_),
                  "alarm_statistics": sorted(est.alarm_statistics_)}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RESULT, result)
    return result


def force_mae(model: Path, frames: list[Atoms]) -> float:
    """Mean |F_ref - F_model| per atom (eV/A) of ``model`` on labelled ``frames``."""
    from ltau_md.core.model import evaluate_structures
    from ltau_md.integrations.nequip import NequIPFeatureModel

    outs = evaluate_structures(NequIPFeatureModel.from_file(model), frames)
    err = [np.linalg.norm(a.get_forces() - o.forces, axis=1) for a, o in zip(frames, outs,
                                                                             strict=True)]
    return float(np.concatenate(err).mean())

