"""Progress within a pass: a hook the runners call as chunks finish, free when none is set.

:func:`reporting` sets a callback for a block of code. While it is set, every pass of the
engine calls it with a :class:`PassProgress` when the pass starts (nothing done yet) and
again each time chunks of it finish, from whichever thread saw them finish (a local pass's
threads, distributed's callback thread): the callback must be quick and thread-safe.
Without a callback, a pass asks :func:`pass_started` once and gets None: no other cost.

Statistics passes report their chunks and rows; other computations
(:func:`~diaggmm_dist.engine.compute`: ``predict``'s writes, a fingerprint's reads) report
the tasks that make up their result (e.g. one per written chunk), without rows.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import math
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

__all__ = [
    "PassProgress",
    "PassTracker",
    "announce_rows",
    "collections_in",
    "pass_started",
    "reporting",
    "replaced",
    "reporting_now",
    "result_parts",
]

logger = logging.getLogger(__name__)


class PassProgress(NamedTuple):
    """How far one pass is: what the progress callback receives."""

    #: Chunks finished, of ``n_chunks``.
    chunks_done: int
    n_chunks: int
    #: Rows in the chunks finished, of ``n_rows``; both None when the pass does not know them.
    rows_done: int | None
    n_rows: int | None
    #: ``"statistics"`` (an EM pass over the data) or ``"compute"`` (any other computation).
    kind: str


class _Hook:
    """The callback set by :func:`reporting`, and the rows of the pass about to start."""

    def __init__(self, callback):
        self.callback = callback
        self.rows = None  # rows per chunk by block index, of the next statistics pass
        self.broken = False


_HOOK: contextvars.ContextVar[_Hook | None] = contextvars.ContextVar(
    "diaggmm_progress", default=None
)


@contextlib.contextmanager
def reporting(callback: Callable[[PassProgress], object]) -> Iterator[None]:
    """Call ``callback`` with a :class:`PassProgress` as the engine's passes advance.

    Parameters
    ----------
    callback : callable
        Takes one :class:`PassProgress`; called at the start of each pass and as its chunks
        finish, possibly from other threads. An exception in it is logged once and turns
        reporting off for the rest of the block: a display must never stop a fit.

    Yields
    ------
    None

    Examples
    --------
    >>> import numpy as np
    >>> from diaggmm_dist import DiagGMM
    >>> from diaggmm_dist.engine.progress import reporting
    >>> seen = []
    >>> X = np.random.default_rng(0).normal(size=(4000, 2))
    >>> with reporting(seen.append):
    ...     _ = DiagGMM(2, max_iter=2, chunk_size=1000, random_state=0).fit(X)
    >>> max(p.chunks_done for p in seen if p.kind == "statistics")
    4
    """
    token = _HOOK.set(_Hook(callback))
    try:
        yield
    finally:
        _HOOK.reset(token)


def announce_rows(X) -> None:
    """Tell the hook the chunking of ``X``, the array of the statistics pass about to run.

    Parameters
    ----------
    X : dask.array.Array
        Samples along every axis but the last. Nothing is done without a hook.
    """
    hook = _HOOK.get()
    if hook is not None:
        hook.rows = tuple(tuple(int(n) for n in axis) for axis in X.chunks[:-1])


def reporting_now() -> bool:
    """Whether a progress callback is set (in this context)."""
    hook = _HOOK.get()
    return hook is not None and not hook.broken


class PassTracker:
    """One pass's progress: which of its chunks are done, told to the callback.

    Thread-safe: :meth:`done` may be called from any thread.
    """

    def __init__(self, hook: _Hook, chunk_rows: list | None, n_chunks: int, kind: str):
        self.hook, self.chunk_rows, self.kind = hook, chunk_rows, kind
        self.n_chunks = n_chunks
        self.n_rows = None if chunk_rows is None else sum(chunk_rows)
        self.chunks_done, self.rows_done = 0, 0 if chunk_rows is not None else None
        self.closed = False  # after finished(): a late callback of a chunk tells nothing
        self.lock = threading.Lock()
        self._tell()

    def done(self, first: int, count: int = 1) -> None:
        """Chunks ``first`` to ``first + count - 1`` (in the pass's order) are done."""
        with self.lock:
            if self.closed:
                return
            self.chunks_done += count
            if self.chunk_rows is not None:
                self.rows_done += sum(self.chunk_rows[first : first + count])
            self._tell()

    def finished(self) -> None:
        """Every chunk is done (a pass that could not report them one by one)."""
        with self.lock:
            if not self.closed and self.chunks_done < self.n_chunks:
                self.chunks_done, self.rows_done = self.n_chunks, self.n_rows
                self._tell()
            self.closed = True

    def _tell(self):
        if self.hook.broken:
            return
        try:
            self.hook.callback(
                PassProgress(
                    self.chunks_done, self.n_chunks, self.rows_done, self.n_rows, self.kind
                )
            )
        except Exception:  # a display problem must never stop a pass
            self.hook.broken = True
            logger.warning("progress reporting failed; turned off", exc_info=True)


def _rows_of(keys, rows: tuple) -> list | None:
    """Rows of each chunk task, from the block indices in its key (``(name, i, j, ..., 0, 0)``)."""
    out = []
    for key in keys:
        indices = key[1 : 1 + len(rows)] if isinstance(key, tuple) else ()
        if len(indices) != len(rows) or not all(
            isinstance(i, int) and 0 <= i < len(axis) for i, axis in zip(indices, rows)
        ):
            return None
        out.append(math.prod(axis[i] for i, axis in zip(indices, rows)))
    return out


def result_parts(collections: tuple) -> dict:
    """The tasks whose results make up ``collections``' values, numbered in order.

    A computation reports these as its units (e.g. one per chunk written by ``da.store``).

    Parameters
    ----------
    collections : tuple of dask collections

    Returns
    -------
    dict
        Output key -> its position.
    """
    from ..dask_compat import flat_keys

    keys = [key for collection in collections_in(collections) for key in flat_keys(collection)]
    return {key: index for index, key in enumerate(dict.fromkeys(keys))}


def collections_in(value) -> list:
    """The dask collections in ``value``, as ``dask.compute`` finds them: itself, or inside
    lists, tuples, sets and dict values, at any depth (e.g. ``da.store``'s tuple)."""
    from dask import is_dask_collection

    if is_dask_collection(value):
        return [value]
    if isinstance(value, (list, tuple, set)):
        return [found for item in value for found in collections_in(item)]
    if isinstance(value, dict):
        return [found for item in value.values() for found in collections_in(item)]
    return []


def replaced(value, new: dict):
    """``value`` with each collection ``c`` in it replaced by ``new[id(c)]`` (the containers
    :func:`collections_in` looks into rebuilt; anything else as it is)."""
    if id(value) in new:
        return new[id(value)]
    if type(value) in (list, tuple, set):
        return type(value)(replaced(item, new) for item in value)
    if type(value) is dict:
        return {key: replaced(item, new) for key, item in value.items()}
    return value


def pass_started(chunk_keys=None, n_chunks: int | None = None, kind: str = "statistics"):
    """A tracker for a pass that starts now, or None when no callback is set.

    Parameters
    ----------
    chunk_keys : sequence, optional
        A statistics pass's chunk tasks, in row order: their rows come from the chunking
        :func:`announce_rows` gave (used once), when the keys' block indices fit it.
    n_chunks : int, optional
        Without ``chunk_keys``: the number of units the pass reports (no rows); if None too,
        the chunks of the array :func:`announce_rows` gave.
    kind : {"statistics", "compute"}

    Returns
    -------
    PassTracker or None
    """
    hook = _HOOK.get()
    if hook is None or hook.broken:
        return None
    rows, hook.rows = hook.rows, None
    chunk_rows = None
    if chunk_keys is not None:
        n_chunks = len(chunk_keys)
        chunk_rows = None if rows is None else _rows_of(chunk_keys, rows)
    elif n_chunks is None and rows is not None:  # a pass reported as a whole: X's chunks
        chunk_rows = [math.prod(sizes) for sizes in itertools.product(*rows)]
        n_chunks = len(chunk_rows)
    return PassTracker(hook, chunk_rows, int(n_chunks or 0), kind)
