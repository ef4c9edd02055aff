"""A real `pbxtui --headless` service in a subprocess, and the CLI run against it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from support.ports import free_port

DOMAIN = "pbx.test"
# SIPp 3.6 answers MD5 challenges only; the flood limit is high enough for SIPp's bursts.
BASE_CONFIG = """\
[server]
domain = "pbx.test"

[auth]
algorithms = ["MD5"]

[security]
flood_limit = {flood_limit}
"""


@dataclass
class ServiceProcess:
    process: subprocess.Popen[str]
    stderr: TextIO
    db: Path
    config: Path
    port: int
    log: list[str] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def global_options(self) -> list[str]:
        return ["--config", str(self.config), "--db", str(self.db)]

    def read_log(self) -> str:
        """Everything the service wrote to stderr so far (non-blocking)."""
        while True:
            line = self.stderr.readline()
            if not line:
                break
            self.log.append(line)
        return "".join(self.log)

    async def wait_for_log(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.read_log()
            if needle in text:
                return text
            if self.process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"{needle!r} not in the service's log:\n{self.read_log()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(5)

    def close(self) -> None:
        self.stop()
        self.stderr.close()


async def start_service(
    tmp_path: Path,
    *,
    flood_limit: int = 1_000,
    env: dict[str, str] | None = None,
    extra: list[str] | None = None,
    journal: bool = False,
) -> ServiceProcess:
    """The service on a free port; `journal`: its stderr looks like journald's stream
    (`$JOURNAL_STREAM` names the pipe), as under systemd."""
    port = free_port()
    config = tmp_path / "pbxtui.toml"
    config.write_text(BASE_CONFIG.format(flood_limit=flood_limit))
    db = tmp_path / "pbx.db"
    command = [
        sys.executable,
        "-m",
        "pbxtui",
        "--headless",
        "--config",
        str(config),
        "--db",
        str(db),
        "--listen",
        f"udp:127.0.0.1:{port}",
        "--listen",
        f"tcp:127.0.0.1:{port}",
        *(extra or []),
    ]
    environment = {**os.environ, **(env or {})}
    environment.pop("JOURNAL_STREAM", None)
    read_end, write_end = os.pipe()
    if journal:
        status = os.fstat(write_end)
        environment["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
    process = subprocess.Popen(command, stderr=write_end, text=True, env=environment)
    os.close(write_end)
    os.set_blocking(read_end, False)
    stderr = open(read_end, encoding="utf-8")  # noqa: SIM115  # closed by ServiceProcess.close
    service = ServiceProcess(process, stderr, db, config, port)
    await service.wait_for_log("pbxtui ready")
    return service


async def cli(service: ServiceProcess, *args: str) -> tuple[int, str, str]:
    """`pbxtui ARGS` against the service's database: (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pbxtui",
        *args,
        *service.global_options(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode(), err.decode()
