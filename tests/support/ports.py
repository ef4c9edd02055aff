"""Free loopback ports for test servers: one number free for both UDP and TCP."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port number that is free for UDP and TCP at the same time on `host`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port found")
