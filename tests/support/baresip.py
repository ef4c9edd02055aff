"""A real softphone for tests: Debian's baresip, headless, driven over its ctrl_tcp socket.

Each phone gets its own config directory (accounts, config) in the test's tmp folder, so no
user configuration is read. Audio goes through baresip's `aubridge` module (a named in-memory
device, no sound card): a G.711 call needs a source and a player that open without hardware.
`ctrl_tcp` speaks netstring-framed JSON: commands (`dial`, `hangup`, `accept`, `answermode`)
get a response, and every call and registration change arrives as an event, which the phone
queues for `wait_for`.

Every wait is bounded, so a server that drops a message fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from support.ports import free_port

MODULE_PATH = "/usr/lib/baresip/modules"
MAX_NETSTRING = 65_536


def baresip_binary() -> str:
    """Path to baresip. In CI a missing baresip fails the test; elsewhere it skips it."""
    path = shutil.which("baresip")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("baresip is not installed (apt-get install baresip-core)")
        pytest.skip("baresip is not installed (apt-get install baresip-core)")
    return path


class BaresipPhone:
    """One baresip process with one account registered at the server under test."""

    def __init__(
        self,
        folder: Path,
        user: str,
        password: str,
        domain: str,
        proxy: tuple[str, int] | None,
        *,
        answermode: str = "auto",
    ) -> None:
        """`domain` is the account's host part (`pbx.test`, `203.0.113.10:5060`); `proxy`,
        when given, the outbound proxy every request goes to."""
        self.user = user
        self.folder = folder
        self.ctrl_port = free_port()
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.responses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._process: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        outbound = f'outbound="sip:{proxy[0]}:{proxy[1]};lr";' if proxy else ""
        (folder / "accounts").write_text(
            f"<sip:{user}@{domain}>;auth_pass={password};"
            f"{outbound}regint=600;answermode={answermode}\n"
        )
        # sip_listen port 0: baresip picks its own ports (it also binds TLS on port + 1).
        (folder / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    "sip_listen 127.0.0.1:0",
                    "net_interface 127.0.0.1",
                    f"audio_player aubridge,{user}-out",
                    f"audio_source aubridge,{user}-in",
                    f"audio_alert aubridge,{user}-alert",
                    f"module_path {MODULE_PATH}",
                    "module g711.so",
                    "module aubridge.so",
                    "module_app account.so",
                    "module_app menu.so",
                    "module_app ctrl_tcp.so",
                    f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
                    "",
                ]
            )
        )

    async def start(self, timeout: float = 10.0, *, trace: bool = False) -> None:
        """Start baresip and connect to its control socket; `trace` logs every SIP message
        it sends and receives (`log()`)."""
        binary = baresip_binary()
        options = ["-4", "-f", str(self.folder), *(["-s"] if trace else [])]
        with (self.folder / "baresip.log").open("w") as log:
            self._process = subprocess.Popen([binary, *options], stdout=log, stderr=log)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                reader, self._writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
                break
            except OSError:
                if asyncio.get_running_loop().time() > deadline or self._process.poll():
                    raise AssertionError(f"baresip did not start:\n{self.log()}") from None
                await asyncio.sleep(0.05)
        self._reader_task = asyncio.create_task(self._read(reader))

    def log(self, limit: int = 4000) -> str:
        path = self.folder / "baresip.log"
        return path.read_text(errors="replace")[-limit:] if path.exists() else ""

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = await reader.readuntil(b":")
                size = int(length[:-1])
                if size > MAX_NETSTRING:
                    return
                frame = await reader.readexactly(size + 1)  # the data and its closing ","
                message = json.loads(frame[:-1])
                if message.get("event"):
                    await self.events.put(message)
                elif message.get("response"):
                    await self.responses.put(message)

    async def command(self, name: str, params: str = "", timeout: float = 5.0) -> str:
        """Run a baresip command (`dial`, `hangup`, `accept`, `answermode`); its output."""
        assert self._writer is not None
        data = json.dumps({"command": name, "params": params, "token": name}).encode()
        self._writer.write(b"%d:%s," % (len(data), data))
        await self._writer.drain()
        response = await asyncio.wait_for(self.responses.get(), timeout)
        assert response.get("ok"), f"{self.user}: {name} {params} failed: {response}"
        return str(response.get("data", ""))

    async def wait_for(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event of type `kind` (e.g. CALL_ESTABLISHED); other events are skipped."""
        seen: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await self.events.get()
                    seen.append(str(event.get("type")))
                    if event.get("type") == kind:
                        return event
        except TimeoutError:
            raise AssertionError(
                f"{self.user}: no {kind} within {timeout}s; saw {seen}\n{self.log()}"
            ) from None

    async def stop(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
