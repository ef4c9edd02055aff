"""Debian's rtpengine daemon for tests: userspace forwarding (no kernel table), loopback
only, from a config file of its own (the packaged /etc/rtpengine/rtpengine.conf binds no
loopback address). Missing, it fails the test: it is part of the CI packages (.ci/run)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.ports import free_port


@contextmanager
def rtpengine_daemon(
    tmp_path: Path, port_min: int = 44000, port_max: int = 44200, timeout: int = 60
) -> Iterator[int]:
    """Runs rtpengine; yields its ng control port on 127.0.0.1. `timeout`: seconds without
    media before rtpengine ends a call's session itself."""
    binary = shutil.which("rtpengine")
    assert binary is not None, "rtpengine is not installed (apt-get install rtpengine-daemon)"
    port = free_port()
    config = tmp_path / "rtpengine.conf"
    config.write_text(
        "[rtpengine]\ntable = -1\ninterface = 127.0.0.1\n"
        f"listen-ng = 127.0.0.1:{port}\nport-min = {port_min}\nport-max = {port_max}\n"
        "log-level = 5\nlog-stderr = true\nforeground = true\n"
        # Ranked learning like the embedded relay's (SDP address, its IP, any), after which
        # `strict-source` drops every other source (see core/media/rtpengine.py); deleted
        # calls go at once.
        f"endpoint-learning = heuristic\ndelete-delay = 0\ntimeout = {timeout}\n"
    )
    with (tmp_path / "rtpengine.log").open("w") as log:
        daemon = subprocess.Popen(
            [binary, f"--config-file={config}", f"--pidfile={tmp_path / 'rtpengine.pid'}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield port
        finally:
            daemon.terminate()
            daemon.wait(10)
