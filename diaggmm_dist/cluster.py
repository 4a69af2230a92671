"""Where dask work runs: a scheduler address, ``DASK_SCHEDULER_ADDRESS``, or a LocalCluster.

The LocalCluster the library starts uses TLS with mutual authentication by default, with
credentials made for it in memory (``distributed.Security.temporary()``): another user of the
machine cannot run code in its workers. Its cost, measured by bench/tls_cost.py (see
bench/FINDINGS.md): about 25 ms more per EM iteration on the 2-core VM (1.2-1.3x on a 1M-row
fit of ~0.1 s per iteration, 5-10% more CPU), a cost per message rather than per row, so
(estimated, not measured) a few percent of iterations that take seconds; ~0.1 s more to
start. ``security=False`` turns it off. A scheduler at an address is joined with TLS
credentials given as files or a folder (:mod:`diaggmm_dist.tls`), or with dask's
configuration.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Security

    from .tls import TLSFiles

#: Seconds to wait for a scheduler before giving up with a clear error.
CONNECT_TIMEOUT = 10

#: glibc malloc settings of the LocalCluster's worker processes: chunk-sized buffers come from
#: the heap, not a fresh mmap each (distributed's default reads chunks 2-2.5x slower); see
#: bench/FINDINGS.md.
WORKER_MALLOC_ENVIRON = {
    "MALLOC_MMAP_THRESHOLD_": 64 * 2**20,
    "MALLOC_TRIM_THRESHOLD_": 128 * 2**20,
}

#: How often the LocalCluster's workers sample their stacks for distributed's profiler (its
#: default 10 ms costs event-loop CPU on the cores the chunks need); see bench/FINDINGS.md.
WORKER_PROFILE_INTERVAL = "100ms"

#: distributed's settings for the LocalCluster: its periodic callbacks (event-loop tick,
#: system and memory monitors) run less often, as they share the cores with the chunks; see
#: bench/FINDINGS.md.
CLUSTER_CONFIG = {
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
    "distributed.worker.profile.interval": WORKER_PROFILE_INTERVAL,
}


@contextlib.contextmanager
def worker_malloc_environ():
    """:data:`WORKER_MALLOC_ENVIRON` in this process's environment for the block.

    Processes started in the block inherit it; the previous values are put back at the end.

    Yields
    ------
    dict
        The variables set, as strings.
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


def local_cluster(
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    *,
    security: bool | Security | TLSFiles | None = True,
    **kwargs,
):
    """A ``distributed.LocalCluster`` of worker processes with the library's settings.

    Its workers run with :data:`WORKER_MALLOC_ENVIRON` and :data:`CLUSTER_CONFIG`. Its
    scheduler, workers and clients talk TLS with mutual authentication (``tls://``), unless
    ``security=False``.

    The variables must be in the environment when a worker process starts. distributed's
    nannies copy their ``distributed.nanny.pre-spawn-environ`` into this process's
    environment (where a later nanny reads them back in preference to the configuration), so
    after any other LocalCluster has run here, setting the configuration alone would start
    workers with distributed's ``MALLOC_TRIM_THRESHOLD_=65536``. The library's values are
    therefore put into this process's environment while the workers start, and the previous
    values are put back after (:func:`worker_malloc_environ`). (To run workers with other
    malloc settings, start a LocalCluster of your own and pass its client.)

    Parameters
    ----------
    n_workers : int, optional
        Worker processes; distributed's default (one per core) if None.
    threads_per_worker : int, default=1
        Threads in each worker.
    security : bool, distributed.Security or TLSFiles, default=True
        ``True``: TLS with credentials made for this cluster, in memory only
        (``distributed.Security.temporary()``, as ``LocalCluster(security=True)``); a client
        joins it as ``Client(cluster)``, which takes them from the cluster. A ``Security``:
        used as it is. A :class:`~diaggmm_dist.tls.TLSFiles`: those files for the scheduler,
        the workers and the clients. ``False`` or None: distributed's default, plain
        ``tcp://`` unless dask's configuration sets TLS.
    **kwargs
        Passed on to ``distributed.LocalCluster``.

    Returns
    -------
    distributed.LocalCluster
        The running cluster (close it, or use it as a context manager).
    """
    import dask
    from distributed import LocalCluster, Security

    from .tls import TLSFiles

    if security is True:
        security = Security.temporary()
    elif isinstance(security, TLSFiles):
        security = security.security(("client", "scheduler", "worker"))
    elif security is False:
        security = None

    with worker_malloc_environ() as environ:
        pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **environ}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn, **CLUSTER_CONFIG}):
            # ":0": a free dashboard port, so concurrent clusters do not collide on 8787
            return LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                dashboard_address=":0",
                security=security,
                **kwargs,
            )


class SchedulerUnreachableError(ConnectionError):
    """No dask scheduler answered at the given address in time."""


@contextlib.contextmanager
def dask_client(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    timeout: float = CONNECT_TIMEOUT,
    security: bool | Security | TLSFiles | None = None,
):
    """A ``distributed.Client`` for the duration of the block.

    The scheduler is ``address`` if given, else ``$DASK_SCHEDULER_ADDRESS``, else a new
    LocalCluster of worker processes (closed at the end of the block), with TLS by default.

    The credentials are checked before anything connects or starts: a ``tls://`` address with
    none, or files that are missing or do not fit together, are refused with a
    :class:`~diaggmm_dist.tls.TLSCredentialsError` that says what is missing and how to give it.

    Parameters
    ----------
    address : str, optional
        The scheduler's address, e.g. ``tcp://host:8786`` or ``tls://host:8786``.
    n_workers, threads_per_worker : int, optional
        Of the LocalCluster started when there is no address (:func:`local_cluster`).
    timeout : float, default=CONNECT_TIMEOUT
        Seconds to wait for the scheduler at ``address``.
    security : distributed.Security, TLSFiles, bool or None, optional
        With an address: the client's TLS credentials (:func:`~diaggmm_dist.tls.client_security`);
        None takes them from dask's configuration (``distributed.comm.tls.ca-file``,
        ``.client.cert``, ``.client.key``), when it has them. Without one: the LocalCluster's
        (:func:`local_cluster`); None is ``True``, TLS with temporary credentials.

    Yields
    ------
    distributed.Client
        The client, the current one for the block.

    Raises
    ------
    TLSCredentialsError
        Missing or unusable TLS credentials, before any connection.
    SchedulerUnreachableError
        Nobody answered at the address within ``timeout`` seconds (or the TLS handshake
        failed: credentials of another cluster).
    """
    from distributed import Client

    from .tls import client_security

    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if address is None:
        local = True if security is None else security
        with (
            local_cluster(n_workers, threads_per_worker, security=local) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    address, security = client_security(address, security)
    try:
        client = Client(address, timeout=f"{timeout}s", security=security)
    except (OSError, TimeoutError) as err:
        # the reason distributed gives is kept: a refused TLS handshake shows there
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        hint = (
            "check that these TLS credentials are signed by the cluster's CA, and the "
            "scheduler's by the CA given"
            if security is not None
            else "a scheduler with TLS needs its tls:// address and credentials"
        )
        raise SchedulerUnreachableError(
            f"No dask scheduler answered at {address!r} within {timeout} s ({reason}): check "
            "the address and that `dask scheduler` is running (or leave the address out to "
            f"use a local cluster); {hint}."
        ) from err
    with client:
        yield client
