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
WORKER_MALLOC_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": 64 * 2**20, "MALLOC_TRIM_THRESHOLD_": 128 * 2**20}

#: Root tasks the scheduler of a LocalCluster hands each worker thread ahead of time
#: (``distributed.scheduler.worker-saturation``; distributed's default is 1.1). A pass is
#: independent chunk tasks whose results are tiny, so a worker may as well hold its next one:
#: with 1.1 it waits a round trip to the scheduler after each chunk. On the 10M-row bench store,
#: 2 single-threaded workers took 1.80-1.94 s per iteration with 2.0 against 2.00-2.09 s with
#: 1.1 (three runs each). Unlike "inf", 2.0 keeps the scheduler's bounded queueing for other
#: graphs. A cluster started elsewhere takes it from its scheduler's configuration
#: (``DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=2.0``, as in deploy/).
LOCAL_WORKER_SATURATION = 2.0


def local_cluster(n_workers=None, threads_per_worker=1, **kwargs):
    """A ``distributed.LocalCluster`` of worker processes with :data:`WORKER_MALLOC_ENVIRON`
    and :data:`LOCAL_WORKER_SATURATION`.

    (The variables must be set before a worker process starts, so they go into
    ``distributed.nanny.pre-spawn-environ`` while the nannies are created; as with any such
    setting, variables already in this process's environment take precedence. The scheduler
    reads its saturation when it is created.)
    """
    import dask
    from distributed import LocalCluster

    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_MALLOC_ENVIRON}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ,
                          "distributed.scheduler.worker-saturation": LOCAL_WORKER_SATURATION}):
        # ":0": a free port for the dashboard server, so concurrent clusters do not collide on 8787
        return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, dashboard_address=":0",
                            **kwargs)


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
