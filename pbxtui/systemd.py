"""Living under systemd: readiness and watchdog notifications, and journal priorities.

sd_notify(3) is one datagram on the Unix socket named by `$NOTIFY_SOCKET` ("READY=1",
"STOPPING=1", "WATCHDOG=1", "RELOADING=1", "STATUS=..."): a dozen lines of socket code,
so no library (python-systemd needs libsystemd headers to build; sdnotify is unmaintained)
is worth the dependency. Outside systemd every call is a no-op.

When stderr is connected to the journal (`$JOURNAL_STREAM` names its device and inode, see
systemd.exec(5)), each log line starts with its syslog priority, `<4>` for a warning, which
journald strips and stores as PRIORITY=, so `journalctl -p warning -u pbxtui` shows exactly
the security events and problems. The text after the prefix is unchanged: fail2ban's filter
matches it as before.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from pbxtui.eventlog import JOURNAL_LOG_FORMAT
from pbxtui.logformat import LineFormatter

# logging level → syslog priority (RFC 5424 §6.2.1): err 3, warning 4, info 6, debug 7.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return 7


class Notifier:
    """sd_notify: `send("READY=1")`. Inert when `$NOTIFY_SOCKET` is not set."""

    def __init__(self, address: str | None = None) -> None:
        if address is None:
            address = os.environ.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]  # the abstract namespace (unix(7))
        self.address = address

    @property
    def active(self) -> bool:
        return self.address is not None

    def send(self, *states: str) -> bool:
        """Send `states` as one message; False when there is no manager or it is gone."""
        if self.address is None:
            return False
        payload = "\n".join(states).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(payload)
        except OSError:
            return False
        return True


def watchdog_seconds() -> float | None:
    """How often to send WATCHDOG=1: half of `WatchdogSec=`, None when no watchdog is armed
    for this process (systemd.service(5): WATCHDOG_USEC, and WATCHDOG_PID when set)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


def stderr_is_journal() -> bool:
    """Whether stderr is the journal's stream socket (`$JOURNAL_STREAM` is "device:inode")."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        status = os.fstat(2)
    except OSError:
        return False
    return status.st_dev == int(device) and status.st_ino == int(inode)


class JournalFormatter(LineFormatter):
    """`<priority>LEVEL name: message`: journald keeps its own timestamps, so none here; the
    rest of the line is what the stderr form has after its time (contrib/fail2ban reads both)."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{syslog_priority(record.levelno)}>"
        # A traceback spans lines: each line is its own journal entry, each gets the prefix.
        return "\n".join(prefix + line for line in text.split("\n"))


UNIT_NAME = "pbxtui.service"


def unit_text(*, executable: str, user: str, data_dir: Path, config: Path | None = None) -> str:
    """The systemd unit for this machine: `executable` is the pbxtui to run (a venv's script,
    or `python -m pbxtui`), the database lives in `data_dir`, owned by `user`."""
    options = f" --config {config}" if config is not None else ""
    database = data_dir / "pbxtui.db"
    return UNIT_TEMPLATE.format(
        exec_start=f"{executable} --headless --db {database}{options}",
        user=user,
        data_dir=data_dir,
    )


# ProtectSystem=strict makes the whole file system read-only but for ReadWritePaths= and the
# runtime/state directories; the capability is the only privilege kept, for port 5060 < 1024.
UNIT_TEMPLATE = """\
[Unit]
Description=pbxtui SIP PBX (registrar, proxy, carrier trunks)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
WatchdogSec=30
TimeoutStopSec=20
User={user}
Group={user}
# The console and the CLI attach through /run/pbxtui (pbxtui console, pbxtui status).
RuntimeDirectory=pbxtui
RuntimeDirectoryMode=0750
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={data_dir}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
LockPersonality=yes
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""
