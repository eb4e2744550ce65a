"""A certificate per server start for tls = true: PostgreSQL and PgBouncer serve it, clients require it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from connbench.services.procs import PrivateDir


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def issue_tls(private: PrivateDir, prefix: str) -> TlsFiles:
    """A CA and a certificate for 127.0.0.1 made for this start (trustme), served by PostgreSQL and PgBouncer.
    In the private directory, never the run directory: the key is a secret (0600, the service user's)."""
    import trustme  # only runs with tls = true pay for the import

    # RSA 2048, what most servers (and managed PostgreSQL) present; trustme's default ECDSA is cheaper
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.RSA)
    return TlsFiles(private.write(f"{prefix}-ca.pem", ca.cert_pem.bytes().decode()),
                    private.write(f"{prefix}-server.crt", leaf.cert_chain_pems[0].bytes().decode()),
                    private.write(f"{prefix}-server.key", leaf.private_key_pem.bytes().decode()))
