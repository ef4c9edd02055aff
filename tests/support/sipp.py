"""Running SIPp against a server under test, without blocking the server's event loop.

SIPp runs as a real process over real loopback sockets. Each run is bounded by a call count
(`-m`) and a global timeout, so a wedged server fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).resolve().parent.parent / "sipp"


def sipp_binary() -> str:
    """Path to sipp. In CI a missing SIPp fails the test; elsewhere it skips it."""
    path = shutil.which("sipp")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("sipp is not installed (apt-get install sip-tester)")
        pytest.skip("sipp is not installed (apt-get install sip-tester)")
    return path


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    successful: int
    failed: int

    def __str__(self) -> str:
        return (
            f"sipp exit {self.returncode}: {self.successful} ok, {self.failed} failed\n"
            f"{self.stderr[-3000:]}"
        )


def _count(stat_text: str, name: str) -> int:
    """Read 'Successful call' / 'Failed call' totals from SIPp's final screen."""
    for line in stat_text.splitlines():
        if line.strip().startswith(name):
            parts = [part.strip() for part in line.split("|")]
            numbers = [part for part in parts if part.isdigit()]
            if numbers:
                return int(numbers[-1])
    return 0


async def run_sipp(
    scenario: str,
    host: str,
    port: int,
    *,
    transport: str = "udp",
    calls: int = 1,
    rate: float = 10,
    local_ip: str = "127.0.0.1",
    local_port: int | None = None,
    inf: Path | None = None,
    keys: dict[str, str] | None = None,
    timeout: float = 20,
    extra: list[str] | None = None,
    users: int | None = None,
    background: bool = False,
) -> SippResult:
    """Run a scenario from tests/sipp (or a built-in one like 'uas') to completion."""
    binary = sipp_binary()
    scenario_path = SCENARIOS / scenario
    args = [binary, f"{host}:{port}"]
    if scenario_path.exists():
        args += ["-sf", str(scenario_path)]
    else:
        args += ["-sn", scenario]
    args += ["-t", "t1" if transport == "tcp" else "u1", "-i", local_ip, "-m", str(calls)]
    args += ["-r", str(rate), "-timeout", f"{int(timeout)}s", "-timeout_error"]
    args += ["-nostdin", "-trace_err", "-error_file", "/dev/stderr", "-max_recv_loops", "1000"]
    if local_port is not None:
        args += ["-p", str(local_port)]
    if inf is not None:
        args += ["-inf", str(inf)]
    if users is not None:
        args += ["-users", str(users)]
    for key, value in (keys or {}).items():
        args += ["-key", key, value]
    args += extra or []
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout_bytes, stderr_bytes = await asyncio.wait_for(process.communicate(), timeout + 15)
    except TimeoutError:
        process.kill()
        stdout_bytes, stderr_bytes = await process.communicate()
    stdout = stdout_bytes.decode(errors="replace")
    stderr = stderr_bytes.decode(errors="replace")
    return SippResult(
        returncode=process.returncode if process.returncode is not None else -1,
        stdout=stdout,
        stderr=stderr,
        successful=_count(stdout, "Successful call"),
        failed=_count(stdout, "Failed call"),
    )


def write_users_csv(path: Path, users: dict[str, str]) -> Path:
    """SIPp injection file: field0 = user, field1 = SIPp's whole authentication keyword."""
    lines = ["SEQUENTIAL"] + [
        f"{user};[authentication username={user} password={password}]"
        for user, password in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
