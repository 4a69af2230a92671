"""TLS credentials for joining a dask cluster: three files, a folder of them, or dask's config.

A dask cluster with TLS authenticates both ends: the scheduler and the workers accept only a
client whose certificate is signed by the cluster's CA, and the client checks theirs. To join
one, a client needs the CA certificate, its own certificate and that certificate's key
(:class:`TLSFiles`). They come, in order of precedence:

- as the three files (the CLI's ``--tls-ca``, ``--tls-cert``, ``--tls-key``);
- as a folder holding them (``--tls-dir``, the flows' ``tls_directory``) under one of the
  names of :data:`FOLDER_LAYOUTS`: ``ca.pem``, ``cert.pem``, ``key.pem``, or a Kubernetes TLS
  Secret's ``ca.crt``, ``tls.crt``, ``tls.key``;
- from dask's own configuration, ``distributed.comm.tls.ca-file``,
  ``distributed.comm.tls.client.cert`` and ``distributed.comm.tls.client.key`` (in a YAML file
  or as ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``, ``..._TLS__CLIENT__CERT``,
  ``..._TLS__CLIENT__KEY``), with no flag at all.

Every file is checked before any connection or work: it exists, can be read, and the three
load into a TLS context together (the CA parses, the key matches the certificate). Messages
name files and settings, never their content.
"""

from __future__ import annotations

import os
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Security

#: File names of a credentials folder (CA, certificate, key), tried in order: the names dask's
#: docs and certificate tools use, and those of a Kubernetes ``kubernetes.io/tls`` Secret.
FOLDER_LAYOUTS = (("ca.pem", "cert.pem", "key.pem"), ("ca.crt", "tls.crt", "tls.key"))

#: dask's configuration keys of a client's credentials (CA, certificate, key).
CONFIG_KEYS = (
    "distributed.comm.tls.ca-file",
    "distributed.comm.tls.client.cert",
    "distributed.comm.tls.client.key",
)

#: The roles of files that serve a whole cluster (a run's temporary credentials, a LocalCluster's).
ALL_ROLES = ("client", "scheduler", "worker")

#: How to give credentials, for the messages.
HOW_TO_GIVE = (
    "give the CA certificate, a client certificate and its key: --tls-ca/--tls-cert/--tls-key "
    "or --tls-dir on the command line, tls_directory in the flows, security=TLSFiles(...) in "
    "the library, or dask's config distributed.comm.tls.ca-file, .client.cert and .client.key "
    "(environment DASK_DISTRIBUTED__COMM__TLS__CA_FILE, DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT, "
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY)"
)


class TLSCredentialsError(ValueError):
    """TLS credentials that are missing, unreadable or do not fit together; before any work."""


def _shown(value) -> str:
    """A credential setting as a message may show it: a path, or a note for PEM text."""
    text = os.fspath(value)
    return "<PEM text held in memory>" if "\n" in text else repr(text)


@dataclass(frozen=True)
class TLSFiles:
    """The paths of a client's TLS credentials: plain data, safe to log (no key material).

    Parameters
    ----------
    ca_file : str
        The cluster's CA certificate (PEM).
    cert_file : str
        This client's certificate (PEM), signed by that CA.
    key_file : str
        The certificate's private key (PEM, unencrypted).
    """

    ca_file: str
    cert_file: str
    key_file: str

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, name: str = "tls_directory") -> TLSFiles:
        """The credentials in ``folder``, under the names of one of :data:`FOLDER_LAYOUTS`.

        Parameters
        ----------
        folder : str or path
            A folder holding the three files.
        name : str, default="tls_directory"
            How the folder was given, for the messages (``--tls-dir``).

        Returns
        -------
        TLSFiles

        Raises
        ------
        TLSCredentialsError
            Not a folder, or no complete set of names in it (the files found are named).
        """
        where = Path(folder)
        if not where.is_dir():
            reason = "does not exist" if not where.exists() else "is not a folder"
            raise TLSCredentialsError(f"{name} {os.fspath(folder)!r} {reason}.")
        for names in FOLDER_LAYOUTS:
            if all((where / part).exists() for part in names):
                return cls(*(str(where / part) for part in names))
        found = sorted(
            entry.name for entry in where.iterdir() if entry.suffix in (".pem", ".crt", ".key")
        )
        expected = " or ".join(", ".join(names) for names in FOLDER_LAYOUTS)
        raise TLSCredentialsError(
            f"{name} {os.fspath(folder)!r} holds no complete set of TLS credentials: expected "
            f"{expected}; found {', '.join(found) if found else 'no .pem, .crt or .key file'}."
        )

    def security(self, roles: tuple[str, ...] = ("client",)) -> Security:
        """A ``distributed.Security`` that requires encryption, with these files for ``roles``.

        Parameters
        ----------
        roles : tuple of str, default=("client",)
            Of ``"client"``, ``"scheduler"``, ``"worker"``: who presents the certificate (all
            three for a LocalCluster started with these files).

        Returns
        -------
        distributed.Security
        """
        from distributed import Security

        files = {"tls_ca_file": self.ca_file}
        for role in roles:
            files[f"tls_{role}_cert"] = self.cert_file
            files[f"tls_{role}_key"] = self.key_file
        return Security(require_encryption=True, **files)

    def dask_config(self) -> dict[str, str | bool]:
        """dask's configuration of a client with these credentials, encryption required.

        With it (``dask.config.set``, dask's YAML) a client joins a ``tls://`` scheduler with no
        flag or argument. Paths only, never key material.

        Returns
        -------
        dict
            ``distributed.comm.require-encryption``, and :data:`CONFIG_KEYS` to the paths.
        """
        paths = dict(zip(CONFIG_KEYS, astuple(self), strict=True))
        return {"distributed.comm.require-encryption": True, **paths}

    def environment(self) -> dict[str, str]:
        """:meth:`dask_config` as dask's environment variables, for a subprocess.

        Returns
        -------
        dict
            ``DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION``, ``..._TLS__CA_FILE`` and the others.
        """
        return {
            "DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
            for key, value in self.dask_config().items()
        }


def credentials_folder(folder: str | os.PathLike, *, name: str = "tls_directory") -> TLSFiles:
    """The credentials in ``folder`` (:meth:`TLSFiles.from_folder`), checked before any use.

    Parameters
    ----------
    folder : str or path
        A folder holding them under the names of :data:`FOLDER_LAYOUTS`.
    name : str, default="tls_directory"
        How the folder was given, for the messages (``--tls-dir``).

    Returns
    -------
    TLSFiles
        Files that load together (to dask: its ``security``, ``dask_config``, ``environment``).

    Raises
    ------
    TLSCredentialsError
        Not a folder, no complete set of names in it, or files that do not load together.
    """
    files = TLSFiles.from_folder(folder, name=name)
    labels = (f"{name}'s CA", f"{name}'s certificate", f"{name}'s key")
    check_credentials(files.security(), dict(zip(labels, astuple(files), strict=True)))
    return files


def tls_files(
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    folder: str | None = None,
    *,
    names: tuple[str, str, str, str] = ("ca_file", "cert_file", "key_file", "folder"),
) -> TLSFiles | None:
    """The credentials given as three files or as a folder, checked; None if none is given.

    Parameters
    ----------
    ca_file, cert_file, key_file : str, optional
        The three files: all or none of them.
    folder : str, optional
        A folder holding them (:func:`credentials_folder`), instead of the files.
    names : tuple of str
        How the four were given, for the messages (``("--tls-ca", "--tls-cert", "--tls-key",
        "--tls-dir")`` for the CLI).

    Returns
    -------
    TLSFiles or None

    Raises
    ------
    TLSCredentialsError
        Some files but not all, files and a folder, a file missing or unreadable, or files that
        do not load together (:func:`check_credentials`).
    """
    given = [value is not None for value in (ca_file, cert_file, key_file)]
    if folder is not None and any(given):
        raise TLSCredentialsError(
            f"give either {names[3]} or {names[0]}, {names[1]} and {names[2]}, not both."
        )
    if folder is not None:
        return credentials_folder(folder, name=names[3])
    if not any(given):
        return None
    if not all(given):
        missing = [name for name, present in zip(names, given, strict=False) if not present]
        raise TLSCredentialsError(
            f"{' and '.join(missing)} missing: TLS needs all three of {names[0]}, {names[1]} and "
            f"{names[2]} (or {names[3]})."
        )
    files = TLSFiles(os.fspath(ca_file), os.fspath(cert_file), os.fspath(key_file))
    check_credentials(files.security(), dict(zip(names[:3], astuple(files), strict=True)))
    return files


def check_credentials(security: Security, sources: dict[str, str | None]) -> None:
    """Refuse a client ``security`` whose files are missing, unreadable or do not fit together.

    Parameters
    ----------
    security : distributed.Security
        The client's (its CA, client certificate and key are checked).
    sources : dict
        How each credential was given (``{"--tls-ca": path, ...}``, or dask's config keys),
        for the messages; PEM text held in memory is never shown.

    Raises
    ------
    TLSCredentialsError
        A file missing or unreadable, or a TLS context that cannot be built from them (not
        PEM, a key that is not the certificate's).
    """
    import ssl

    for name, value in sources.items():
        if value is None or "\n" in os.fspath(value):
            continue
        path = Path(value)
        if not path.is_file():
            reason = "no such file" if not path.exists() else "not a regular file"
            raise TLSCredentialsError(f"{name} {_shown(value)}: {reason}.")
        try:
            with open(path, "rb"):
                pass
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise TLSCredentialsError(f"{name} {_shown(value)} cannot be read: {reason}.") from None
    try:
        security.get_connection_args("client")
    except (OSError, ssl.SSLError, ValueError) as err:
        named = ", ".join(f"{name} {_shown(value)}" for name, value in sources.items() if value)
        reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or str(err)
        raise TLSCredentialsError(
            f"the TLS credentials ({named}) do not load: {reason}. The CA and the certificate "
            "must be PEM certificates and the key the certificate's own, unencrypted."
        ) from None


def config_credentials() -> tuple[Security, dict[str, str | None]]:
    """The client credentials of dask's configuration: a ``Security`` and where each came from.

    Returns
    -------
    tuple
        ``(distributed.Security(), {config key: value or None})``.
    """
    import dask
    from distributed import Security

    sources = {key: dask.config.get(key, None) for key in CONFIG_KEYS}
    return Security(), sources


def scheme(address: str) -> str | None:
    """The scheme of a scheduler address (``"tls"`` of ``tls://host:8786``), None without one.

    Parameters
    ----------
    address : str

    Returns
    -------
    str or None
    """
    head, separator, _ = address.partition("://")
    return head.lower() if separator else None


def client_security(
    address: str, security: Security | TLSFiles | bool | None = None
) -> tuple[str, Security | None]:
    """The address to connect to and the ``distributed.Security`` to connect with, checked.

    Parameters
    ----------
    address : str
        The scheduler's address.
    security : distributed.Security, TLSFiles, bool or None
        ``None``: dask's configuration (``distributed.comm.tls.*``); used when it names a CA
        and a client certificate (or left to distributed's ``distributed.client.security-loader``
        when one is configured). A ``TLSFiles`` or ``Security``: those credentials (the
        address must then be ``tls://``; one without a scheme gets it). ``False``: no TLS.

    Returns
    -------
    tuple
        ``(address, security)``: the address to connect to (``tls://`` added to one without a
        scheme when credentials are given) and the ``Security``, or None.

    Raises
    ------
    TLSCredentialsError
        A ``tls://`` address with no credentials (what is missing, how to give it); credentials
        given for a ``tcp://`` address; files missing, unreadable or not fitting together.
    """
    from distributed import Security

    kind = scheme(address)
    if security is False:
        if kind == "tls":
            raise TLSCredentialsError(
                f"the scheduler address {address!r} is tls://, but TLS was turned off "
                "(security=False): give credentials instead."
            )
        return address, None
    if security is None or security is True:
        import dask

        if dask.config.get("distributed.client.security-loader", None):
            return address, None  # distributed's Client calls the configured loader
        security, sources = config_credentials()
        if not (security.tls_ca_file and security.tls_client_cert):
            if kind == "tls":
                missing = [key for key, value in sources.items() if not value]
                raise TLSCredentialsError(
                    f"the scheduler address {address!r} is tls://, but no TLS credentials were "
                    f"given (dask's config has no {', '.join(missing)}): {HOW_TO_GIVE}."
                )
            return address, None
        check_credentials(security, sources)
        return address, security
    if isinstance(security, TLSFiles):
        labels = ("ca_file", "cert_file", "key_file")
        sources = dict(zip(labels, astuple(security), strict=True))
        security = security.security()
    elif isinstance(security, Security):
        sources = {
            "tls_ca_file": security.tls_ca_file,
            "tls_client_cert": security.tls_client_cert,
            "tls_client_key": security.tls_client_key,
        }
    else:
        raise TypeError(
            "security must be a distributed.Security, a TLSFiles, True, False or None, not a "
            f"{type(security).__name__}."
        )
    if kind is None:
        address = f"tls://{address}"
    elif kind != "tls":
        raise TLSCredentialsError(
            f"TLS credentials were given, but the scheduler address {address!r} is {kind}://: "
            "use its tls:// address (the scheduler must listen with TLS), or leave the "
            "credentials out."
        )
    if not (security.tls_ca_file and security.tls_client_cert):
        raise TLSCredentialsError(
            f"the Security given for {address!r} has no CA file or no client certificate: "
            f"{HOW_TO_GIVE}."
        )
    check_credentials(security, sources)
    return address, security
