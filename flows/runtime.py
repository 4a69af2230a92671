"""How every task of the flows runs: its retry policy, its options, and its dask scheduler.

Dask: a flow opens one client (:func:`diaggmm_dist.cluster.dask_client`) for its whole run
and hands the tasks its scheduler's address, a string. A task reuses the flow's client when it
can see it (tasks called from the flow run in the flow's thread and process) and pins it as
the current client for the block; if it cannot (another thread with another current client,
another process), it connects to the address itself. See :func:`on_scheduler`.
"""

from __future__ import annotations

import contextlib

from prefect.cache_policies import NO_CACHE

#: Retries of every task that touches data; the second and third attempts wait 2 s and 10 s.
RETRIES = 2
RETRY_DELAYS = [2, 10]


#: OSErrors that a retry cannot cure: a path that is missing, taken, of the wrong kind or
#: forbidden stays so for the seconds between two attempts.
PERMANENT_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def is_transient(error: BaseException) -> bool:
    """Whether a retry may cure ``error``: I/O and network failures, and dask workers that died.

    Transient: ``OSError`` (a connection reset or refused, a timeout, an object store's
    failure, a lost scheduler: distributed's ``CommClosedError`` and the library's
    ``SchedulerUnreachableError`` are OSErrors) except :data:`PERMANENT_OS_ERRORS`, and
    distributed's ``KilledWorker``. Everything else fails the same way again and is not retried:
    wrong input or settings (``ValueError``, ``TypeError``: a corrupt chunk, a checkpoint of
    another run, out-of-range settings; raised on a dask worker, they arrive as they were
    raised), numerical failures, library defects.

    Parameters
    ----------
    error : BaseException
        What the failed attempt raised.

    Returns
    -------
    bool
        True when a retry may cure it.
    """
    from distributed import KilledWorker

    if isinstance(error, PERMANENT_OS_ERRORS):
        return False
    return isinstance(error, (OSError, KilledWorker))


def _retryable(task_, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn``: retry a failed attempt only when :func:`is_transient`."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            error = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001 - cannot tell: retry
            return True
    return is_transient(error)


#: Options of every task: retried, never cached (they have side effects on stores), results
#: not persisted (they are small dicts returned to the flow).
TASK_OPTIONS = dict(
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=_retryable,
    cache_policy=NO_CACHE,
    persist_result=False,
)


@contextlib.contextmanager
def on_scheduler(address: str | None):
    """Run the block's dask work on the scheduler at ``address`` (None: dask's local threads).

    The flow's own client is reused when this thread sees it as the current (or default)
    client; otherwise a new connection is opened for the block and closed after it.

    Parameters
    ----------
    address : str or None
        The scheduler's address, as the flow's client reports it.

    Yields
    ------
    distributed.Client or None
        The client the block's work runs on.
    """
    if address is None:
        yield None
        return
    from distributed import Client

    from diaggmm_dist.cluster import dask_client

    try:
        client = Client.current()
    except ValueError:
        client = None
    if client is not None and client.status == "running" and client.scheduler.address == address:
        with client.as_current():
            yield client
        return
    with dask_client(address) as client:  # `with` makes it the current client of this context
        yield client
