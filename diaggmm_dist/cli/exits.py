"""Exit codes of the ``diaggmm`` command, and how an error becomes one line and a code."""

from __future__ import annotations

from .checks import UnusableOutputError
from .console import one_line

#: Exit codes.
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


def error_exit_code(err):
    """2 for bad usage or input, 1 for runtime failures."""
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


def error_text(err):
    """``(type name, one-line message)`` of an error, as raised where it happened.

    An exception raised on a dask worker reaches the client as it was raised, except in two
    wrappings of distributed's, undone here: a message longer than
    ``distributed.admin.max-error-length`` comes as ``type(e)("Long error message", message)``,
    and an exception that cannot be unpickled as ``Exception(repr(e))``.
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


def known_error(err):
    """Errors whose message is meant for the user as it stands."""
    from ..cluster import SchedulerUnreachableError
    from ..io.checkpoint import CheckpointMismatchError
    from ..io.model_store import ModelStoreError

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
