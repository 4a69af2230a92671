"""Where dask work runs: a scheduler address, ``DASK_SCHEDULER_ADDRESS``, or a LocalCluster."""

from __future__ import annotations

import contextlib
import os

#: Seconds to wait for a scheduler before giving up with a clear error.
CONNECT_TIMEOUT = 10


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
    from distributed import Client, LocalCluster

    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if address is None:
        # ":0": a free port for the dashboard server, so concurrent clusters do not collide on 8787
        with LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
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
