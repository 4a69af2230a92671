"""Exit codes of the ``diaggmm`` command, and how an error becomes one line and a code."""

from __future__ import annotations

from .checks import UnusableOutputError
from .console import one_line

#: Exit codes.
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


def error_exit_code(err: BaseException) -> int:
    """The exit code of a command that failed with ``err``.

    Parameters
    ----------
    err : BaseException
        What the command raised.

    Returns
    -------
    int
        :data:`EXIT_USAGE` (2) for bad usage or input, :data:`EXIT_RUNTIME` (1) for runtime
        failures (an unreachable scheduler included).
    """
    from ..cluster import SchedulerUnreachableError

    if isinstance(err, SchedulerUnreachableError):
        return EXIT_RUNTIME
    if isinstance(
        err,
        (
            ValueError,
            TypeError,
            FileNotFoundError,
            FileExistsError,
            NotADirectoryError,
            IsADirectoryError,
            UnusableOutputError,
        ),
    ):
        return EXIT_USAGE  # includes ModelStoreError and CheckpointMismatchError (ValueErrors)
    return EXIT_RUNTIME


#: How distributed sends an exception from a worker whose message is longer than its
#: ``distributed.admin.max-error-length``: ``type(e)(LONG_ERROR, message[:length])``.
LONG_ERROR = "Long error message"


def error_text(err: BaseException) -> tuple[str, str]:
    """``(type name, one-line message)`` of an error, as raised where it happened.

    An exception raised on a dask worker reaches the client as it was raised, except in two
    wrappings of distributed's, undone here: a message longer than
    ``distributed.admin.max-error-length`` comes as ``type(e)("Long error message", message)``,
    and an exception that cannot be unpickled as ``Exception(repr(e))``.

    Parameters
    ----------
    err : BaseException
        What the command raised (here or on a dask worker).

    Returns
    -------
    tuple of (str, str)
        The error's type name and its message on one line.
    """
    import ast
    import re

    name, args = type(err).__name__, err.args
    if len(args) == 2 and args[0] == LONG_ERROR and isinstance(args[1], str):
        return name, one_line(args[1])
    if type(err) is Exception and len(args) == 1 and isinstance(args[0], str):
        wrapped = re.fullmatch(
            r"([A-Za-z_][\w.]*(?:Error|Exception))\((.*)\)", args[0].strip(), re.S
        )
        if wrapped:
            try:
                inner = ast.literal_eval(f"({wrapped[2]},)") if wrapped[2] else ()
            except (ValueError, SyntaxError):
                inner = (wrapped[2],)
            return wrapped[1], one_line(" ".join(map(str, inner))) or wrapped[1]
    return name, one_line(err) or name


def known_error(err: BaseException) -> bool:
    """Whether ``err``'s message is meant for the user as it stands.

    Parameters
    ----------
    err : BaseException
        What the command raised.

    Returns
    -------
    bool
        True for the library's and the command's own errors (bad input, unusable outputs, I/O,
        an unreachable scheduler); False for the rest, printed with their type and a hint.
    """
    from ..cluster import SchedulerUnreachableError
    from ..stores.checkpoint import CheckpointMismatchError
    from ..stores.model_store import ModelStoreError

    return isinstance(
        err,
        (
            ValueError,
            TypeError,
            FileNotFoundError,
            FileExistsError,
            ModelStoreError,
            SchedulerUnreachableError,
            CheckpointMismatchError,
            OSError,
            FloatingPointError,
            UnusableOutputError,
        ),
    )
