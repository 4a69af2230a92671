"""Files read with a size bound: a regular file no larger than its reader takes, or refused unread.

The library's three readers of stored bytes use it: the direct chunk reader
(:mod:`diaggmm_dist.zarr_chunks`), the checks on zarr's own read path
(:mod:`diaggmm_dist.checked_zarr`) and the model store's files
(:mod:`diaggmm_dist.stores.model_files`). A symlink to ``/dev/zero``, a FIFO or a directory
is not a regular file: its size says nothing of what a read would take, so it is never read.
Each reader words the refusal for its own error (:class:`NotARegularFile`, :class:`FileTooLarge`
carry the facts).
"""

from __future__ import annotations

import os
import stat

__all__ = [
    "NOT_REGULAR",
    "FileTooLarge",
    "NotARegularFile",
    "RefusedFile",
    "read_bounded",
    "regular_file_size",
]

#: How a chunk reader words a :class:`NotARegularFile`: its size is not what a read takes
#: (``/dev/zero`` never ends).
NOT_REGULAR = "it is not a regular file (a directory, device, FIFO or socket), so it was not read"


class RefusedFile(ValueError):
    """A file refused before it was read (or before more than its bound was)."""


class NotARegularFile(RefusedFile):
    """Not a regular file: ``kind`` is ``"directory"`` or ``"other"`` (a device, FIFO or socket).

    Parameters
    ----------
    kind : str
        ``"directory"`` or ``"other"``.
    """

    def __init__(self, kind: str):
        self.kind = kind
        super().__init__(f"not a regular file ({kind})")


class FileTooLarge(RefusedFile):
    """A file larger than ``limit`` bytes: ``size`` is its size (None when it grew during the read).

    Parameters
    ----------
    size : int or None
        The file's size as its status gave it; None when a read found more than ``limit``
        bytes in a file whose status said fewer.
    limit : int
        The bound.
    """

    def __init__(self, size: int | None, limit: int):
        self.size, self.limit = size, limit
        super().__init__(f"{size} bytes, more than {limit}")


def regular_file_size(file, limit: int | None = None, fs=None) -> int | None:
    """The size of the regular file ``file``, checked against ``limit``.

    Parameters
    ----------
    file : int, str or os.PathLike
        An open file descriptor (``os.fstat``), a local path (``os.stat``, following symlinks:
        a link to ``/dev/zero`` is a character device), or with ``fs`` a path on that fsspec
        file system (``fs.info``).
    limit : int, optional
        The most bytes the file may hold.
    fs : fsspec.AbstractFileSystem, optional
        The file system of ``file``.

    Returns
    -------
    int or None
        The size in bytes; None only when ``fs`` does not say.

    Raises
    ------
    FileNotFoundError
        There is no such file.
    NotARegularFile
        A directory, device, FIFO or socket.
    FileTooLarge
        More than ``limit`` bytes.
    OSError
        Its status could not be read (a symlink loop, a permission error).
    """
    if fs is not None:
        info = fs.info(file)
        if info.get("type") != "file":
            raise NotARegularFile("directory" if info.get("type") == "directory" else "other")
        size = info.get("size")
    else:
        status = os.fstat(file) if isinstance(file, int) else os.stat(file)
        if not stat.S_ISREG(status.st_mode):
            raise NotARegularFile("directory" if stat.S_ISDIR(status.st_mode) else "other")
        size = status.st_size
    if limit is not None and size is not None and size > limit:
        raise FileTooLarge(size, limit)
    return size


def read_bounded(path: str, limit: int, fs) -> bytes:
    """The bytes of the regular file ``path`` on ``fs``, at most ``limit`` of them.

    Parameters
    ----------
    path : str
        A path on ``fs``.
    limit : int
        The most bytes the file may hold.
    fs : fsspec.AbstractFileSystem
        Its file system (local or remote).

    Returns
    -------
    bytes

    Raises
    ------
    FileNotFoundError, NotARegularFile, FileTooLarge, OSError
        As :func:`regular_file_size`; :class:`FileTooLarge` (``size`` None) also when the file
        grew past ``limit`` after its size was read.
    """
    regular_file_size(path, limit, fs)
    data = fs.cat_file(path, start=0, end=limit + 1)  # bounded even if it grew since
    if len(data) > limit:
        raise FileTooLarge(None, limit)
    return data
