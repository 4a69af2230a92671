"""Certificates for a Dask cluster with TLS and mutual authentication.

Writes a fresh certificate authority and one certificate per role, each in its own directory
holding only what that role needs::

    OUT/scheduler/{ca.pem,cert.pem,key.pem}   the scheduler
    OUT/worker/{ca.pem,cert.pem,key.pem}      the Dask workers (and their nannies)
    OUT/client/{ca.pem,cert.pem,key.pem}      the flow runner / CLI (the Dask client)

Every Dask endpoint verifies its peer against ``ca.pem`` (mutual TLS), so a process without a
certificate signed by this CA can neither join as a worker nor submit work as a client. The
CA's private key is never written: nobody, this script included, can sign another certificate
later. To add or replace a role, run the script again with ``--force`` and restart the
cluster (all roles get new certificates).

Used by deploy/docker/docker-compose.yml (the one-shot ``certs`` service writes into the
``dask-tls`` volume) and for Kubernetes (run it anywhere, then ``kubectl create secret generic
diaggmm-dask-tls-<role> --from-file=<OUT>/<role>``; see deploy/README.md). Needs only the
``cryptography`` package, which Prefect already depends on.

Usage: ``python make_certs.py OUT [--days 365] [--force]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Roles and the DNS names their certificates carry (Dask does not check host names; the
#: names help a human reading the certificate, and any TLS client that does check them).
ROLES = {
    "scheduler": ["scheduler", "diaggmm-scheduler", "localhost"],
    "worker": ["dask-worker", "localhost"],
    "client": ["diaggmm-client"],
}


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "diaggmm-dist"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode: a key is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)


def make_certs(out: str | os.PathLike, *, days: int = 365, force: bool = False) -> list[Path]:
    """Write a CA certificate and a signed certificate and key per role under ``out``.

    Parameters
    ----------
    out : str or os.PathLike
        Directory to write ``<role>/{ca.pem,cert.pem,key.pem}`` into; created if missing.
    days : int, default 365
        Validity of every certificate, from now.
    force : bool, default False
        Replace existing certificates. Without it, an ``out`` that already holds them is
        left as it is (so that restarting the compose set-up keeps the running cluster's).

    Returns
    -------
    list of pathlib.Path
        The files written; empty when ``out`` already had certificates and ``force`` is False.
    """
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    root = Path(out)
    if not force and all((root / role / "cert.pem").is_file() for role in ROLES):
        return []
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("diaggmm-dist Dask CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    written = []
    for role, names in ROLES.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"diaggmm-dist Dask {role}"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            # Every Dask process is both a TLS server and a TLS client (workers dial the
            # scheduler and each other; the scheduler dials workers).
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        directory = root / role
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for name, data, mode in (
            ("ca.pem", ca_pem, 0o644),
            ("cert.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644),
            ("key.pem", key_pem, 0o600),
        ):
            _write(directory / name, data, mode)
            written.append(directory / name)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: ``make_certs.py OUT [--days N] [--force]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="directory for <role>/{ca.pem,cert.pem,key.pem}")
    parser.add_argument("--days", type=int, default=365, help="validity in days (365)")
    parser.add_argument("--force", action="store_true", help="replace existing certificates")
    args = parser.parse_args(argv)
    try:
        written = make_certs(args.out, days=args.days, force=args.force)
    except (ValueError, OSError) as exc:
        print(f"make_certs: {exc}", file=sys.stderr)
        return 2
    if written:
        print(f"wrote {len(written)} files under {args.out} (roles: {', '.join(ROLES)})")
    else:
        print(f"{args.out} already has certificates; kept them (--force to replace)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
