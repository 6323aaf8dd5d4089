"""Observers that judge LTAU uncertainty along ASE relaxations and MD, and act on it.

    opt = BFGS(atoms)                      # atoms.calc is an LTAUCalculator
    with UQMonitor(opt, policies=[Threshold("stop", above=0.6, patience=3)],
                   out_dir="run") as mon:
        opt.attach(mon, interval=1)
        opt.run(steps=200)                 # or mon.run(steps=200)
    mon.summary()                          # initial / max (+ step) / mean / final uncertainty

Per step the monitor reads the calculator's results (no extra model call), appends a JSON line
to ``steps.jsonl`` (with the frame statistics its policies watch, e.g. ``"novelty:max"``) and a
frame with the per-atom arrays of :data:`ltau_md.core.calculator.PER_ATOM_KEYS` (``uncertainty``,
``confidence``, ``predicted_error``, ``novelty``, ``novelty_pvalue``) to ``trajectory.extxyz``,
and applies its policies (:class:`Threshold`: a fixed threshold ``above=``, or one chosen as an
in-domain alarm rate, ``alarm_rate=``, from the estimator's in-domain statistics). A
**stop** ends the optimizer or MD at that step (its ``max_steps`` is set to the current step,
so ``run`` returns normally);
**resample** writes the configuration to ``candidates.extxyz`` (and, with an ``oracle`` ASE
calculator, its labelled copy to ``labelled.extxyz``), and for MD can rewind to the last trusted
snapshot with fresh Maxwell-Boltzmann velocities; **warn** only records. Non-finite positions,
forces or energy, and forces above ``max_force`` (an exploding run) always stop.
Each frame and line is written whole and flushed, and ``summary.json`` (every observed step)
and ``events.json`` (first step, then whenever an event fires) are rewritten atomically, so the
files are complete however the run is driven (``opt.run()``, ``mon.run()``, a ``with`` block)
or interrupted; ``close()`` (or leaving the ``with`` block) closes the open files.

Modules: ``_event`` (:class:`Event`, the safety stops' reasons), ``_threshold``
(:class:`Threshold` policies), ``_monitor`` (:class:`UQMonitor`, its files and statuses).
"""

from ltau_md.core.observers._event import (
    INTERRUPTED,
    NON_FINITE,
    TERMINATED,
    WRITE_FAILED,
    Event,
)
from ltau_md.core.observers._monitor import MONITOR_FILES, STATUSES, UQMonitor
from ltau_md.core.observers._threshold import ACTIONS, UNIT_SIGNALS, Threshold
from ltau_md.core.observers._threshold import Action as Action

__all__ = [
    "ACTIONS",
    "Event",
    "INTERRUPTED",
    "MONITOR_FILES",
    "NON_FINITE",
    "TERMINATED",
    "WRITE_FAILED",
    "STATUSES",
    "Threshold",
    "UNIT_SIGNALS",
    "UQMonitor",
]
