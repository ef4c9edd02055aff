"""`pbxtui --headless` as a real process: starts, answers, stops cleanly, fails clearly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from support.ports import free_port


def _command(tmp_path: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pbxtui",
        "--headless",
        "--db",
        str(tmp_path / "pbx.db"),
        "--listen",
        f"udp:127.0.0.1:{port}",
        "--listen",
        f"tcp:127.0.0.1:{port}",
        "--domain",
        "pbx.test",
        *extra,
    ]


def _wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float = 10.0) -> list[str]:
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    os.set_blocking(process.stderr.fileno(), False)
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if line:
            lines.append(line)
            if needle in line:
                return lines
        elif process.poll() is not None:
            break
        else:
            time.sleep(0.02)
    raise AssertionError(f"{needle!r} not seen; stderr so far:\n{''.join(lines)}")


def _options(port: int, call_id: str = "headless-1") -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        local = sock.getsockname()
        sock.sendto(
            (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local[1]};branch=z9hG4bKheadless;rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:probe@pbx.test>;tag=1\r\n"
                f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )
        data, _ = sock.recvfrom(65535)
        return data


def test_headless_starts_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(_command(tmp_path, port), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(process, "pbxtui ready")
        assert _options(port).startswith(b"SIP/2.0 200 OK")
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert process.stderr is not None
        rest = process.stderr.read() or ""
        assert "stopped" in rest
        assert "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_headless_with_workers_answers_and_stops_them(tmp_path: Path) -> None:
    port = free_port()
    command = _command(tmp_path, port, "--workers", "2")
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = _wait_for_line(process, "pbxtui ready")
        assert any("2 worker processes" in line for line in lines)
        workers = _children(process.pid)
        assert len(workers) == 2
        for number in range(6):  # several Call-IDs: both workers answer some
            assert _options(port, f"headless-{number}").startswith(b"SIP/2.0 200 OK")
        # Ctrl-C in a terminal reaches the whole process group: main stops the workers.
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(10) == 0
        assert process.stderr is not None
        rest = process.stderr.read() or ""
        assert "stopped" in rest and "Traceback" not in rest
        for pid in workers:  # main waited for every worker: none outlives it
            assert not Path(f"/proc/{pid}").exists()
    finally:
        if process.poll() is None:
            process.kill()


def test_headless_stops_on_sigint(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(_command(tmp_path, port), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(process, "pbxtui ready")
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_port_taken_is_a_clear_error_and_exit_2(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        result = subprocess.run(
            _command(tmp_path, port), capture_output=True, text=True, timeout=20
        )
    assert result.returncode == 2
    assert "pbxtui: error:" in result.stderr
    assert "in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_listen_option_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pbxtui",
            "--headless",
            "--db",
            str(tmp_path / "x.db"),
            "--listen",
            "sctp:nowhere",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("pbxtui: error:")
    assert "Traceback" not in result.stderr


def test_headless_reloads_its_tls_certificate_on_sighup(tmp_path: Path) -> None:
    """`systemctl reload`: SIGHUP loads the pair again; a bad pair is one error line and the
    service goes on."""
    from support.certs import TestCa

    pair = TestCa(tmp_path / "ca").issue("pbx.test", alt_names=("IP:127.0.0.1",))
    config = tmp_path / "pbxtui.toml"
    config.write_text(f'[tls]\ncertificate = "{pair.certificate}"\nkey = "{pair.key}"\n')
    port = free_port()
    command = _command(tmp_path, port, "--config", str(config), "--listen", "tls:127.0.0.1:0")
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(process, "pbxtui ready")
        process.send_signal(signal.SIGHUP)
        _wait_for_line(process, "TLS certificate reloaded")
        pair.key.write_text("not a key\n")
        process.send_signal(signal.SIGHUP)
        lines = _wait_for_line(process, "TLS certificate not reloaded")
        assert "WARNING" in lines[-1] and "old one serves on" in lines[-1]
        assert sum("TLS certificate" in line for line in lines) == 1  # one line, not two
        assert _options(port).startswith(b"SIP/2.0 200 OK")
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
