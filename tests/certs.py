"""Test certificates made with the ``openssl`` command: a CA, a server certificate for
``localhost`` (SAN ``DNS:localhost``, ``IP:127.0.0.1``) and a client certificate whose common
name is a user name (for SASL EXTERNAL).

``make_certs(folder, client_cn)`` writes them into ``folder`` and returns their paths.  Keys
are EC P-256 (quick to make); certificates carry the key identifiers and usages that strict
X.509 verification (Python 3.13's default ``VERIFY_X509_STRICT``) asks for.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certs", "make_certs"]


@dataclass(frozen=True)
class Certs:
    folder: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_cn: str


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    result = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _leaf(folder: Path, name: str, subject: str, extensions: str, ca: str = "ca", days: int = 30) -> None:
    (folder / f"{name}.ext").write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n" + extensions
    )
    _openssl("req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=folder)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", str(days), "-sha256",
        "-extfile", f"{name}.ext", cwd=folder,
    )


def make_certs(folder: Path, client_cn: str = "leveret-tls-client", days: int = 30) -> Certs:
    """Write ca.pem, server.pem/.key and client.pem/.key into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", str(days), "-sha256",
        "-subj", f"/O=leveret tests/CN=leveret test CA {folder.name}",
        "-addext", "basicConstraints = critical, CA:TRUE",
        "-addext", "keyUsage = critical, keyCertSign, cRLSign",
        "-addext", "subjectKeyIdentifier = hash",
        cwd=folder,
    )
    _leaf(folder, "server", "/O=leveret tests/CN=localhost",
          "keyUsage = critical, digitalSignature\n"
          "extendedKeyUsage = serverAuth\n"
          "subjectAltName = DNS:localhost, IP:127.0.0.1\n")
    _leaf(folder, "client", f"/O=leveret tests/CN={client_cn}",
          "keyUsage = critical, digitalSignature\n"
          "extendedKeyUsage = clientAuth\n")
    return Certs(
        folder=folder,
        ca_cert=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        client_cn=client_cn,
    )
