"""Reads of the next chunks in flight while the current one is computed on (object storage).

From object storage every chunk read waits a request's latency (tens to hundreds of
milliseconds) before its bytes come, during which a pass that reads, then computes, then reads
does nothing. :class:`ReadAhead` wraps a Zarr array that is not on a local disk: when the engine
opens a :class:`Window` (a local pass on threads, a cluster task's group of consecutive chunks),
reading dask chunk ``i`` starts the reads of chunks ``i + 1 ... i + depth`` of the same window
on a small thread pool, and a later read of one of them takes its result. Outside a window (a
prediction through dask's schedulers, a few rows) every read is a plain read.

Bounds:

- at most ``depth`` chunks read ahead and not yet taken, per process, whatever the windows (a
  read that would pass the bound is not started: it is read when it is needed);
- at most ``concurrency`` reads ahead at a time, per process (one thread each);
- a window reads ahead only chunks it will read itself: on a cluster, only within its group;
  what a window has not taken when it closes is dropped;
- near its end, a cluster group task hands over reads of the first chunks of the next group
  task already waiting in its worker's ready queue (:func:`hand_over`); a later window takes
  them. If the scheduler moves that task to another worker, its reads (at most ``depth``) are
  dropped at the next hand-over, the only case where a chunk is read twice in a pass.

The values are those of a plain read: read-ahead changes when bytes arrive, never what is
computed or in which order it is added up. The defaults (:data:`DEPTH`, :data:`CONCURRENCY`)
are read from dask's config (``diaggmm.read-ahead.depth``, ``diaggmm.read-ahead.concurrency``)
when the array is wrapped, on the client, and travel with the wrapper to the workers. The
wrapper pickles as the array, its chunking and these two numbers: never cached data.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import dask
import numpy as np

#: Chunks read ahead and not yet taken, at most, per process (with the default 16 MiB chunks,
#: 64 MiB): enough to keep ``CONCURRENCY`` requests in flight while one chunk is computed on.
DEPTH = 4
#: Reads ahead at a time, per process: requests in flight beside the reading thread's own.
CONCURRENCY = 4

_state = threading.local()  # the window of this thread, if any
_lock = threading.Lock()
_pending = 0  # chunks read ahead (or being read) and not yet taken, in this process
_executors: dict[int, ThreadPoolExecutor] = {}
_handed: dict = {}  # (token, index): the Future of a read ahead for a task still to run here


def settings() -> tuple[int, int]:
    """``(depth, concurrency)``: dask config ``diaggmm.read-ahead.*``, else the defaults.

    Returns
    -------
    tuple of (int, int)
        Depth 0 turns read-ahead off; concurrency is at least 1.
    """
    depth = int(dask.config.get("diaggmm.read-ahead.depth", DEPTH))
    concurrency = int(dask.config.get("diaggmm.read-ahead.concurrency", CONCURRENCY))
    return max(0, depth), max(1, concurrency)


class ReadAhead:
    """A 2-D array (a :class:`zarr.Array`) read by row chunks, the next ones read ahead.

    Parameters
    ----------
    array : zarr.Array
        Read with ``array[key]``.
    row_chunks : tuple of int
        The dask chunks along the rows (each read whole, with every column).
    token : str
        The array's identity (deterministic): what reads ahead are filed under, in every
        process, by every copy of the wrapper.
    depth, concurrency : int, optional
        Default: :func:`settings`.
    """

    def __init__(self, array, row_chunks, token, depth=None, concurrency=None):
        defaults = settings()
        self.array, self.token = array, str(token)
        self.row_chunks = tuple(int(n) for n in row_chunks)
        self.depth = defaults[0] if depth is None else int(depth)
        self.concurrency = defaults[1] if concurrency is None else int(concurrency)
        self.shape, self.dtype, self.ndim = tuple(array.shape), np.dtype(array.dtype), 2
        self.starts = tuple(np.cumsum((0,) + self.row_chunks).tolist())

    def __reduce__(self):
        return type(self), (self.array, self.row_chunks, self.token, self.depth, self.concurrency)

    def __dask_tokenize__(self):
        return ("diaggmm-read-ahead", self.token, self.row_chunks, self.depth, self.concurrency)

    def __repr__(self) -> str:
        return f"ReadAhead({self.array!r}, depth={self.depth}, concurrency={self.concurrency})"

    @property
    def n_chunks(self) -> int:
        """Dask chunks along the rows."""
        return len(self.row_chunks)

    def chunk_index(self, key):
        """The index of the row chunk ``key`` selects whole (all columns), else None."""
        if not (isinstance(key, tuple) and len(key) == 2):
            return None
        rows, columns = key
        if not (isinstance(rows, slice) and isinstance(columns, slice)):
            return None
        if rows.step not in (None, 1) or columns.indices(self.shape[1]) != (0, self.shape[1], 1):
            return None
        start, stop, _ = rows.indices(self.shape[0])
        index = bisect.bisect_right(self.starts, start) - 1
        if index >= self.n_chunks or (start, stop) != self.starts[index : index + 2]:
            return None
        return index

    def read_chunk(self, index: int) -> np.ndarray:
        """Row chunk ``index``, read now (a plain read)."""
        return self.array[self.starts[index] : self.starts[index + 1], :]

    def __getitem__(self, key):
        window = getattr(_state, "window", None)
        index = None if window is None or self.depth < 1 else self.chunk_index(key)
        if index is None:
            return self.array[key]
        return window.read(self, index)


class Window:
    """Where reads ahead are useful: a local pass, or a cluster task's group of chunks.

    Parameters
    ----------
    n_chunks : int, optional
        Row chunks of each array this window reads, consecutive from the first it reads (a
        cluster task's group); None: up to the array's last chunk (a local pass, whose threads
        take the chunks in row order).
    """

    def __init__(self, n_chunks: int | None = None) -> None:
        self.n_chunks = n_chunks
        self.lock = threading.Lock()
        self.claimed: set = set()  # (token, index): read, being read or read ahead here
        self.first: dict = {}  # token: the first chunk this window read of that array
        self.ahead: dict = {}  # (token, index): the Future of a read ahead, not yet taken

    def read(self, wrapper: ReadAhead, index: int) -> np.ndarray:
        """Row chunk ``index`` of ``wrapper``: its read ahead if there is one; the next read ahead.

        Parameters
        ----------
        wrapper : ReadAhead
        index : int

        Returns
        -------
        ndarray
        """
        token = wrapper.token
        with self.lock:
            future = self.ahead.pop((token, index), None) or _adopt(token, index)
            self.claimed.add((token, index))
            end = wrapper.n_chunks
            if self.n_chunks is not None:
                end = min(end, self.first.setdefault(token, index) + self.n_chunks)
            for ahead in range(index + 1, min(end, index + 1 + wrapper.depth)):
                if (token, ahead) in _handed:  # read ahead by the task before: taken later
                    continue
                if (token, ahead) not in self.claimed and _reserve(wrapper.depth):
                    self.claimed.add((token, ahead))
                    pool = _executor(wrapper.concurrency)
                    self.ahead[(token, ahead)] = pool.submit(wrapper.read_chunk, ahead)
        if future is None:
            return wrapper.read_chunk(index)
        try:
            return future.result()
        finally:
            _release(1)

    def close(self) -> None:
        """Drop what was read ahead and not taken (reads under way are left to finish)."""
        with self.lock:
            dropped, self.ahead = list(self.ahead.values()), {}
        _drop(dropped)


@contextlib.contextmanager
def reading_ahead(window: Window | None):
    """Within the block, this thread's reads of :class:`ReadAhead` arrays go through ``window``.

    Parameters
    ----------
    window : Window or None
        None: plain reads.

    Yields
    ------
    Window or None
    """
    outer = getattr(_state, "window", None)
    _state.window = window
    try:
        yield window
    finally:
        _state.window = outer


@contextlib.contextmanager
def window(n_chunks: int | None = None):
    """A new :class:`Window` for this thread (:func:`reading_ahead`), closed at the end.

    Parameters
    ----------
    n_chunks : int, optional
        As :class:`Window`.

    Yields
    ------
    Window
    """
    opened = Window(n_chunks)
    try:
        with reading_ahead(opened):
            yield opened
    finally:
        opened.close()


def hand_over(wrappers: list, indices: list[int], keep: frozenset = frozenset()) -> None:
    """Read chunks ``indices`` of ``wrappers`` ahead for a task still to run in this process.

    The reads are filed in a process-wide table that a later :class:`Window` takes them from
    (a cluster worker's next task of the same pass, see :mod:`diaggmm_dist.engine.cluster`).
    Each call replaces the table for these arrays: an entry not in ``indices`` (its task ran
    elsewhere, or is no longer next) is dropped, so what a stolen task leaves is held until the
    next hand-over at most. The reads count in the same per-process bound (``depth``).

    Parameters
    ----------
    wrappers : list of ReadAhead
    indices : list of int
        Row chunks, most wanted first; those past an array's end are ignored.
    keep : set of int, optional
        Row chunks whose entries are kept, not started (the calling task's own).
    """
    dropped = []
    with _lock:
        tokens = {wrapper.token for wrapper in wrappers}
        wanted = {(w.token, i) for w in wrappers for i in (*indices, *keep)}
        for entry in [e for e in _handed if e[0] in tokens and e not in wanted]:
            dropped.append(_handed.pop(entry))
    _drop(dropped)
    for index in indices:
        for wrapper in wrappers:
            entry = (wrapper.token, index)
            if wrapper.depth < 1 or not 0 <= index < wrapper.n_chunks or entry in _handed:
                continue
            if not _reserve(wrapper.depth):
                return
            future = _executor(wrapper.concurrency).submit(wrapper.read_chunk, index)
            with _lock:
                _handed[entry] = future


def handed_over() -> int:
    """Chunks read ahead for a task still to run (:func:`hand_over`) and not yet taken."""
    return len(_handed)


def _adopt(token, index):
    with _lock:
        return _handed.pop((token, index), None)


def _drop(futures):
    for future in futures:
        future.cancel()
    _release(len(futures))


def pending() -> int:
    """Chunks read ahead (or being read) and not yet taken, in this process."""
    return _pending


def _reserve(depth):
    global _pending
    with _lock:
        if _pending >= depth:
            return False
        _pending += 1
        return True


def _release(n):
    global _pending
    if n:
        with _lock:
            _pending -= n


def _after_fork():
    # a forked child has none of its parent's threads: new pools, nothing pending
    global _lock, _pending
    _lock, _pending = threading.Lock(), 0
    _executors.clear()
    _handed.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _executor(concurrency) -> ThreadPoolExecutor:
    with _lock:
        pool = _executors.get(concurrency)
        if pool is None:
            pool = _executors[concurrency] = ThreadPoolExecutor(
                concurrency, thread_name_prefix="diaggmm-read-ahead"
            )
        return pool


__all__ = [
    "CONCURRENCY",
    "DEPTH",
    "ReadAhead",
    "Window",
    "hand_over",
    "handed_over",
    "pending",
    "reading_ahead",
    "settings",
    "window",
]
