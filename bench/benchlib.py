"""Shared pieces of the SIPp benchmarks: start a headless server, provision users, step a
SIPp load, and read the server's CPU and memory from /proc.

Loopback only, every SIPp run bounded by a call count and a timeout. Figures are printed,
never asserted: speed is measured here, not in tests.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "sipp"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DOMAIN = "pbx.test"


def need_sipp() -> str:
    path = shutil.which("sipp")
    if path is None:
        sys.exit("bench: sipp not found (apt-get install sip-tester)")
    return path


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def process_tree(pid: int) -> list[int]:
    """`pid` and its children: the server's worker processes count with it (--workers)."""
    pids = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        pids.append(int(child))
    return pids


def cpu_seconds(pid: int) -> float:
    """CPU seconds used by the server and its worker processes (exited ones not counted)."""
    total = 0
    for each in process_tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def memory_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) in KiB, summed over the server and its worker processes."""
    rss = peak = 0
    for each in process_tree(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except FileNotFoundError:
            continue
        rss += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        peak += int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return rss, peak


def write_users_csv(path: Path, count: int, prefix: str = "u", password_prefix: str = "pw") -> Path:
    """u0000..u{count-1} with passwords pw0000..: the layout of the Kamailio anchor bench."""
    rows = [f"{prefix}{i:04d},{password_prefix}{i:04d}" for i in range(count)]
    path.write_text("username,password\n" + "\n".join(rows) + "\n")
    return path


def write_sipp_users(path: Path, count: int) -> Path:
    rows = [f"u{i:04d};[authentication username=u{i:04d} password=pw{i:04d}]" for i in range(count)]
    path.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
    return path


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    db: Path
    started_in: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return -9


def pbxtui(*args: str, db: Path) -> None:
    """A management command on the bench's database, made first (`pbxtui init`): management
    commands create none."""
    base = [sys.executable, "-m", "pbxtui", "--db", str(db), "--domain", DOMAIN]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if not db.exists():
        subprocess.run([*base, "init"], check=True, **quiet)  # type: ignore[call-overload]
    subprocess.run([*base, *args], check=True, stdout=subprocess.DEVNULL)


def start_server(workdir: Path, *, users: int = 0, extra: list[str] | None = None) -> Server:
    db = workdir / "bench.db"
    if users:
        pbxtui("user", "import", str(write_users_csv(workdir / "users.csv", users)), db=db)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "pbxtui",
        "--headless",
        "--db",
        str(db),
        "--domain",
        DOMAIN,
        "--listen",
        f"udp:127.0.0.1:{port}",
        "--listen",
        f"tcp:127.0.0.1:{port}",
        *(extra or []),
    ]
    started = time.monotonic()
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=log, text=True)
    assert process.stderr is not None
    while True:
        line = process.stderr.readline()
        if not line:
            sys.exit(f"bench: server exited: {process.wait()}")
        log.write(line)
        if "pbxtui ready" in line:
            # Which build runs (compiled or pure Python) belongs with every figure.
            print("server:", line.split("SIP core: ", 1)[-1].strip(), flush=True)
            break
    elapsed = time.monotonic() - started
    # Keep draining stderr so the server never blocks on a full pipe.
    import threading

    def drain() -> None:
        for rest in process.stderr:  # type: ignore[union-attr]
            log.write(rest)

    threading.Thread(target=drain, daemon=True).start()
    return Server(process, port, db, elapsed)


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    elapsed: float
    cpu: float  # server CPU seconds used during the step
    retransmissions: int

    @property
    def failure_ratio(self) -> float:
        return self.failed / self.calls if self.calls else 1.0

    @property
    def achieved_rate(self) -> float:
        return self.successful / self.elapsed if self.elapsed else 0.0

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu / self.elapsed if self.elapsed else 0.0


def _stat(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.strip().startswith(name):
            numbers = [part.strip() for part in line.split("|") if part.strip().isdigit()]
            if numbers:
                return int(numbers[-1])
    return 0


def _retransmissions(text: str) -> int:
    # SIPp's message table shows "Retrans" counts per line; sum them.
    total = 0
    for line in text.splitlines():
        match = re.search(r"(?:-->|<--|>>|<<).*?\s(\d+)\s+(\d+)\s", line)
        if match:
            total += int(match.group(2))
    return total


def run_step(
    server: Server,
    scenario: str,
    rate: int,
    seconds: float,
    *,
    inf: Path | None = None,
    local_ip: str = "127.0.0.1",
    extra: list[str] | None = None,
) -> Step:
    calls = max(1, int(rate * seconds))
    args = sipp_args(
        server,
        scenario,
        rate,
        calls,
        local_ip=local_ip,
        timeout=seconds * 3 + 20,
        inf=inf,
        extra=extra,
    )
    cpu_before = cpu_seconds(server.pid)
    started = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, timeout=seconds * 3 + 60)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(server.pid) - cpu_before
    successful = _stat(result.stdout, "Successful call")
    return Step(
        rate=rate,
        calls=calls,
        successful=successful,
        failed=calls - successful,  # failed, timed out, or never finished
        elapsed=elapsed,
        cpu=cpu,
        retransmissions=_retransmissions(result.stdout),
    )


def ramp(
    server: Server,
    scenario: str,
    rates: list[int],
    seconds: float,
    **kwargs: object,
) -> Step | None:
    """Step the rate up; returns the best step with < 1 % failures and ≥ 90 % of the target rate."""
    best: Step | None = None
    for rate in rates:
        step = run_step(server, scenario, rate, seconds, **kwargs)  # type: ignore[arg-type]
        ok = step.failure_ratio < 0.01 and step.achieved_rate >= 0.9 * rate
        print(
            f"  {scenario:<18} rate {rate:>6}/s  ok {step.successful:>7}  failed {step.failed:>5}"
            f"  achieved {step.achieved_rate:>8.0f}/s  server CPU {step.cpu_percent:>5.0f}%"
            f"  {'pass' if ok else 'FAIL'}",
            flush=True,
        )
        if not ok:
            break
        best = step
    return best


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pbxtui-bench-"))


# -- helpers for bench/flood ---------------------------------------------------------------


def udp_socket_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to `port` (its receive buffer
    was full): the last column of /proc/net/udp and /proc/net/udp6."""
    wanted = f":{port:04X}"
    drops = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(wanted):
                drops += int(fields[-1])
    return drops


def sipp_args(
    server: Server,
    scenario: str,
    rate: int,
    calls: int,
    *,
    local_ip: str,
    timeout: float,
    inf: Path | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """A bounded SIPp command line against `server`: every bench step runs SIPp this way."""
    return [
        need_sipp(),
        f"127.0.0.1:{server.port}",
        "-sf",
        str(SCENARIOS / scenario),
        "-t",
        "u1",
        "-i",
        local_ip,
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-rp",
        "1000",
        "-key",
        "domain",
        DOMAIN,
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-max_socket",
        "1000",
        "-l",
        str(max(1000, rate * 5)),
        *(["-inf", str(inf)] if inf else []),
        *(extra or []),
    ]


def sipp_counts(stdout: str) -> tuple[int, int, int]:
    """(calls created, successful, failed) from SIPp's final statistics screen."""
    return (
        _stat(stdout, "Total Calls created"),
        _stat(stdout, "Successful call"),
        _stat(stdout, "Failed call"),
    )


def response_times_ms(rtt_csv_dir: Path) -> list[tuple[float, float]]:
    """(when, response time) in ms for every entry SIPp's `-trace_rtt` wrote into
    `rtt_csv_dir` (`*_rtt.csv`); `when` counts from SIPp's start."""
    times: list[tuple[float, float]] = []
    for path in rtt_csv_dir.glob("*_rtt.csv"):
        header, *rows = path.read_text().splitlines() or [""]
        names = header.split(";")
        at, took = names.index("Date_ms"), names.index("response_time_ms")
        for row in rows:
            fields = row.split(";")
            if len(fields) == len(names):
                times.append((float(fields[at]), float(fields[took])))
    return sorted(times)
