""":class:`UQMonitor`: observes each step of an ASE optimizer or MD run, writes the per-step
records, frames and summaries into its ``out_dir``, and applies its :class:`Threshold` policies
(stop, resample with optional rewind, warn) and the safety stops."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ltau_md.core._param_validation import Interval, StrOptions, validate_params
from ltau_md.core.calculator import PER_ATOM_KEYS
from ltau_md.core.exceptions import InvalidParameterError, LTAUError, OutputExistsError, Terminated
from ltau_md.core.files import to_json_safe, write_json_atomic
from ltau_md.core.metrics import (
    combined_components,
    combined_statistics,
    frame_statistic,
    is_combined,
    parse_stat_key,
    prepare_reference,
    selection_mask,
    stat_key,
    statistic_signals,
)
from ltau_md.core.observers._event import (
    INTERRUPTED,
    NON_FINITE,
    TERMINATED,
    WRITE_FAILED,
    Event,
)
from ltau_md.core.observers._threshold import ACTIONS, Threshold, size_ratio
from ltau_md.core.structures import free_atoms, thermalize

__all__ = ["MONITOR_FILES", "STATUSES", "UQMonitor"]


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the body runs (main thread): a Ctrl-C or SIGTERM
    arriving meanwhile is handed to its handler right after the body (KeyboardInterrupt /
    Terminated), so a step is never counted without its line on disk or half written.

    The Python handlers are swapped for a recorder (a signal mask would not do: a
    process-directed signal goes to any thread that does not block it)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is not None:  # None: installed outside Python, cannot be restored
            previous[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in pending:
            handler = previous[sig]
            if callable(handler):
                handler(sig, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(sig)


MONITOR_FILES = ("steps.jsonl", "trajectory.extxyz", "candidates.extxyz", "labelled.extxyz",
                 "events.json", "summary.json")
"""The files a :class:`UQMonitor` writes into its ``out_dir``."""


STATUSES = ("running", "completed", "halted", "non_finite", "interrupted", "terminated",
            "failed")
"""Values of ``summary()["status"]``: still running (the monitor is not closed; a reader, or
the files a crash leaves, see this); ran to the end (or converged); halted by a stop policy,
``max_force`` or exhausted rewinds; stopped for non-finite values; interrupted (Ctrl-C);
terminated (SIGTERM); failed (writing its files failed: disk full, read-only)."""


class UQMonitor:
    """Track per-step LTAU uncertainty of a dynamics object and apply threshold policies.

    dyn: an ASE Optimizer or MolecularDynamics whose atoms use an LTAUCalculator.
    policies: :class:`Threshold` list. out_dir: where steps.jsonl, trajectory.extxyz,
    candidates.extxyz, labelled.extxyz, events.json and summary.json go (None = keep in memory
    only); other files there are left alone. overwrite: an out_dir that already holds any of
    those files (an earlier run) raises OutputExistsError unless overwrite=True, which removes
    them first, so two runs never share a file.
    write_trajectory: also write frames (every observed step). aggregate: "max" or "mean"
    over atoms for the tracked statistics. oracle: ASE calculator labelling resampled frames.
    rewind: for MD, a resample restores the last trusted snapshot (all policies quiet) and
    redraws velocities at ``temperature_K``; after ``max_retries`` rewinds the run stops.
    max_force: stop when any |F| exceeds it (eV/A). free_mask: atoms counted in aggregates
    and in statistics without a ``select`` (default: atoms not fixed by FixAtoms).
    watch: extra statistics to track, as keys "SIGNAL:ON[@tags=T]" (e.g. "novelty:max"),
    beside those of the policies; every watched statistic goes into each steps.jsonl line
    (under its key) and into ``summary()["signals"]`` (initial, max and its step, mean, final).
    Policies with an ``alarm_rate`` are resolved against ``atoms.calc.estimator`` here when the
    atoms already have their calculator (so a missing in-domain statistic fails before any file
    is written), else at the first observed step; ``summary()["policies"]`` records the numeric
    thresholds.
    """

    _parameter_constraints: dict = {
        "write_trajectory": ["boolean"],
        "aggregate": [StrOptions({"max", "mean"})],
        "rewind": ["boolean"],
        "temperature_K": [Interval(Real, 0, None, closed="neither"), None],
        "max_retries": [Interval(Integral, 0, None, closed="left")],
        "max_force": [Interval(Real, 0, None, closed="neither"), None],
        "label": [str],
        "seed": [Interval(Integral, 0, None, closed="left")],
        "overwrite": ["boolean"],
    }

    def __init__(
        self,
        dyn: Any,
        policies: Sequence[Threshold] = (),
        *,
        out_dir: str | os.PathLike | None = None,
        write_trajectory: bool = True,
        aggregate: Literal["max", "mean"] = "max",
        oracle: Any = None,
        rewind: bool = False,
        temperature_K: float | None = None,
        max_retries: int = 3,
        max_force: float | None = None,
        free_mask: np.ndarray | None = None,
        label: str = "",
        seed: int = 0,
        overwrite: bool = False,
        watch: Sequence[str] = (),
    ):
        validate_params(self._parameter_constraints, {
            "write_trajectory": write_trajectory, "aggregate": aggregate, "rewind": rewind,
            "temperature_K": temperature_K, "max_retries": max_retries, "max_force": max_force,
            "label": label, "seed": seed, "overwrite": overwrite}, owner="UQMonitor")
        self.dyn = dyn
        self.atoms: Atoms = getattr(dyn.atoms, "atoms", dyn.atoms)
        self.policies = list(policies)
        self.aggregate = aggregate
        self.oracle = oracle
        self.rewind = rewind
        self.temperature_K = temperature_K
        self.max_retries = max_retries
        self.max_force = max_force
        self.label = label
        self.rng = np.random.default_rng(seed)
        if free_mask is None:
            free_mask = free_atoms(self.atoms)
        mask = np.asarray(free_mask)
        boolean = mask.dtype == bool or (mask.size > 0 and np.isin(mask, (0, 1)).all())
        if mask.shape != (len(self.atoms),) or not boolean:
            raise InvalidParameterError(
                f"UQMonitor: free_mask must be a boolean array of shape ({len(self.atoms)},) "
                f"(one entry per atom); got shape {mask.shape} dtype {mask.dtype}")
        self.free_mask = mask.astype(bool)
        if self.rewind and self.temperature_K is None:
            raise InvalidParameterError(
                "UQMonitor: rewind=True needs temperature_K to redraw velocities")
        # watched statistics: key -> (signal, on, select); the policies' first, then `watch`
        self._watched: dict[str, tuple[str, str, Any]] = {}
        for pol in self.policies:
            self._watched.setdefault(pol.key, (pol.signal, pol.on, pol.select))
        for key in watch:
            self._watched.setdefault(stat_key(*parse_stat_key(key)), parse_stat_key(key))
        self.signal_values: dict[str, list[float]] = {k: [] for k in self._watched}
        # combined statistics' in-domain references, prepared for the steps
        self._references: dict[str, tuple[dict, dict]] = {}
        if self.atoms.calc is not None:
            for pol in self.policies:
                pol.resolve(self.atoms.calc, self._n_selected(self.atoms, pol.select))
        self.values: list[float] = []
        self.steps: list[int] = []
        self.records: list[dict[str, Any]] = []  # one per observed step, as in steps.jsonl
        self.events: list[Event] = []
        self.stopped: Event | None = None
        self.n_retries = 0
        self.labelled: list[Atoms] = []
        self._trusted: tuple[int, np.ndarray] | None = None
        self.rewinds: list[tuple[int, int]] = []  # (step fired, step rewound to)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._files: dict[str, io.TextIOBase] = {}
        self._closed = False
        self.write_trajectory = write_trajectory and self.out_dir is not None
        if self.out_dir is not None:
            self._claim_out_dir(overwrite)

    def _claim_out_dir(self, overwrite: bool) -> None:
        """Create out_dir; refuse (or, with ``overwrite``, remove) an earlier run's files."""
        assert self.out_dir is not None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        old = [self.out_dir / n for n in MONITOR_FILES if (self.out_dir / n).exists()]
        if old and not overwrite:
            raise OutputExistsError(
                f"{self.out_dir} already holds a monitored run ({', '.join(p.name for p in old)}"
                "); pass overwrite=True to replace those files, or choose another out_dir")
        for p in old:
            p.unlink()

    # ------------------------------------------------------------------ files
    def _fh(self, name: str) -> io.TextIOBase:
        if name not in self._files:
            assert self.out_dir is not None
            self._files[name] = open(self.out_dir / name, "a")  # noqa: SIM115
        return self._files[name]

    def _write_frame(self, name: str, atoms: Atoms) -> None:
        """Append one extxyz frame, formatted in memory and written in one call + flush."""
        from ase.io import write

        buf = io.StringIO()
        write(buf, atoms, format="extxyz")
        fh = self._fh(name)
        fh.write(buf.getvalue())
        fh.flush()

    def _write_line(self, record: dict) -> None:
        fh = self._fh("steps.jsonl")
        fh.write(json.dumps(record) + "\n")
        fh.flush()

    def _write_events(self) -> None:
        if self.out_dir is not None:
            write_json_atomic(self.out_dir / "events.json", [asdict(e) for e in self.events])

    def _write_summary(self) -> None:
        if self.out_dir is not None:
            write_json_atomic(self.out_dir / "summary.json", self.summary())

    def close(self) -> None:
        """Close the open files and rewrite events.json and summary.json (both are already
        current after every observed step). From then on the status is final ("completed"
        unless a stop event says otherwise); before, it is "running". Safe twice."""
        self._closed = True
        files, self._files = self._files, {}
        for fh in files.values():
            fh.close()
        if self.out_dir is not None:
            self._write_events()
            self._write_summary()

    def __enter__(self) -> UQMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ observing
    @property
    def step(self) -> int:
        return int(getattr(self.dyn, "nsteps", len(self.values)))

    def _time_fs(self) -> float | None:
        dt = getattr(self.dyn, "dt", None)
        if dt is None:
            return None
        from ase import units

        return float(self.step * dt / units.fs)

    def _selection(self, atoms: Atoms, select: Any) -> np.ndarray | None:
        """The atoms a statistic over ``select`` is taken over (None: all)."""
        if select is None:
            return self.free_mask if self.free_mask.any() else None
        return selection_mask(select, len(atoms), atoms.get_tags())

    def _n_selected(self, atoms: Atoms, select: Any) -> int:
        mask = self._selection(atoms, select)
        return len(atoms) if mask is None else int(np.count_nonzero(mask))

    def _statistics(self, atoms: Atoms, res: dict) -> dict[str, float]:
        """This step's value of every watched statistic (NaN where the calculator does not
        return a watched, policy-free signal)."""
        out = {}
        needed = {p.signal for p in self.policies}
        for key, (signal, on, select) in self._watched.items():
            absent = sorted(statistic_signals(signal) - set(res))
            if absent:
                if signal in needed:
                    raise LTAUError(f"a policy watches the per-atom {absent[0]!r}, which the "
                                    f"calculator does not return (it has {sorted(res)})")
                out[key] = float("nan")
                continue
            mask = self._selection(atoms, select)
            if is_combined(signal):
                out[key] = self._combined(atoms, res, key, signal, on, mask,
                                          required=signal in needed)
            else:
                out[key] = frame_statistic(np.asarray(res[signal], dtype=float), on, mask)
        return out

    def _combined(self, atoms: Atoms, res: dict, key: str, signal: str, on: str,
                  mask: np.ndarray | None, required: bool) -> float:
        """A combined statistic's value at this step, against the in-domain references the
        calculator's estimator holds for ``key``, adjusted to the structure's size."""
        stats = getattr(getattr(atoms.calc, "estimator", None), "alarm_statistics_", None) or {}
        entry = stats.get(key)
        if entry is None or "reference" not in entry:
            if required:
                raise LTAUError(f"the combined statistic {key!r} needs its in-domain references "
                                "in the calculator's estimator (fit them with `ltau-md "
                                "calibrate` / `ltau-md fit --validation`)")
            return float("nan")
        n = len(atoms) if mask is None else int(np.count_nonzero(mask))
        if n == 0:
            return float("nan")
        ratio = size_ratio(entry, n)
        per_atom = {b: np.asarray(res[b], dtype=float) for b, _ in combined_components(signal)}
        cached = self._references.get(key)
        if cached is None or cached[0] is not entry:  # prepared once per estimator entry
            cached = self._references[key] = (entry, prepare_reference(entry["reference"]))
        return float(combined_statistics(signal, on, per_atom, np.array([0, len(atoms)]),
                                         cached[1], atoms.numbers, mask,
                                         size_ratio=ratio)[0])

    def __call__(self) -> None:
        """Observe the current step (ASE calls this after each step it is attached for)."""
        atoms = self.atoms
        calc = atoms.calc
        res = calc.results if calc is not None else {}
        if "uncertainty" not in res:
            atoms.get_forces()
            res = atoms.calc.results
        for pol in self.policies:
            pol.resolve(atoms.calc, self._n_selected(atoms, pol.select))
        stats = self._statistics(atoms, res)
        unc = np.asarray(res.get("uncertainty", np.full(len(atoms), np.nan)), dtype=float)
        sel = unc[self.free_mask] if self.free_mask.any() else unc
        u_max = float(np.max(sel)) if sel.size else float("nan")
        u_mean = float(np.mean(sel)) if sel.size else float("nan")
        value = u_max if self.aggregate == "max" else u_mean
        step = self.step
        forces = np.asarray(res.get("forces", np.full((len(atoms), 3), np.nan)))
        energy = res.get("energy", float("nan"))
        # max |F| (eV/A) as the optimizer sees it: constrained forces, from the cached results
        f_seen = atoms.get_forces() if "forces" in res else forces
        fmax = float(np.sqrt((f_seen**2).sum(axis=1)).max()) if len(atoms) else 0.0
        perr = np.asarray(res.get("predicted_error", np.full(len(atoms), np.nan)), dtype=float)
        perr_sel = perr[self.free_mask] if self.free_mask.any() else perr
        record: dict[str, Any] = {
            "step": step, "energy": _f(energy), "fmax": _f(fmax),
            stat_key("uncertainty", "max"): _f(u_max),
            stat_key("uncertainty", "mean"): _f(u_mean),
            stat_key("predicted_error", "max"): _f(float(np.max(perr_sel)) if perr_sel.size
                                                  else np.nan),
        }
        if (t := self._time_fs()) is not None:
            record["time_fs"] = t
            record["temperature_K"] = _f(float(atoms.get_temperature()))
        for key, v in stats.items():
            record[key] = _f(v)
        if self.label:
            record["label"] = self.label
        fired: list[Event] = []
        callbacks: list[tuple[Callable[[Event, UQMonitor], None], Event]] = []
        finite = (res.get("finite", True) and np.isfinite(atoms.positions).all()
                  and np.isfinite(forces).all() and np.isfinite(energy))
        if not finite:
            cause = res.get("nonfinite_cause")
            fired.append(Event(step, "stop", f"{NON_FINITE}: {cause}" if cause else NON_FINITE,
                               value, None, t))
        elif self.max_force is not None and fmax > self.max_force:
            fired.append(Event(step, "stop", f"exploding: max |F| {fmax:.3g} eV/A > "
                               f"{self.max_force:g}", fmax, self.max_force, t))
        else:
            quiet = True
            for pol in self.policies:
                v, thr = stats[pol.key], float(pol.threshold)
                if v > thr:
                    quiet = False
                if pol.update(v):
                    sel = "" if pol.select is None else f" ({pol.key.partition('@')[2]})"
                    rate = "" if pol.alarm_rate is None else f" (alarm rate {pol.alarm_rate:g})"
                    ev = Event(step, pol.action, f"{pol.on} {pol.signal}{sel} {v:.4g} > "
                               f"{thr:.4g}{rate} for {pol.patience} step(s)", v, thr, t)
                    fired.append(ev)
                    if pol.callback is not None:
                        callbacks.append((pol.callback, ev))
            if quiet or self._trusted is None:  # the start is the fallback snapshot
                self._trusted = (step, atoms.positions.copy())
        record["events"] = [e.action for e in fired]
        with _signals_deferred():  # the step is counted and on disk, or neither
            self.values.append(value)
            self.steps.append(step)
            for key, v in stats.items():
                self.signal_values[key].append(v)
            self.records.append(record)
            if self.out_dir is not None:
                self._write_line(record)
                if self.write_trajectory:
                    self._write_frame("trajectory.extxyz", self._frame(atoms, res, step))
                self._write_summary()  # again below once this step's events are processed
        for cb, ev in callbacks:  # after the step is on disk, so a raising callback loses nothing
            cb(ev, self)
        for ev in fired:
            self.events.append(ev)
            if ev.action == "resample":
                self._resample(atoms, res, step, ev)
            elif ev.action == "stop":
                self._stop(ev)
            if self.stopped:
                break
        if fired or len(self.records) == 1:  # events.json exists from the first step on
            self._write_events()
        if fired:
            self._write_summary()

    def _frame(self, atoms: Atoms, res: dict, step: int) -> Atoms:
        """Copy of ``atoms`` with energy/forces and per-atom LTAU arrays attached."""
        frame = atoms.copy()
        frame.calc = None
        for key in PER_ATOM_KEYS:
            if key in res:
                frame.arrays[key] = np.asarray(res[key], dtype=np.float64)
        frame.info["step"] = step
        if self.label:
            frame.info["label"] = self.label
        frame.calc = SinglePointCalculator(frame, energy=res.get("energy"),
                                           forces=res.get("forces"))
        return frame

    def _stop(self, ev: Event) -> None:
        self.stopped = ev
        self.dyn.max_steps = self.dyn.nsteps  # ends Dynamics.irun's loop after this step

    def _resample(self, atoms: Atoms, res: dict, step: int, ev: Event) -> None:
        frame = self._frame(atoms, res, step)
        frame.info["resample_reason"] = ev.reason
        if self.out_dir is not None:
            self._write_frame("candidates.extxyz", frame)
        if self.oracle is not None:
            lab = atoms.copy()
            lab.calc = self.oracle
            e = lab.get_potential_energy()
            f = lab.get_forces()
            st = lab.get_stress(voigt=True) if lab.pbc.all() else None
            lab.calc = SinglePointCalculator(lab, energy=e, forces=f, stress=st)
            lab.info["step"] = step
            if self.out_dir is not None:
                self._write_frame("labelled.extxyz", lab)
            self.labelled.append(lab)
        if self.rewind and self._trusted is not None:
            if self.n_retries >= self.max_retries:
                self._stop(Event(step, "stop", f"still untrusted after {self.max_retries} "
                                 "rewinds", ev.value, ev.threshold, ev.time_fs))
                self.events.append(self.stopped)
                return
            self.n_retries += 1
            self.rewinds.append((step, self._trusted[0]))
            atoms.positions = self._trusted[1]
            thermalize(atoms, self.temperature_K, self.rng)
            for pol in self.policies:
                pol.reset()

    # ------------------------------------------------------------------ running and results
    def run(self, steps: int, **kwargs: Any) -> bool:
        """Run the attached dynamics (``dyn.run(steps)``) and close the files afterwards, also
        on Ctrl-C (re-raised after the files are closed). Returns dyn.run's result."""
        try:
            return bool(self.dyn.run(steps=steps, **kwargs))
        except (KeyboardInterrupt, Terminated) as exc:
            self._end(TERMINATED if isinstance(exc, Terminated) else INTERRUPTED)
            raise
        except OSError as exc:  # a full disk or a read-only directory: said, then raised
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            self._end(f"{WRITE_FAILED}{where}: {exc.strerror or exc}")
            try:
                self.close()  # best effort: the disk may still be full
            except OSError:
                pass
            raise
        finally:
            if not self._closed:
                self.close()

    def _end(self, reason: str) -> None:
        """Record the stop event of a run that ends on ``reason`` (not a policy's)."""
        ev = Event(self.step, "stop", reason, self.values[-1] if self.values else float("nan"))
        self.events.append(ev)
        self.stopped = self.stopped or ev

    @property
    def status(self) -> str:
        """One of :data:`STATUSES`, from the stop event (if any)."""
        if self.stopped is None:
            return "completed" if self._closed else "running"
        reason = self.stopped.reason
        if reason.startswith(NON_FINITE):
            return "non_finite"
        if reason.startswith(WRITE_FAILED):
            return "failed"
        return {INTERRUPTED: "interrupted", TERMINATED: "terminated"}.get(reason, "halted")

    def summary(self) -> dict[str, Any]:
        """Initial, max (with its step), mean and final aggregate uncertainty, and events."""
        v = np.asarray(self.values, dtype=float)
        out: dict[str, Any] = {"label": self.label, "n_observed": len(v),
                               "aggregate": self.aggregate}
        if len(v):
            finite = np.where(np.isfinite(v), v, -np.inf)
            i = int(np.argmax(finite))
            mean = float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else np.nan
            out.update(initial=_f(v[0]), max=_f(v[i]), max_step=self.steps[i],
                       mean=_f(mean), final=_f(v[-1]), final_step=self.steps[-1])
        out["signals"] = {}
        for key, vals in self.signal_values.items():
            sv = np.asarray(vals, dtype=float)
            if not len(sv):
                continue
            ok = ~np.isnan(sv)
            j = int(np.argmax(np.where(ok, sv, -np.inf))) if ok.any() else 0
            out["signals"][key] = {
                "initial": _f(sv[0]), "max": _f(sv[j]) if ok.any() else None,
                "max_step": self.steps[j] if ok.any() else None,
                "mean": _f(float(np.mean(sv[ok]))) if ok.any() else None,
                "final": _f(sv[-1])}
        out["policies"] = [to_json_safe(p.describe()) for p in self.policies]
        out["stopped"] = asdict(self.stopped) if self.stopped else None
        out["status"] = self.status
        out["n_events"] = {a: sum(e.action == a for e in self.events)
                           for a in ACTIONS}
        out["n_retries"] = self.n_retries
        return out


def _f(x: float) -> float | None:
    """JSON-safe float (None for NaN/inf)."""
    return to_json_safe(float(x))
