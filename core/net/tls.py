"""SIP over TLS (RFC 3261 §26.2.1, RFC 5630): contexts, certificate reload, handshake limits.

The TLS listener accepts sockets itself (`sock_accept`) and starts each handshake with
`connect_accepted_socket`, for three reasons:

- the source address is known before any TLS work is done, so a banned source, or one at
  the transport's connection cap per source (handshakes under way count towards it), is
  reset at once; and the handshakes under way are counted per source and in all
  (`HandshakeGate`): a thousand connections that send half a ClientHello and stop cost one
  source its own slots, never another phone its handshake;
- the handshake has its own deadline (`handshake_timeout`), shorter than the TCP idle limit;
- each handshake uses the context serving at that moment, so a renewed certificate is in
  force for the next connection without a restart, while connections already up keep theirs.

After the handshake the connection is an ordinary stream connection of `core/net/transport.py`:
the same framing, caps, CRLF keep-alives (RFC 5626 §4.4.1) and idle sweep as TCP, and its
flow's transport is "tls", so Via says SIP/2.0/TLS and responses and in-dialog requests go
back on it (RFC 5923 connection reuse).

Versions and ciphers follow the common "intermediate" server profile: TLS 1.2 and 1.3 only;
for TLS 1.2 ECDHE key exchange with AEAD ciphers (forward secrecy, no CBC, no RSA key
transport); TLS 1.3's suites are all AEAD and left at OpenSSL's defaults. No compression
(CRIME) and no renegotiation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.settings import TlsSettings

log = logging.getLogger("pbxtui.tls")

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
MAX_SERVER_NAMES = 4_096
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: a refused connection is reset at once

# (action, source address, detail): a security event for the feed and the security log.
SecurityReport = Callable[[str, str, str], None]


class TlsError(Exception):
    """A certificate, key or CA file that cannot be used; the message says which and why."""


def _unmapped(ip: str) -> str:
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def server_context(
    certificate: str | Path, key: str | Path, client_ca: str | None = None
) -> ssl.SSLContext:
    """A server context for the listener; TlsError naming the file when the pair is unusable
    (missing, unreadable, not PEM, or a key that does not match the certificate).

    `client_ca` ("" for the system store, None for no request): ask peers for a certificate,
    verified against it, so carriers can be told by their certificate's subject. Optional:
    phones send none and are served as before."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    if client_ca is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
        try:
            if client_ca:
                context.load_verify_locations(cafile=client_ca)
            else:
                context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        except (ssl.SSLError, OSError) as error:
            raise TlsError(f"{client_ca}: not a usable CA file ({error})") from None
    for path in (certificate, key):
        if not os.path.isfile(path):
            raise TlsError(f"{path}: no such file")
        if not os.access(path, os.R_OK):
            raise TlsError(f"{path}: permission denied")
    try:
        context.load_cert_chain(str(certificate), str(key))
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None) or str(error)
        raise TlsError(
            f"{certificate} / {key}: not a usable certificate and key pair ({reason})"
        ) from None
    return context


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context for connections we open (carrier gateways): the server's certificate is
    verified against `ca_file` or the system store, and its name checked (RFC 5922 §7.2);
    a client certificate is presented when configured (mutual TLS)."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # CERT_REQUIRED, check_hostname
    try:
        if settings.ca_file:
            context.load_verify_locations(cafile=settings.ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if settings.client_certificate:
            context.load_cert_chain(
                settings.client_certificate, settings.client_key or settings.client_certificate
            )
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
        raise TlsError(f"[tls] ca_file / client_certificate: cannot be used ({reason})") from None
    return context


@dataclass(frozen=True, slots=True)
class _FileStamp:
    """What tells a file was replaced or rewritten: certbot swaps symlinks to new files."""

    inode: int
    size: int
    mtime_ns: int


def _stamp(path: Path) -> _FileStamp | None:
    try:
        status = os.stat(path)  # follows the symlink, as certbot's live/ directory needs
    except OSError:
        return None
    return _FileStamp(status.st_ino, status.st_size, status.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Reloaded:
    """The outcome of a reload: `ok` False means the old pair is still serving."""

    ok: bool
    message: str


class ServerCertificate:
    """The certificate and key serving now, and a reload that never replaces them with a bad
    pair."""

    def __init__(
        self, certificate: str | Path, key: str | Path, client_ca: str | None = None
    ) -> None:
        self.certificate = Path(certificate)
        self.key = Path(key)
        self.client_ca = client_ca
        self.context: ssl.SSLContext | None = None
        self._stamps: tuple[_FileStamp | None, _FileStamp | None] = (None, None)
        self.loads = 0

    def _current_stamps(self) -> tuple[_FileStamp | None, _FileStamp | None]:
        return _stamp(self.certificate), _stamp(self.key)

    def load(self) -> None:
        """The first load; TlsError when the pair is unusable (the server must not start)."""
        stamps = self._current_stamps()
        self.context = server_context(self.certificate, self.key, self.client_ca)
        self._stamps = stamps
        self.loads += 1

    def reload(self) -> Reloaded:
        """Load the pair again (SIGHUP, or the files changed). A bad pair leaves the old one."""
        stamps = self._current_stamps()
        try:
            context = server_context(self.certificate, self.key, self.client_ca)
        except TlsError as error:
            # Remember the stamps anyway: one error line per change, not one per check.
            self._stamps = stamps
            return Reloaded(False, f"TLS certificate not reloaded, the old one serves on: {error}")
        self.context = context
        self._stamps = stamps
        self.loads += 1
        return Reloaded(True, f"TLS certificate reloaded from {self.certificate}")

    def reload_if_changed(self) -> Reloaded | None:
        """Reload when either file changed since the last attempt; None when neither did."""
        if self._current_stamps() == self._stamps:
            return None
        return self.reload()


def parse_carrier_subjects(entries: tuple[str, ...]) -> dict[str, str]:
    """`("acme=sbc.acme.example",)` → {"acme": "sbc.acme.example"}; ValueError when an entry
    is not CARRIER=NAME."""
    subjects: dict[str, str] = {}
    for entry in entries:
        carrier, equals, name = entry.partition("=")
        if not equals or not carrier.strip() or not name.strip():
            raise ValueError(f"{entry!r} is not CARRIER=NAME")
        subjects[carrier.strip()] = name.strip().lower()
    return subjects


def certificate_names(peercert: object) -> tuple[str, ...]:
    """The names a verified peer certificate (`getpeercert()`) vouches for: subject CN and
    subjectAltName DNS / IP entries, lower case. Empty when there is none."""
    if not isinstance(peercert, dict):
        return ()
    names: list[str] = []
    for rdn in peercert.get("subject", ()):
        names += [str(value).lower() for key, value in rdn if key == "commonName"]
    names += [
        str(value).lower()
        for kind, value in peercert.get("subjectAltName", ())
        if kind in ("DNS", "IP Address")
    ]
    return tuple(dict.fromkeys(names))


class HandshakeGate:
    """Handshakes under way, per source address and in all, with a cap on each."""

    def __init__(self, per_source: int, total: int) -> None:
        self.per_source = per_source
        self.total = total
        self._by_source: dict[str, int] = {}
        self._under_way = 0
        self.refused = 0

    @property
    def under_way(self) -> int:
        return self._under_way

    def under_way_from(self, ip: str) -> int:
        return self._by_source.get(ip, 0)

    def admit(self, ip: str) -> bool:
        count = self._by_source.get(ip, 0)
        if count >= self.per_source or self._under_way >= self.total:
            self.refused += 1
            return False
        self._by_source[ip] = count + 1
        self._under_way += 1
        return True

    def release(self, ip: str) -> None:
        count = self._by_source.get(ip, 0)
        if count <= 1:
            self._by_source.pop(ip, None)
        else:
            self._by_source[ip] = count - 1
        self._under_way = max(0, self._under_way - 1)


class TlsLayer:
    """Everything TLS the transport needs: the serving certificate, the handshake gate, the
    client context for carriers, and the names to verify their certificates against."""

    def __init__(self, settings: TlsSettings, report: SecurityReport | None = None) -> None:
        self.settings = settings
        self.certificate: ServerCertificate | None = None
        if settings.certificate:
            self.certificate = ServerCertificate(
                settings.certificate,
                settings.key or settings.certificate,
                settings.ca_file if settings.carrier_subjects else None,
            )
        self.gate = HandshakeGate(settings.max_handshakes_per_source, settings.max_handshakes)
        self._client: ssl.SSLContext | None = None
        # Carrier gateways by resolved address → the host name their certificate must carry.
        self._server_names: dict[tuple[str, int], str] = {}
        self.report: SecurityReport = report or (lambda action, source, detail: None)
        self.handshakes = 0
        self.handshake_failures = 0
        self.handshake_timeouts = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def load(self) -> None:
        """Load the certificate and the client context; TlsError if either is unusable."""
        if self.certificate is not None:
            self.certificate.load()
        self._client = client_context(self.settings)

    @property
    def client(self) -> ssl.SSLContext:
        """Loaded by `load` at start (where a bad CA file is a start error)."""
        if self._client is None:
            self._client = client_context(self.settings)
        return self._client

    # -- names for outbound verification ---------------------------------------------------
    def expect_name(self, remote: tuple[str, int], name: str) -> None:
        """The certificate of the server at `remote` must carry `name` (a gateway's host)."""
        if remote not in self._server_names and len(self._server_names) >= MAX_SERVER_NAMES:
            self._server_names.pop(next(iter(self._server_names)))
        self._server_names[remote] = name

    def server_name(self, remote: tuple[str, int]) -> str:
        """The name to check: the configured host name, else the address itself (an IP
        SAN)."""
        return self._server_names.get(remote, remote[0])

    # -- the server side -------------------------------------------------------------------
    def serve(
        self,
        listener: socket.socket,
        make_protocol: Callable[[], asyncio.Protocol],
        refuse: Callable[[str], bool],
        on_refused: Callable[[], None],
    ) -> asyncio.Task[None]:
        """Accept on a listening socket for as long as the task runs; each connection gets
        its handshake (`make_protocol()` sees connection_made once it is done). `refuse(ip)`
        is asked first (the transport's ban and connection caps); `on_refused()` is told of
        every connection reset unserved."""
        return asyncio.create_task(
            self._accept_loop(listener, make_protocol, refuse, on_refused), name="tls-accept"
        )

    async def _accept_loop(
        self,
        listener: socket.socket,
        make_protocol: Callable[[], asyncio.Protocol],
        refuse: Callable[[str], bool],
        on_refused: Callable[[], None],
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as error:  # EMFILE and the like: wait, do not spin
                log.warning("TLS accept failed: %s", error)
                await asyncio.sleep(0.1)
                continue
            ip = _unmapped(str(address[0]))
            context = self.certificate.context if self.certificate is not None else None
            # The gate last: it takes a slot when it admits.
            if context is None or refuse(ip) or not self.gate.admit(ip):
                on_refused()
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                sock.close()
                continue
            task = asyncio.create_task(self._handshake(sock, make_protocol, context, ip))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handshake(
        self,
        sock: socket.socket,
        make_protocol: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        ip: str,
    ) -> None:
        """The handshake with the context serving when the connection was accepted; the
        gate's slot is held until it ends, whichever way."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.handshake_timeout
        started = loop.time()
        try:
            await loop.connect_accepted_socket(
                make_protocol, sock, ssl=context, ssl_handshake_timeout=timeout
            )
        except (TimeoutError, OSError) as error:
            # asyncio reports its handshake deadline as ConnectionAbortedError: tell it by
            # the time taken.
            if isinstance(error, TimeoutError) or loop.time() - started >= timeout:
                self.handshake_timeouts += 1
            else:
                self.handshake_failures += 1
            log.debug("TLS handshake from %s failed: %r", ip, error)
            sock.close()
            return
        except Exception as error:  # whatever a hostile peer triggers, never the task's end
            self.handshake_failures += 1
            log.debug("TLS handshake from %s failed: %r", ip, error)
            sock.close()
            return
        finally:
            self.gate.release(ip)
        self.handshakes += 1

    # -- the client side -------------------------------------------------------------------
    def connect_failed(self, remote: tuple[str, int], error: BaseException) -> None:
        """A connection we opened failed: a certificate that does not verify is a security
        event naming the reason (expired, wrong host, unknown issuer)."""
        if isinstance(error, ssl.SSLCertVerificationError):
            detail = error.verify_message or str(error)
            self.report(
                "tls-verify-failed",
                remote[0],
                f"certificate of {self.server_name(remote)} ({remote[0]}:{remote[1]}) "
                f"refused: {detail}",
            )
        elif isinstance(error, ssl.SSLError):
            self.report(
                "tls-failed", remote[0], f"TLS to {remote[0]}:{remote[1]} failed: {error.reason}"
            )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def watch_certificate(
    layer: TlsLayer, publish: Callable[[Reloaded], None], interval: float
) -> None:
    """Reload the serving certificate whenever its files change (a renewal by certbot or
    acme.sh), for as long as the server runs."""
    certificate = layer.certificate
    if certificate is None:
        return
    while True:
        await asyncio.sleep(interval)
        result = certificate.reload_if_changed()
        if result is not None:
            publish(result)
