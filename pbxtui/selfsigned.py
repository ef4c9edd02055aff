"""`pbxtui tls selfsigned`: a certificate and key to try SIP over TLS before a real one exists.

Made with the `openssl` command-line tool, which every Linux server that runs pbxtui has
(the ssl module in the standard library can use certificates but cannot make them, and the
`cryptography` package would be a compiled dependency for a one-off testing aid). The key is
RSA 2048: desk phones that predate ECDSA certificates still accept it. The certificate names
the SIP domain and any other names or addresses given, in subjectAltName (RFC 5922 §7.1).

Phones verify the server's certificate against public CAs; a self-signed one makes them warn
or refuse until it is imported or verification is turned off. For production use a
certificate from a public CA (e.g. Let's Encrypt's fullchain.pem and privkey.pem).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

SELF_SIGNED_WARNING = (
    "this certificate is self-signed: phones will warn about it or refuse it until you "
    "import it on each phone or turn certificate checks off there. Use it for testing only; "
    "for real phones use a CA-issued certificate (e.g. Let's Encrypt's fullchain.pem and "
    "privkey.pem)."
)
OPENSSL_TIMEOUT = 60.0


class SelfSignedError(Exception):
    """The pair could not be made; the message says why."""


def subject_alt_names(names: list[str]) -> str:
    """`DNS:pbx.example.com,IP:192.0.2.10`: addresses as IP entries, the rest as DNS."""
    entries = []
    for name in dict.fromkeys(names):
        try:
            ipaddress.ip_address(name)
        except ValueError:
            entries.append(f"DNS:{name}")
        else:
            entries.append(f"IP:{name}")
    return ",".join(entries)


def make_self_signed(certificate: Path, key: Path, names: list[str], days: int) -> None:
    """Write a self-signed certificate for `names` (the first is the CN) and its key (mode
    0600). Raises SelfSignedError when openssl is missing or fails."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SelfSignedError("the openssl command is needed (apt-get install openssl)")
    if not names:
        raise SelfSignedError("name at least one host name or address")
    for path in (certificate, key):
        path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-sha256",
        "-nodes",
        "-days",
        str(days),
        "-subj",
        f"/CN={names[0]}",
        "-addext",
        f"subjectAltName={subject_alt_names(names)}",
        "-addext",
        "extendedKeyUsage=serverAuth,clientAuth",
        "-keyout",
        str(key),
        "-out",
        str(certificate),
    ]
    old_umask = os.umask(0o077)  # the key is never readable by others, not even briefly
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SelfSignedError(f"openssl failed: {error}") from None
    finally:
        os.umask(old_umask)
    if result.returncode != 0:
        lines = (result.stderr or "").strip().splitlines()
        raise SelfSignedError(f"openssl failed: {lines[-1] if lines else result.returncode}")
    certificate.chmod(0o644)
