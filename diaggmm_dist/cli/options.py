"""``--storage-option KEY=VALUE`` and ``--storage-options FILE.json``: the fsspec options of
every URL of a command (data, model, ``--out``, ``--checkpoint``).

A VALUE is JSON when it parses as JSON (``true``, ``8``, ``{"a": 1}``, ``"123"``), else the
string itself; a dotted KEY nests (``client_kwargs.endpoint_url=http://host:9000`` gives
``{"client_kwargs": {"endpoint_url": "http://host:9000"}}``). The file's options come first,
each ``--storage-option`` over them, in order. Option values may be secrets: no message here
shows one (keys are named, values never).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: How to give an option, for the messages.
EXAMPLE = "e.g. --storage-option client_kwargs.endpoint_url=http://host:9000"


def storage_option(text: str) -> tuple[tuple[str, ...], object]:
    """Parse one ``--storage-option KEY=VALUE``: the key's path and the value.

    Parameters
    ----------
    text : str
        The argument as given.

    Returns
    -------
    tuple
        ``(("client_kwargs", "endpoint_url"), "http://host:9000")``: the dotted key split, and
        the value (JSON when it parses as JSON, else the string).

    Raises
    ------
    argparse.ArgumentTypeError
        No ``=``, or an empty key or key part; the message never shows the value.
    """
    key, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE, got an argument without '=' (not shown: it may be a "
            f"secret); {EXAMPLE}"
        )
    parts = tuple(part.strip() for part in key.split("."))
    if not all(parts):
        raise argparse.ArgumentTypeError(
            f"the key {key.strip()!r} has an empty part: give KEY or KEY.SUBKEY; {EXAMPLE}"
        )
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return parts, parsed


def storage_options_file(text: str) -> dict:
    """Read ``--storage-options FILE.json``: a JSON object of fsspec options.

    Parameters
    ----------
    text : str
        The file's path.

    Returns
    -------
    dict
        The options.

    Raises
    ------
    argparse.ArgumentTypeError
        The file cannot be read, is not JSON, or not a JSON object (its content never shown).
    """
    try:
        content = Path(text).read_text()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: {reason}") from None
    try:
        options = json.loads(content)
    except ValueError as err:
        where = f"line {err.lineno}, column {err.colno}" if hasattr(err, "lineno") else "?"
        raise argparse.ArgumentTypeError(f"{text!r} is not valid JSON ({where})") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} must hold a JSON object of options, like "
            '{"client_kwargs": {"endpoint_url": "http://host:9000"}}, '
            f"not a {type(options).__name__}"
        )
    return options


def _merged(base: dict, path: tuple[str, ...], value) -> None:
    """Set ``base[path[0]][path[1]]... = value`` in place, refusing to nest under a value."""
    node = base
    for depth, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(
                f"--storage-option {'.'.join(path)!r}: {'.'.join(path[: depth + 1])!r} is "
                "already given a value, not a group of options."
            )
        node = child
    if isinstance(node.get(path[-1]), dict) and not isinstance(value, dict):
        raise ValueError(
            f"--storage-option {'.'.join(path)!r}: it is already a group of options "
            f"({'.'.join(path)}.KEY=...); give it one form."
        )
    node[path[-1]] = value


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--storage-option`` (repeatable) and ``--storage-options FILE`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A sub-command's parser.
    """
    parser.add_argument(
        "--storage-option",
        dest="storage_option",
        action="append",
        type=storage_option,
        default=[],
        metavar="KEY=VALUE",
        help="fsspec option for every URL of the command (repeatable); VALUE is JSON when it "
        "parses, else a string; a dotted KEY nests, e.g. "
        "client_kwargs.endpoint_url=http://host:9000. Prefer environment variables or "
        "instance roles for credentials: command lines are visible to other users",
    )
    parser.add_argument(
        "--storage-options",
        dest="storage_options_file",
        type=storage_options_file,
        metavar="FILE.json",
        help="a JSON object of fsspec options for every URL of the command (the "
        "--storage-option values go over it)",
    )


def command_storage_options(args: argparse.Namespace) -> dict | None:
    """The command's storage options: the file's, then each ``--storage-option`` over them.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    dict or None
        None when no option was given.

    Raises
    ------
    ValueError
        A key given both as a value and as a group of options (``a=1`` and ``a.b=2``).
    """
    given = getattr(args, "storage_option", None) or []
    from_file = getattr(args, "storage_options_file", None)
    if not given and from_file is None:
        return None
    options = json.loads(json.dumps(from_file or {}))  # a copy, nested dicts included
    for path, value in given:
        _merged(options, path, value)
    return options


#: The TLS options' names, in the order :func:`~diaggmm_dist.tls.tls_files` takes them.
TLS_OPTIONS = ("--tls-ca", "--tls-cert", "--tls-key", "--tls-dir")


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls-ca``, ``--tls-cert``, ``--tls-key`` and ``--tls-dir`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A sub-command's parser that takes ``--scheduler``.
    """
    group = parser.add_argument_group(
        "TLS (a tls:// scheduler)",
        "the client's credentials: the three files, or a folder holding them; by default "
        "dask's config (distributed.comm.tls.ca-file, .client.cert, .client.key). Without a "
        "scheduler they secure the LocalCluster started for the command (else it has "
        "credentials of its own, made in memory)",
    )
    group.add_argument("--tls-ca", metavar="FILE", help="the cluster's CA certificate (PEM)")
    group.add_argument(
        "--tls-cert", metavar="FILE", help="this client's certificate (PEM), signed by the CA"
    )
    group.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    group.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="a folder holding ca.pem, cert.pem and key.pem (or a Kubernetes TLS Secret's "
        "ca.crt, tls.crt and tls.key)",
    )


def command_security(args: argparse.Namespace):
    """The command's TLS credentials, checked before any work; None when none are given.

    A ``tls://`` scheduler (``--scheduler`` or ``$DASK_SCHEDULER_ADDRESS``) is refused here
    when no credentials reach it (neither given nor in dask's config).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    TLSFiles or None

    Raises
    ------
    TLSCredentialsError
        Some of the three files but not all, files and a folder, a file missing or unreadable,
        files that do not load together, or a tls:// scheduler without credentials (a
        ValueError: exit code 2).
    """
    import os

    from ..tls import client_security, tls_files

    files = tls_files(
        getattr(args, "tls_ca", None),
        getattr(args, "tls_cert", None),
        getattr(args, "tls_key", None),
        getattr(args, "tls_dir", None),
        names=TLS_OPTIONS,
    )
    address = getattr(args, "scheduler", None) or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        client_security(address, files)
    return files
