"""Test certificates made with the openssl CLI: a private CA, leaves it signs (right host,
wrong host, expired), and key/certificate pairs that do not match.

Each is a real X.509 file the server and clients load as they would in production; nothing
is mocked. openssl's `ca` command is used for the leaves because it alone can set any
validity window (an expired certificate needs a notAfter in the past).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_CA_CONFIG = """\
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir
serial = $dir/serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[ any ]
commonName = supplied
"""


def _openssl(*args: str, cwd: Path | None = None) -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl CLI is needed to make test certificates"
    subprocess.run([openssl, *args], check=True, capture_output=True, cwd=cwd, timeout=60)


@dataclass(frozen=True)
class Pair:
    certificate: Path
    key: Path


class TestCa:
    """A CA in a directory: `ca.pem` is what clients and the server trust."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "pbxtui test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.certificate = directory / "ca.pem"
        self.key = directory / "ca-key.pem"
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
            f"/CN={name}", "-keyout", str(self.key), "-out", str(self.certificate),
        )  # fmt: skip
        (directory / "index.txt").write_text("")
        (directory / "serial").write_text("1000\n")
        self.config = directory / "ca.cnf"
        self.config.write_text(_CA_CONFIG.format(dir=directory))
        self._count = 0

    def issue(
        self,
        name: str,
        *,
        alt_names: tuple[str, ...] = (),
        start: str | None = None,
        end: str | None = None,
    ) -> Pair:
        """A leaf for CN=`name` with subjectAltName `alt_names` (default: DNS:`name`);
        `start`/`end` as YYMMDDHHMMSSZ for a chosen validity window."""
        self._count += 1
        stem = self.directory / f"leaf{self._count}"
        key, request, certificate = (
            stem.with_suffix(".key"),
            stem.with_suffix(".csr"),
            stem.with_suffix(".pem"),
        )
        alt = ",".join(alt_names or (f"DNS:{name}",))
        _openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-addext", f"subjectAltName={alt}", "-keyout", str(key), "-out", str(request),
        )  # fmt: skip
        validity = ["-startdate", start or "200101000000Z", "-enddate", end or "491231000000Z"]
        _openssl(
            "ca", "-batch", "-config", str(self.config), "-cert", str(self.certificate),
            "-keyfile", str(self.key), "-in", str(request), "-out", str(certificate),
            "-notext", *validity,
        )  # fmt: skip
        return Pair(certificate, key)
