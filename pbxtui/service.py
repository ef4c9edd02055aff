"""What `pbxtui --headless` adds around the Pbx to be a service: the control socket for
consoles and the CLI, systemd's notifications, and the reload on SIGHUP.

A reload reads the configuration again and puts in force what can change under a running
server: the `[security]` limits (flood, scanners, auth failures, the allow-list) and the log
level. Everything else (listen addresses, domain, database, workers, transport, ...) is built
into sockets and tables at start: the reload names each such change and says it needs a
restart, rather than pretending it took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.control.peers import AccessPolicy, socket_path
from core.control.server import ControlError, ControlServer
from core.settings import Settings
from pbxtui.systemd import Notifier, watchdog_seconds

if TYPE_CHECKING:
    from core.pbx import Pbx

log = logging.getLogger("pbxtui")

VERSION = "1"
# Fields a reload puts in force; every other difference needs a restart.
RELOADABLE = frozenset({"security", "log_level"})


def log_level_number(name: str) -> int:
    return getattr(logging, name.upper(), logging.INFO)


class Service:
    """The control server, the notifier and the watchdog of one headless Pbx."""

    def __init__(
        self,
        pbx: Pbx,
        *,
        reload_settings: Callable[[], Settings] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.pbx = pbx
        self.settings = pbx.settings
        self.reload_settings = reload_settings
        self.notifier = notifier or Notifier()
        self.control: ControlServer | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the control socket; ControlError says why it cannot (another service runs
        on this database, a bad group, an unwritable folder)."""
        try:
            policy = AccessPolicy.for_group(self.settings.control_group or None)
        except ValueError as error:
            raise ControlError(str(error)) from None
        self.control = ControlServer(
            self.pbx, socket_path(self.settings.db_path), policy, version=VERSION
        )
        await self.control.start()
        interval = watchdog_seconds()
        if interval is not None:
            self._watchdog = asyncio.create_task(self._feed_watchdog(interval), name="watchdog")

    def ready(self, summary: str) -> None:
        self.notifier.send("READY=1", f"STATUS={summary}")

    async def stop(self) -> None:
        self.notifier.send("STOPPING=1")
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self.control is not None:
            await self.control.stop()

    async def _feed_watchdog(self, interval: float) -> None:
        """WATCHDOG=1 from the event loop itself: a loop stuck for longer than WatchdogSec=
        gets the service restarted (Restart=on-failure)."""
        while True:
            self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    def reload(self) -> tuple[list[str], list[str]]:
        """Read the TLS certificate and the configuration again: (what changed now, what
        needs a restart). The certificate's outcome is an event of its own (core/pbx.py)."""
        self.pbx.reload_certificate()
        if self.reload_settings is None:
            return [], ["no configuration to read again"]
        self.notifier.send("RELOADING=1")
        try:
            new = self.reload_settings()
        except Exception as error:  # a bad file keeps the old settings in force
            log.error("reload failed, nothing changed: %s", error)
            self.notifier.send("READY=1")
            return [], [f"reload failed: {error}"]
        applied, refused = apply_reload(self.pbx, self.settings, new)
        self.settings = dataclasses.replace(
            self.settings, security=new.security, log_level=new.log_level
        )
        self.pbx.settings = self.settings
        for line in applied:
            log.info("reload: %s", line)
        for line in refused:
            log.warning("reload: %s", line)
        if not applied and not refused:
            log.info("reload: the configuration is unchanged")
        self.notifier.send("READY=1")
        return applied, refused


def apply_reload(pbx: Pbx, old: Settings, new: Settings) -> tuple[list[str], list[str]]:
    applied: list[str] = []
    refused: list[str] = []
    if new.security != old.security:
        pbx.security.apply_settings(new.security)
        changed = [
            field.name
            for field in dataclasses.fields(new.security)
            if getattr(new.security, field.name) != getattr(old.security, field.name)
        ]
        applied.append(f"security settings in force: {', '.join(changed)}")
        if old.workers:
            refused.append("the worker processes keep their security limits until a restart")
    if new.log_level != old.log_level:
        logging.getLogger().setLevel(log_level_number(new.log_level))
        applied.append(f"log level {new.log_level}")
    for field in dataclasses.fields(new):
        if field.name in RELOADABLE:
            continue
        if getattr(new, field.name) != getattr(old, field.name):
            name = "db" if field.name == "db_path" else field.name
            refused.append(f"{name} changed: it takes a restart (systemctl restart pbxtui)")
    return applied, refused
