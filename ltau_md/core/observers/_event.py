"""What a policy or a safety check decided at a step (:class:`Event`), and the fixed reasons of
the safety stops."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Event", "INTERRUPTED", "NON_FINITE", "TERMINATED", "WRITE_FAILED"]


NON_FINITE = "non-finite positions, forces or energy"
"""Reason of the stop event for NaN/inf positions, forces or energy."""
INTERRUPTED = "interrupted"
"""Reason of the stop event recorded when :meth:`UQMonitor.run` is interrupted (Ctrl-C)."""
TERMINATED = "terminated"
"""Reason of the stop event recorded when :meth:`UQMonitor.run` ends on SIGTERM."""
WRITE_FAILED = "writing failed"
"""Reason prefix of the stop event recorded when writing a run's files fails (disk full,
read-only): followed by the path and the cause."""


@dataclass
class Event:
    """Something a policy (or a safety check) decided at ``step``."""

    step: int
    action: str
    reason: str
    value: float
    threshold: float | None = None
    time_fs: float | None = None
