"""Where dask work runs: a scheduler address, ``DASK_SCHEDULER_ADDRESS``, or a LocalCluster."""

from __future__ import annotations

import contextlib
import os

#: Seconds to wait for a scheduler before giving up with a clear error.
CONNECT_TIMEOUT = 10

#: glibc malloc settings of the LocalCluster's worker processes. distributed starts workers
#: with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap threshold at 128 KiB:
#: every chunk-sized buffer (a chunk read, its decode, the copy into the dask chunk) is then a
#: fresh mmap that page-faults in, and a worker reads a 16 MiB chunk of the project's Zarr
#: data 2-2.5x slower (best of 40: ~22 ms against ~9-10 ms on this 2-core VM). Buffers under
#: 64 MiB come from the heap instead, and up to 128 MiB of freed heap is kept for reuse.
WORKER_MALLOC_ENVIRON = {
    "MALLOC_MMAP_THRESHOLD_": 64 * 2**20,
    "MALLOC_TRIM_THRESHOLD_": 128 * 2**20,
}

#: How often the LocalCluster's workers sample their threads' stacks for distributed's
#: profiler (its default: every 10 ms, from the worker's event loop). On a 2-worker
#: LocalCluster fitting a 10M-row store, each worker's event loop used 0.133 s of CPU per
#: 1.5 s pass at 10 ms and 0.095 s at 100 ms, the same as with the profiler off, on the
#: cores the chunks need. The dashboard's profile is coarser, not gone.
WORKER_PROFILE_INTERVAL = "100ms"

#: distributed's settings for the LocalCluster (its scheduler and workers), besides the
#: profiler's. Its periodic callbacks run on the event loops that share the cores with the
#: chunks: the event-loop health tick (default every 20 ms), the system monitor (500 ms:
#: CPU, memory, disk and network counters for the dashboard) and each worker's memory
#: monitor (100 ms). Idle, a 2-worker LocalCluster's scheduler loop used 52 ms of CPU per
#: second and each worker's 22 ms with the defaults, 12 and 8-9 ms with these; fitting a
#: 10M-row store, the scheduler's loop went from 0.15-0.18 to 0.10-0.12 s per iteration and
#: the iteration from 1.49 / 1.31 to 1.45 / 1.26 s (two A/B pairs). What they cost: an event
#: loop blocked for over ``tick.limit`` (3 s) is reported up to 1 s later, the dashboard's
#: system graphs are coarser, and a worker notices it nears its memory limit within 0.5 s.
CLUSTER_CONFIG = {
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
    "distributed.worker.profile.interval": WORKER_PROFILE_INTERVAL,
}


@contextlib.contextmanager
def worker_malloc_environ():
    """:data:`WORKER_MALLOC_ENVIRON` in this process's environment for the block (for processes started in it).

    The previous values are put back at the end.
    """
    environ = {name: str(value) for name, value in WORKER_MALLOC_ENVIRON.items()}
    previous = {name: os.environ.get(name) for name in environ}
    os.environ.update(environ)
    try:
        yield environ
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def local_cluster(n_workers=None, threads_per_worker=1, **kwargs):
    """A ``distributed.LocalCluster`` of worker processes with :data:`WORKER_MALLOC_ENVIRON` and
    :data:`CLUSTER_CONFIG`.

    The variables must be in the environment when a worker process starts. distributed's
    nannies copy their ``distributed.nanny.pre-spawn-environ`` into this process's
    environment (where a later nanny reads them back in preference to the configuration), so
    after any other LocalCluster has run here, setting the configuration alone would start
    workers with distributed's ``MALLOC_TRIM_THRESHOLD_=65536``. The library's values are
    therefore put into this process's environment while the workers start, and the previous
    values are put back after (:func:`worker_malloc_environ`). (To run workers with other
    malloc settings, start a LocalCluster of your own and pass its client.)
    """
    import dask
    from distributed import LocalCluster

    with worker_malloc_environ() as environ:
        pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **environ}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn, **CLUSTER_CONFIG}):
            # ":0": a free port for the dashboard server, so concurrent clusters do not collide on 8787
            return LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                dashboard_address=":0",
                **kwargs,
            )


class SchedulerUnreachableError(ConnectionError):
    """No dask scheduler answered at the given address in time."""


@contextlib.contextmanager
def dask_client(address=None, *, n_workers=None, threads_per_worker=1, timeout=CONNECT_TIMEOUT):
    """A ``distributed.Client`` for the duration of the block.

    The scheduler is ``address`` if given, else ``$DASK_SCHEDULER_ADDRESS``, else a new
    LocalCluster of worker processes (closed at the end of the block).

    Raises
    ------
    SchedulerUnreachableError
        Nobody answered at the address within ``timeout`` seconds.
    """
    from distributed import Client

    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if address is None:
        with local_cluster(n_workers, threads_per_worker) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError) as err:
        raise SchedulerUnreachableError(
            f"No dask scheduler answered at {address!r} within {timeout} s: check the address and that "
            "`dask scheduler` is running (or leave the address out to use a local cluster)."
        ) from err
    with client:
        yield client
