"""The loop: iterations of explore -> select -> label -> fine-tune -> refit in ``ITER_k/``
folders, a state file per iteration, resumable after a kill at any point, and a report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ltau_md.core.exceptions import DataError
from ltau_md.core.files import acquire_lock, write_json_atomic
from ltau_md.core.structures import read_structures
from ltau_md.workflows.learn import _stages as S
from ltau_md.workflows.learn._config import LearnConfig, load_config, with_defaults

__all__ = ["STAGES", "iteration_dir", "run_learn"]

#: the stages of an iteration, in order (each writes ``ITER_k/<stage>/result.json`` when done)
STAGES = ("explore", "select", "label", "finetune", "refit")
#: the file holding a loop directory's settings (a rerun must match them)
_SETTINGS = "learn_config.json"


def iteration_dir(out: Path, k: int) -> Path:
    return out / f"ITER_{k:03d}"


def _claim(cfg: LearnConfig) -> Path:
    """Create the loop directory, or accept it when it is this loop's (same settings); a
    foreign or non-empty directory, or one of another loop, is refused."""
    out = cfg.out_dir
    settings = cfg.to_dict()
    if out.exists():
        mine = out / _SETTINGS
        if not mine.exists():
            if any(out.iterdir()):
                raise DataError(f"{out} exists and is not a learn loop directory: give a new "
                                "out_dir (the loop writes nothing outside its own directory)")
        elif (old := with_defaults(S.read_json(mine))) != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise DataError(f"{out} holds a loop with other settings ({', '.join(diff)}): "
                            "resume it with its own config, or give a new out_dir")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / _SETTINGS).exists():
        write_json_atomic(out / _SETTINGS, settings)
    return out


def _state(it_dir: Path, **kw: Any) -> None:
    """``ITER_k/state.json``: the stages done so far and the iteration's outcome."""
    done = [s for s in STAGES if (it_dir / s / S.RESULT).exists()]
    write_json_atomic(it_dir / "state.json", {"stages_done": done, **kw})


def run_learn(config: LearnConfig | str | os.PathLike, *, n_workers: int = 0,
              scheduler: Any = None) -> dict[str, Any]:
    """Run (or continue) the loop of ``config`` (a :class:`LearnConfig` or a YAML path);
    exploration runs on ``n_workers`` dask LocalCluster workers or an existing ``scheduler``
    (0 and None: in this process). Returns the report, also written to
    ``OUT/report.json`` with the plot ``OUT/learn.png``.

    How LTAU is refitted: the fine-tuning run logs the errors of its own epochs only (the
    model starts trained), so each new estimator's confidence is built from those epochs, and
    its in-domain alarm statistics come from the held-out validation frames; the default
    alarm (:data:`~ltau_md.core.calibration.DEFAULT_ALARM`, of latent signals) needs no error
    log at all. An ensemble-driven loop (``ensemble`` members) fine-tunes every member and sets
    its threshold from their force deviation."""
    from ltau_md.core.calibration import default_alarm
    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.core.metrics import stat_key
    from ltau_md.workflows.learn._config import ENSEMBLE_SIGNAL

    cfg = config if isinstance(config, LearnConfig) else load_config(config)
    out = _claim(cfg)
    lock = acquire_lock(out)  # one writer: a second loop on the same directory is refused
    try:
        train = read_structures(cfg.train)
        test = read_structures(cfg.test) if cfg.test is not None else None
        # labels carry a stress when every training frame does (nequip batches alike frames)
        stress = all("stress" in (getattr(a.calc, "results", None) or {}) for a in train)
        members, estimator = list(cfg.members), cfg.estimator
        alarm = cfg.explore.alarm or (stat_key(ENSEMBLE_SIGNAL, "max") if cfg.ensemble
                                      else default_alarm(LTAUEstimator.load(estimator)))
        rows: list[dict[str, Any]] = []
        labels: list = []
        stop = None
        base_mae = _test_mae(out / "test_start.json", members[0], test)
        for k in range(cfg.iterations):
            it = iteration_dir(out, k)
            it.mkdir(exist_ok=True)
            row: dict[str, Any] = {"iteration": k, "model": str(members[0])}
            ex = _stage(it, "explore", cfg, it, members, estimator, alarm, n_workers,
                        scheduler)
            row.update(alarm=alarm, threshold=ex["threshold"], n_observed=ex["n_observed"],
                       n_alarmed=ex["n_alarmed"], alarm_share=ex["alarm_share"],
                       explore_cpu_s=ex.get("cpu_s"))
            share = ex["alarm_share"] or 0.0
            if share <= cfg.explore.alarm_rate * (1 + cfg.tolerance):
                stop = "converged"
            budget = cfg.label_budget - len(labels)
            if stop is None and budget < 1:
                stop = "label budget spent"
            if stop is not None:
                _state(it, stopped=stop)
                rows.append(row)
                break
            sel = _stage(it, "select", cfg, it, members[0], train + labels,
                         min(cfg.select.batch_size, budget))
            lab = _stage(it, "label", cfg, it, stress)
            labels = labels + S.read_frames(it / "label" / "labelled.extxyz")
            ft = _stage(it, "finetune", cfg, it, members, train + labels)
            rf = _stage(it, "refit", cfg, it)
            members = [Path(c) for c in ft["checkpoints"]]
            estimator = None if rf["estimator"] is None else Path(rf["estimator"])
            row.update(n_candidates=ex["n_candidates"], n_selected=sel["n_selected"],
                       n_labelled=lab["n_labelled"], n_failed=len(lab["failed"]),
                       labels_total=len(labels),
                       test_force_mae=_test_mae(it / "test.json", members[0], test))
            _state(it, finished=True)
            rows.append(row)
        report = {"iterations": rows, "stopped": stop or "iterations done",
                  "labels": len(labels), "test_force_mae_start": base_mae,
                  "model": str(members[0]), "members": [str(m) for m in members],
                  "estimator": None if estimator is None else str(estimator)}
        write_json_atomic(out / "report.json", report)
        _plot(rows, base_mae, out / "learn.png")
        return report
    finally:
        lock.release()


def _test_mae(path: Path, model: Path, test: list | None) -> float | None:
    """Test force MAE (eV/A) of ``model`` on ``test`` (None without test frames), computed
    once and kept in ``path``: a rerun reads it, so a resumed loop reports the same figure
    (a model's float32 forces can differ in the last digits from one evaluation to the
    next)."""
    if not test:
        return None
    if path.exists():
        stored = S.read_json(path)
        if stored.get("model") == str(model):
            return float(stored["test_force_mae"])
    mae = S.force_mae(model, test)
    write_json_atomic(path, {"model": str(model), "test_force_mae": mae})
    return mae


def _stage(it: Path, name: str, *args: Any) -> dict[str, Any]:
    """The result of the stage ``name`` (the function of :mod:`._stages` of that name, and its
    folder): read when done, else run and record the state, also when it fails or is
    interrupted (then with the stage and the cause; a rerun redoes the stage)."""
    done = it / name / S.RESULT
    if done.exists():
        return S.read_json(done)
    try:
        res = getattr(S, name)(*args)
    except BaseException as exc:
        _state(it, failed=f"{name}: {type(exc).__name__}: {exc}"[:2000])
        raise
    _state(it)
    return res


def _plot(rows: list[dict[str, Any]], base_mae: float | None, path: Path) -> None:
    """Alarm share, labels and test force MAE over the iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ltau_md.core.plots import save_figure

    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    ks = [r["iteration"] for r in rows]
    ax[0].plot(ks, [r["alarm_share"] for r in rows], "o-")
    ax[0].set(xlabel="iteration", ylabel="exploration frames alarming")
    mae = [base_mae] + [r.get("test_force_mae") for r in rows if "labels_total" in r]
    lab = [0] + [r["labels_total"] for r in rows if "labels_total" in r]
    if base_mae is not None:
        ax[1].plot(lab, mae, "o-")
    ax[1].set(xlabel="labels", ylabel="test force MAE (eV/Å)")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
