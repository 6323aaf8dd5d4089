"""dask.distributed for the workflows' fan-outs (IS2RS reference generation and campaigns,
the active-learning exploration): a LocalCluster of worker processes, or an existing
scheduler by address (e.g. dask-jobqueue).

Faults never pass silently: :func:`map_unordered` yields the exception of a task whose result
could not be fetched, and :func:`is_lost` tells a distributed failure (cancelled future,
killed worker, closed connection, lost scheduler: the work is *not done* and is retried by a
rerun) from anything else."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ltau_md.core.exceptions import DataError, LTAUError

MAIN_GUARD_HELP = (
    "dask starts LocalCluster workers with the 'spawn' method, which re-imports the main "
    "script in every worker process; a script that starts a campaign (or any LocalCluster) "
    "at module level must do so under `if __name__ == \"__main__\":` (or use n_workers=0, or "
    "a scheduler address)"
)


WORKER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
}
"""dask config of the LocalCluster workers started here: no statistical profiler (it samples
every task thread's stack every 10 ms, for a dashboard we do not start) and no GIL monitor."""


class ClusterStartError(LTAUError):
    """A dask LocalCluster could not start its workers (the message says why and what to do)."""


class NoWorkersError(ConnectionError):
    """The cluster had no workers for longer than the caller would wait (``give_up_after``):
    the remaining tasks are not done (a distributed failure, :func:`is_lost`)."""


#: seconds without any worker before :func:`map_unordered` says so (and again every as long)
NO_WORKERS_NOTE_S = 60.0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _distributed_failure_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [
        asyncio.CancelledError, concurrent.futures.CancelledError, ConnectionError, TimeoutError,
    ]
    with contextlib.suppress(ImportError):
        from distributed.client import FutureCancelledError

        types.append(FutureCancelledError)
    with contextlib.suppress(ImportError):
        from distributed.scheduler import KilledWorker

        types.append(KilledWorker)
    with contextlib.suppress(ImportError):
        from distributed.comm.core import CommClosedError

        types.append(CommClosedError)
    return tuple(types)


def is_lost(exc: BaseException) -> bool:
    """True for a distributed failure (the task's work was lost, not done): a cancelled
    future, a worker killed while running it (KilledWorker), a closed connection or a lost
    scheduler. False for an exception raised by the task's own code."""
    return isinstance(exc, _distributed_failure_types())


def _in_spawned_main_import() -> bool:
    """True while a spawned child process re-imports the parent's main script."""
    main = sys.modules.get("__main__")
    return getattr(main, "__name__", None) == "__mp_main__"


@contextlib.contextmanager
def dask_client(n_workers: int, scheduler: str | Any | None = None,
                threads_per_worker: int = 1) -> Iterator[Any]:
    """Yield a ``distributed.Client``; close what was opened here on exit.

    ``scheduler`` may be an address (``"tcp://host:8786"``) or a ready ``Client`` (left open);
    otherwise a ``LocalCluster(n_workers, threads_per_worker)`` of processes is started. Its
    workers get OMP/MKL/OpenBLAS threads = 1 (dask's ``distributed.nanny.pre-spawn-environ``
    default) and :data:`WORKER_CONFIG`. Raises :class:`ClusterStartError` with the fix when
    the workers cannot start, e.g. "Nanny failed to start" from a script without an
    ``if __name__ == "__main__":`` guard (detected in the worker that re-imports the
    script, explained in the parent).
    """
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler is not None:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    if n_workers < 1:
        raise DataError(f"n_workers must be >= 1 for a LocalCluster (0 = serial), got {n_workers}")
    if _in_spawned_main_import():
        raise ClusterStartError(
            "a LocalCluster was started while a worker process was importing the main "
            f"script: {MAIN_GUARD_HELP}"
        )
    import dask

    try:
        with dask.config.set(WORKER_CONFIG):
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                dashboard_address=None,
                silence_logs=40,
            )
    except Exception as exc:
        raise ClusterStartError(
            f"dask LocalCluster workers failed to start ({type(exc).__name__}: {exc}). If this "
            f"runs from a script: {MAIN_GUARD_HELP}"
        ) from exc
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def map_unordered(fn: Callable[..., Any], items: Iterable[Any], *args: Any, n_workers: int,
                  scheduler: str | Any | None = None, threads_per_worker: int = 1,
                  warmup: Callable[[], Any] | None = None,
                  give_up_after: float | None = None,
                  note_every: float | None = None,
                  notify: Callable[[str], None] = _stderr, poll: float = 1.0,
                  ) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Run ``fn(item, *args)`` for every item on a dask cluster (see :func:`dask_client`) and
    yield ``(item, result, None)`` or ``(item, None, exception)`` as the tasks finish.

    An exception is either the task's own (``fn`` raised) or a distributed failure
    (:func:`is_lost`); after the client lost its scheduler every remaining item is yielded
    with the failure, so the caller always hears about every item. ``warmup`` (picklable, no
    arguments) runs once on every worker before the first task arrives (e.g. build the model).

    A cluster left without workers (all killed, or none joined yet) is never waited on in
    silence: after ``note_every`` seconds (s; default :data:`NO_WORKERS_NOTE_S`) with no
    worker, and again every as long,
    ``notify`` gets "no workers for N s; waiting ..." (default: a line on stderr); with
    ``give_up_after`` (s), the remaining items are yielded with :class:`NoWorkersError` once
    the cluster has had no worker that long. ``poll``: seconds between checks of the
    workers."""
    from distributed import as_completed

    with dask_client(n_workers, scheduler, threads_per_worker) as client:
        if warmup is not None:
            with contextlib.suppress(Exception):  # a failed warm-up shows up in the tasks
                client.run(warmup)
        futures = {client.submit(fn, item, *args, pure=False): item for item in items}
        pending = dict(futures)
        try:
            done = as_completed(futures)
            idle = _NoWorkers(client, give_up_after, note_every or NO_WORKERS_NOTE_S, notify)
            checked = time.monotonic()
            while not done.is_empty():
                ready = done.next_batch(block=False)
                if not ready:
                    if time.monotonic() - checked >= poll:
                        idle.check()
                        checked = time.monotonic()
                    time.sleep(0.02)
                    continue
                idle.reset()
                for fut in ready:
                    try:
                        out: tuple[Any, Any, BaseException | None] = (futures[fut],
                                                                      fut.result(), None)
                    except Exception as exc:  # the task raised, its worker died, cancelled
                        out = (futures[fut], None, exc)
                    pending.pop(fut, None)
                    fut.release()
                    yield out
        except Exception as exc:  # the client itself failed (scheduler gone): report the rest
            if not is_lost(exc):
                raise
            for fut, item in list(pending.items()):
                pending.pop(fut)
                fut.release()
                yield item, None, exc


class _NoWorkers:
    """How long the cluster of ``client`` has had no worker; notes it, and gives up."""

    def __init__(self, client: Any, give_up_after: float | None, note_every: float,
                 notify: Callable[[str], None]) -> None:
        self.client, self.give_up_after = client, give_up_after
        self.note_every, self.notify = note_every, notify
        self.since: float | None = None
        self.noted = 0

    def reset(self) -> None:
        self.since, self.noted = None, 0

    def check(self) -> None:
        if self.client.scheduler_info().get("workers"):
            if self.noted:
                self.notify("workers are back; going on")
            self.reset()
            return
        now = time.monotonic()
        if self.since is None:
            self.since = now
        waited = now - self.since
        if self.give_up_after is not None and waited >= self.give_up_after:
            raise NoWorkersError(f"the cluster had no workers for {waited:.0f} s "
                                 f"(give_up_after={self.give_up_after:g} s)")
        if waited >= (self.noted + 1) * self.note_every:
            self.noted += 1
            limit = (f"giving up after {self.give_up_after:g} s" if self.give_up_after
                     is not None else "waiting until workers join (--give-up-after S to stop "
                     "instead)")
            self.notify(f"no workers for {waited:.0f} s; {limit}")
