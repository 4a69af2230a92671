"""How every task of the flows runs: its retry policy, its options, and its dask scheduler.

Dask: a flow opens one client (:func:`diaggmm_dist.cluster.dask_client`) for its whole run
and hands the tasks its scheduler's address, a string. A task reuses the flow's client when it
can see it (tasks called from the flow run in the flow's thread and process) and pins it as
the current client for the block; if it cannot (another thread with another current client,
another process), it connects to the address itself, with the flow's TLS credentials when it
runs in the flow's process (:func:`flow_client` keeps them there, in memory, by address; a
task's parameters never hold them). See :func:`on_scheduler`.
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


#: The TLS credentials (``distributed.Security``) of the flows' open clients, by scheduler
#: address: what a task that cannot see its flow's client connects with (in this process only).
_FLOW_SECURITY: dict = {}


@contextlib.contextmanager
def flow_client(scheduler_address: str | None, tls_directory: str | None = None):
    """A flow's dask client for its whole run (:func:`diaggmm_dist.cluster.dask_client`).

    Parameters
    ----------
    scheduler_address : str or None
        The flow's ``scheduler_address``: by default ``$DASK_SCHEDULER_ADDRESS``, else a
        LocalCluster for the run (with TLS and credentials made in memory).
    tls_directory : str or None
        The flow's ``tls_directory``: a folder holding the CA certificate and the client's
        certificate and key (:func:`diaggmm_dist.tls.credentials_folder`); None: dask's
        configuration (``distributed.comm.tls.*``), when a ``tls://`` scheduler needs them.

    Yields
    ------
    distributed.Client
        The client; its credentials are what :func:`on_scheduler` connects with.

    Raises
    ------
    TLSCredentialsError
        A ``tls://`` scheduler without credentials, or credentials that do not load, before
        anything connects (a ValueError: the task is not retried).
    """
    from diaggmm_dist.cluster import dask_client
    from diaggmm_dist.tls import credentials_folder

    files = None if tls_directory is None else credentials_folder(tls_directory)
    with dask_client(scheduler_address, security=files) as client:
        address = client.scheduler.address
        if address.startswith("tls://"):
            _FLOW_SECURITY[address] = client.security
        try:
            yield client
        finally:
            _FLOW_SECURITY.pop(address, None)


@contextlib.contextmanager
def on_scheduler(address: str | None):
    """Run the block's dask work on the scheduler at ``address`` (None: dask's local threads).

    The flow's own client is reused when this thread sees it as the current (or default)
    client; otherwise a new connection is opened for the block and closed after it, with the
    flow's TLS credentials (:func:`flow_client`), else dask's configuration.

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
    security = _FLOW_SECURITY.get(address)  # None: dask's configuration
    with dask_client(address, security=security) as client:  # `with`: the current client
        yield client


def _deep_merged(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``; nested dicts merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def flow_storage_options(
    storage_options: dict | None, storage_options_block: str | None
) -> dict | None:
    """A flow's storage options: the Secret block's, then the ``storage_options`` parameter's.

    The block is read here, in the flow run, so that credentials live in a Prefect ``Secret``
    block (shown masked) rather than in the flow run's parameters, which the Prefect server
    stores and shows to anyone who can read the deployment's runs. Non-secret options (an
    endpoint, a region) can come as the parameter; its values go over the block's, nested
    dicts merged key by key.

    Parameters
    ----------
    storage_options : dict or None
        The flow's ``storage_options`` parameter: fsspec options for every URL of the run.
    storage_options_block : str or None
        The name of a Prefect ``Secret`` block whose value is a JSON object of fsspec options,
        e.g. ``{"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}}``.

    Returns
    -------
    dict or None
        None when neither is given. The options travel to the tasks and, inside the library's
        task graphs, to the dask workers (see the README, "Data in object storage").

    Raises
    ------
    ValueError
        The block's value is not a JSON object, or the options are not plain data (the
        messages never show a value).
    TypeError
        ``storage_options`` is not a dict.
    """
    from diaggmm_dist.locations import checked_storage_options

    options = {}
    if storage_options_block:
        from prefect.blocks.system import Secret

        value = Secret.load(storage_options_block).get()
        if not isinstance(value, dict):
            raise ValueError(
                f"The Secret block {storage_options_block!r} must hold a JSON object of fsspec "
                f"options, not a {type(value).__name__}."
            )
        options = checked_storage_options(value, f"the Secret block {storage_options_block!r}")
    if storage_options is not None:
        options = _deep_merged(options, checked_storage_options(storage_options, "the flow"))
    elif not storage_options_block:
        return None
    return options


def url_of(where) -> str:
    """The URL of a registry's place (a str, or a Location): what tasks pass around.

    Parameters
    ----------
    where : str or Location

    Returns
    -------
    str
    """
    return str(getattr(where, "url", where))


def load_model(where, storage_options: dict | None = None):
    """``DiagGMM.load`` of a path or URL with the run's options (a Location has its own).

    Parameters
    ----------
    where : str or Location
        A model store.
    storage_options : dict, optional
        The run's fsspec options.

    Returns
    -------
    DiagGMM
    """
    from diaggmm_dist import DiagGMM
    from diaggmm_dist.locations import Location

    if isinstance(where, Location):
        return DiagGMM.load(where)
    return DiagGMM.load(where, storage_options=storage_options)


def open_registry(registry_url: str, storage_options: dict | None = None):
    """The :class:`~diaggmm_dist.stores.registry.ModelRegistry` at ``registry_url``, opened with
    the run's storage options."""
    from diaggmm_dist.em_settings import store_location
    from diaggmm_dist.stores.registry import ModelRegistry

    return ModelRegistry(store_location(registry_url, storage_options))
