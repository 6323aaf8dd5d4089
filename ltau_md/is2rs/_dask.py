"""dask.distributed for the IS2RS fan-outs (reference generation, campaigns): a LocalCluster
of single-threaded worker processes, or an existing scheduler by address (e.g. dask-jobqueue)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..exceptions import DataError


@contextlib.contextmanager
def dask_client(n_workers: int, scheduler: str | Any | None = None) -> Iterator[Any]:
    """Yield a ``distributed.Client``; close what was opened here on exit.

    ``scheduler`` may be an address (``"tcp://host:8786"``) or a ready ``Client`` (left open);
    otherwise a ``LocalCluster(n_workers, threads_per_worker=1)`` is started. Its workers get
    OMP/MKL/OpenBLAS threads = 1 (dask's ``distributed.nanny.pre-spawn-environ`` default).
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
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=40,
    )
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def map_unordered(fn: Callable[..., Any], items: Iterable[Any], *args: Any, n_workers: int,
                  scheduler: str | Any | None = None
                  ) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Run ``fn(item, *args)`` for every item on a dask cluster (see :func:`dask_client`) and
    yield ``(item, result, None)`` or ``(item, None, exception)`` as the tasks finish."""
    from distributed import as_completed

    with dask_client(n_workers, scheduler) as client:
        futures = {client.submit(fn, item, *args, pure=False): item for item in items}
        for fut in as_completed(futures):
            try:
                out: tuple[Any, Any, BaseException | None] = (futures[fut], fut.result(), None)
            except Exception as exc:  # the task raised, its worker died, it was cancelled
                out = (futures[fut], None, exc)
            fut.release()
            yield out
