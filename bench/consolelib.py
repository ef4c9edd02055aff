"""What bench/console needs beyond benchlib: a SIPp step timed by SIPp itself, the real console
driven in a tmux terminal, and keypress latency read off that terminal's screen.

The console runs exactly as an admin starts it (`pbxtui --db ... --listen ...`) inside a
detached tmux session on a private tmux socket, so Textual renders to a real pseudo-terminal
and tmux parses every byte of it, as an SSH session would. Keys go in with `tmux send-keys`;
the screen comes back with `tmux capture-pane -p`. A keypress counts as answered when the
captured text shows its effect, so the latency includes tmux on both sides: an upper bound
on what a person at the terminal sees.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import benchlib

# Text only one pane shows, to tell from the captured screen which pane is up.
TRAFFIC_MARKER = "/ filter: text"  # the filter bar's placeholder
SECURITY_MARKER = "Bans in force"
LIVE_MARKER = "● LIVE"
PAUSED_MARKER = "PAUSED"
LOCK_MARKER = "console password"

# SIPp's scenario screen: "300.0(0 ms)/1.000s   5060       2.26 s          600  127.0.0.1:..."
_TOTAL_TIME = re.compile(r"^\s*[\d.]+\(\d+ ms\)/[\d.]+s\s+\d+\s+([\d.]+) s\s+\d+", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class StepResult:
    """One SIPp run at a fixed rate against one server process."""

    rate: int
    calls: int
    successful: int
    sipp_seconds: float  # SIPp's own total time: first call sent to last call ended
    server_cpu: float  # CPU seconds the server process used meanwhile (every thread)
    retransmissions: int
    kernel_drops: int  # datagrams the kernel dropped: the server's UDP buffer was full

    @property
    def failed(self) -> int:
        return self.calls - self.successful

    @property
    def achieved(self) -> float:
        return self.successful / self.sipp_seconds if self.sipp_seconds > 0 else 0.0

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.server_cpu / self.sipp_seconds if self.sipp_seconds > 0 else 0.0

    @property
    def passed(self) -> bool:
        """Under 1 % failed and the server kept pace: 90 % of the offered rate got through."""
        return self.failed < 0.01 * self.calls and self.achieved >= 0.9 * self.rate


@dataclass(frozen=True, slots=True)
class Target:
    """Where SIPp sends (a UDP port on 127.0.0.1) and whose CPU is charged for it."""

    port: int
    pid: int


def sipp_command(target: Target, rate: int, calls: int, inf: Path, seconds: float) -> list[str]:
    return benchlib.sipp_args(
        target,  # type: ignore[arg-type]  # sipp_args reads only .port
        "reg_auth.xml",
        rate,
        calls,
        local_ip="127.0.0.1",
        timeout=seconds * 3 + 20,
        inf=inf,
        extra=["-auth_uri", benchlib.DOMAIN],
    )


def finish_step(
    target: Target,
    rate: int,
    calls: int,
    stdout: str,
    wall_seconds: float,
    cpu_before: float,
    drops_before: int,
) -> StepResult:
    """Read a finished SIPp run's figures; SIPp's own clock when it printed one."""
    _created, successful, _failed = benchlib.sipp_counts(stdout)
    times = _TOTAL_TIME.findall(stdout)
    return StepResult(
        rate=rate,
        calls=calls,
        successful=successful,
        sipp_seconds=float(times[-1]) if times else wall_seconds,
        server_cpu=benchlib.cpu_seconds(target.pid) - cpu_before,
        retransmissions=benchlib._retransmissions(stdout),
        kernel_drops=benchlib.udp_socket_drops(target.port) - drops_before,
    )


def run_step(target: Target, rate: int, seconds: float, inf: Path) -> StepResult:
    """Authenticated REGISTERs (REGISTER, 401, REGISTER with digest, 200) at `rate` a second."""
    calls = max(1, int(rate * seconds))
    command = sipp_command(target, rate, calls, inf, seconds)
    cpu_before = benchlib.cpu_seconds(target.pid)
    drops_before = benchlib.udp_socket_drops(target.port)
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 3 + 60)
    wall = time.monotonic() - started
    return finish_step(target, rate, calls, result.stdout, wall, cpu_before, drops_before)


class BackgroundLoad:
    """SIPp at a fixed rate for as long as something else takes; `stop()` ends it gracefully.

    SIPp quits on SIGUSR1 as on its `q` key: no new calls, the calls under way finish, the
    statistics are printed. Its call budget covers `max_seconds`, a bound if nobody stops it.
    """

    def __init__(self, target: Target, rate: int, inf: Path, max_seconds: float = 300.0) -> None:
        self.target = target
        self.rate = rate
        command = sipp_command(target, rate, int(rate * max_seconds), inf, max_seconds)
        self.cpu_before = benchlib.cpu_seconds(target.pid)
        self.drops_before = benchlib.udp_socket_drops(target.port)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> StepResult:
        if self.running():
            self.process.send_signal(signal.SIGUSR1)
        try:
            stdout, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, _ = self.process.communicate()
        created, _successful, _failed = benchlib.sipp_counts(stdout)
        wall = time.monotonic() - self.started
        return finish_step(
            self.target, self.rate, created, stdout, wall, self.cpu_before, self.drops_before
        )


def describe(label: str, step: StepResult) -> str:
    return (
        f"  {label:<8} rate {step.rate:>5}/s  ok {step.successful:>6}  failed {step.failed:>5}"
        f"  achieved {step.achieved:>6.0f}/s  retrans {step.retransmissions:>5}"
        f"  kernel drops {step.kernel_drops:>5}  server CPU {step.cpu_percent:>4.0f}%"
        f"  {'pass' if step.passed else 'FAIL'}"
    )


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- the console in tmux ---------------------------------------------------------------------


class ConsoleError(RuntimeError):
    """The console did not start, log in or show what it should have."""


class TmuxConsole:
    """`pbxtui` with its console, running in a detached tmux session of `width` x `height`.

    The tmux server is private to this object (its own socket, no user config), so stopping
    it touches nothing else on the machine.
    """

    def __init__(self, command: list[str], *, width: int = 120, height: int = 36) -> None:
        self.socket = f"pbxtui-bench-{os.getpid()}"
        self.command = command
        self.width = width
        self.height = height
        self.pid = 0  # the pbxtui process (the pane runs it with exec)
        self.tmux_pid = 0  # the tmux server, which parses everything the console draws

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    def start(self) -> None:
        shell_command = "exec " + " ".join(_quote(part) for part in self.command)
        self.tmux(
            "new-session",
            "-d",
            "-s",
            "console",
            "-x",
            str(self.width),
            "-y",
            str(self.height),
            shell_command,
        )
        # Keep the pane after the console exits, so a start error stays readable.
        self.tmux("set-option", "-t", "console", "remain-on-exit", "on")
        self.pid = int(self.tmux("list-panes", "-t", "console", "-F", "#{pane_pid}").strip())
        self.tmux_pid = int(self.tmux("display-message", "-p", "#{pid}").strip())

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "console")

    def alive(self) -> bool:
        return self.tmux("list-panes", "-t", "console", "-F", "#{pane_dead}").strip() == "0"

    def send(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", "-t", "console", *(["-l"] if literal else []), *keys)

    def wait_for(
        self, shown: Callable[[str], bool], timeout: float, poll: float = 0.005
    ) -> float | None:
        """Seconds until the captured screen satisfies `shown`; None after `timeout`."""
        started = time.perf_counter()
        while True:
            if shown(self.screen()):
                return time.perf_counter() - started
            elapsed = time.perf_counter() - started
            if elapsed > timeout:
                return None
            time.sleep(poll)

    def login(self, password: str, timeout: float = 30.0) -> None:
        """Type the console password at the lock screen, then wait for the Traffic pane."""
        if self.wait_for(lambda text: LOCK_MARKER in text, timeout, poll=0.1) is None:
            raise ConsoleError(f"no lock screen after {timeout:.0f} s:\n{self.screen()}")
        self.send(password, literal=True)
        self.send("Enter")
        if self.wait_for(lambda text: TRAFFIC_MARKER in text, timeout, poll=0.05) is None:
            raise ConsoleError(f"no Traffic pane after logging in:\n{self.screen()}")

    def stop(self) -> None:
        """Quit through the console (Ctrl+Q, y); the tmux server goes with it either way."""
        try:
            if self.pid and self.alive():
                self.send("C-q")
                time.sleep(0.3)
                self.send("y")
                deadline = time.monotonic() + 10
                while self.alive() and time.monotonic() < deadline:
                    time.sleep(0.1)
                if self.alive():
                    os.kill(self.pid, signal.SIGTERM)
        except (subprocess.CalledProcessError, ProcessLookupError):
            pass
        with contextlib.suppress(subprocess.CalledProcessError):
            self.tmux("kill-server")


def _quote(part: str) -> str:
    if re.fullmatch(r"[\w@%+=:,./-]+", part):
        return part
    return "'" + part.replace("'", "'\\''") + "'"


def console_command(db: Path, config: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pbxtui",
        "--db",
        str(db),
        "--domain",
        benchlib.DOMAIN,
        "--config",
        str(config),
        "--listen",
        f"udp:127.0.0.1:{port}",
        "--listen",
        f"tcp:127.0.0.1:{port}",
    ]


# -- keypresses ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Press:
    """A key and the text that shows once the console has acted on it."""

    key: str
    shows: str


# Pane switches: Traffic → Security → Traffic, the Traffic pane re-rendering on each return.
PANE_SWITCHES = (Press("3", SECURITY_MARKER), Press("1", TRAFFIC_MARKER))
# Pause and resume the Traffic pane: a light key on the pane that renders the load.
PAUSE_TOGGLES = (Press("space", PAUSED_MARKER), Press("space", LIVE_MARKER))


def press_keys(
    console: TmuxConsole,
    cycle: tuple[Press, ...],
    presses: int,
    *,
    gap: float = 0.2,
    timeout: float = 5.0,
    keep_going: Callable[[], bool] = lambda: True,
) -> list[float]:
    """Latency of each press, in seconds (a press never answered counts as `timeout`)."""
    latencies: list[float] = []
    for index in range(presses):
        if not keep_going():
            break
        press = cycle[index % len(cycle)]
        started = time.perf_counter()
        console.send(press.key)
        waited = console.wait_for(lambda text, marker=press.shows: marker in text, timeout)
        latencies.append(time.perf_counter() - started if waited is not None else timeout)
        time.sleep(gap)  # let a refresh tick or two pass, as between a person's keys
    return latencies


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, 95th percentile, max)."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95, ordered[-1]
