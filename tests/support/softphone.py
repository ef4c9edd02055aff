"""A small real softphone for media tests: SIP over UDP and an RTP endpoint, both on one
loopback address of its own, announcing another address in its Contact and SDP — what a
phone behind NAT looks like from the server (it writes its private address, it is seen at
the router's).

It registers, calls (answering the 407), answers, re-INVITEs (hold, resume) and hangs up,
with just enough of RFC 3261 to drive the server: no retransmissions (loopback does not lose
packets), one dialog at a time.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from dataclasses import dataclass, field

from core.media.sdp import parse
from core.sip.digest import build_authorization, pick_challenge
from core.sip.fields import parse_auth
from core.sip.message import Request, Response
from core.sip.parser import parse_message
from support.client import UdpClient
from support.phone import Phone

DOMAIN = "pbx.test"


class RtpEndpoint:
    """Sends numbered RTP-shaped packets at 50/s and counts what comes back, by sender."""

    def __init__(self, ip: str) -> None:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.sent = 0
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                self.received.append(self.sock.recv(4096))
            except BlockingIOError:
                return

    def from_marker(self, marker: bytes) -> int:
        return sum(1 for packet in self.received if packet[12:].startswith(marker))

    async def stream(self, destination: tuple[str, int], marker: bytes, count: int) -> None:
        """`count` packets of 20 ms audio: a 12-byte RTP header, then `marker` and padding."""
        ssrc = secrets.token_bytes(4)
        for sequence in range(count):
            header = bytes([0x80, 0x00]) + sequence.to_bytes(2, "big")
            header += (sequence * 160).to_bytes(4, "big") + ssrc
            self.sock.sendto(header + marker + bytes(160 - len(marker)), destination)
            self.sent += 1
            await asyncio.sleep(0.02)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str = ""
    remote_target: str = ""
    route: list[str] = field(default_factory=list)
    cseq: int = 1
    remote_sdp: bytes = b""  # the last SDP the other side (through the server) sent us

    def media_address(self) -> tuple[str, int]:
        (media, *_rest) = parse(self.remote_sdp).media
        return media.address, media.port


class SoftPhone:
    """One user on `ip`; announces `nat_ip` (an address nobody listens on) as its own."""

    def __init__(
        self, user: str, password: str, ip: str, server: tuple[str, int], nat_ip: str = "127.0.0.99"
    ) -> None:
        self.user = user
        self.password = password
        self.ip = ip
        self.nat_ip = nat_ip  # the phone's own `ip`: a phone not behind NAT
        self.client = UdpClient(server)
        self.rtp: RtpEndpoint = None  # type: ignore[assignment]
        self.dialog: Dialog | None = None

    async def start(self) -> SoftPhone:
        await self.client.open(self.ip)
        self.rtp = RtpEndpoint(self.ip)
        phone = Phone(self.client, self.user, self.password, DOMAIN)
        # A phone tries again when a REGISTER goes unanswered: on a loaded machine, or while
        # worker processes are still starting and reading the users, the first may be lost.
        deadline = asyncio.get_running_loop().time() + 10.0
        while True:
            response = await phone.register(contact=self.contact, via_host=self.nat_hostport)
            if response is not None and response.status == 200:
                return self
            assert asyncio.get_running_loop().time() < deadline, response
            await asyncio.sleep(0.2)

    def close(self) -> None:
        self.rtp.close()
        self.client.close()

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.nat_hostport}>"

    @property
    def nat_hostport(self) -> str:
        host = f"[{self.nat_ip}]" if ":" in self.nat_ip else self.nat_ip
        return f"{host}:{self.sip_port}"

    @property
    def sip_port(self) -> int:
        """The port the phone writes: its own, unless behind NAT (which rewrites it)."""
        return 5060 if self.nat_ip != self.ip else self.client.local[1]

    def sdp(self, direction: str = "sendrecv", version: int = 1) -> bytes:
        family = "IP6" if ":" in self.nat_ip else "IP4"
        return (
            f"v=0\r\no={self.user} 1 {version} IN {family} {self.nat_ip}\r\ns=-\r\n"
            f"c=IN {family} {self.nat_ip}\r\nt=0 0\r\nm=audio {self.rtp.port} RTP/AVP 0\r\n"
            f"a=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
        ).encode()

    # -- messages ---------------------------------------------------------------------------
    def _request(self, method: str, uri: str, headers: list[str], body: bytes = b"") -> bytes:
        local = self.nat_hostport  # behind NAT, rport finds it (RFC 3581)
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {local};branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            *headers,
            f"Contact: {self.contact}",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _in_dialog(self, method: str, body: bytes = b"", cseq: int | None = None) -> bytes:
        dialog = self.dialog
        assert dialog is not None
        if cseq is None:
            dialog.cseq += 1
            cseq = dialog.cseq
        headers = [
            *(f"Route: {route}" for route in dialog.route),
            f"From: <sip:{self.user}@{DOMAIN}>;tag={dialog.local_tag}",
            f"To: <sip:peer@{DOMAIN}>;tag={dialog.remote_tag}",
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {cseq} {method}",
        ]
        return self._request(method, dialog.remote_target, headers, body)

    async def _final(self, timeout: float = 3.0) -> Response:
        response = await self.client.response(timeout)
        assert response is not None, f"{self.user}: no final response"
        return response

    async def _next_request(self, timeout: float = 3.0) -> Request:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            data = await self.client.recv(remaining)
            if data is None:
                break
            message = parse_message(data)
            if isinstance(message, Request):
                return message
        raise AssertionError(f"{self.user}: no request arrived")

    def _reply(self, request: Request, status: int, reason: str, body: bytes = b"") -> None:
        headers = request.headers
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {value}" for value in headers.values("via")]
        lines += [f"Record-Route: {value}" for value in headers.values("record-route")]
        to = headers.get("to") or ""
        if "tag=" not in to and self.dialog is not None:
            to += f";tag={self.dialog.local_tag}"
        lines += [
            f"From: {headers.get('from')}",
            f"To: {to}",
            f"Call-ID: {headers.get('call-id')}",
            f"CSeq: {headers.get('cseq')}",
            f"Contact: {self.contact}",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        self.client.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    # -- calls ------------------------------------------------------------------------------
    async def call(self, callee: str, body: bytes | None = None, ack_body: bytes = b"") -> Response:
        """INVITE `callee`, answer the 407, ACK the final answer; the dialog on a 2xx.
        A late offer (RFC 3264 §2): `body` b"", and `ack_body` answers the 2xx's offer."""
        body = self.sdp() if body is None else body
        self.dialog = dialog = Dialog(secrets.token_hex(8), secrets.token_hex(4))
        uri = f"sip:{callee}@{DOMAIN}"
        headers = [
            f"From: <sip:{self.user}@{DOMAIN}>;tag={dialog.local_tag}",
            f"To: <{uri}>",
            f"Call-ID: {dialog.call_id}",
            "CSeq: 1 INVITE",
        ]
        self.client.send(self._request("INVITE", uri, headers, body))
        challenge = await self._final()
        assert challenge.status == 407, challenge
        self._ack_failure(challenge, uri, headers)
        params = [parse_auth(v) for v in challenge.headers.get_all("Proxy-Authenticate")]
        chosen = pick_challenge(params)
        assert chosen is not None
        authorization = build_authorization(chosen, self.user, self.password, "INVITE", uri)
        dialog.cseq = 2
        headers[3] = "CSeq: 2 INVITE"
        self.client.send(
            self._request("INVITE", uri, [*headers, f"Proxy-Authorization: {authorization}"], body)
        )
        final = await self._final(5.0)
        if 200 <= final.status < 300:
            self._learn(final)
            self.client.send(self._in_dialog("ACK", ack_body, cseq=2))
        return final

    def _ack_failure(self, response: Response, uri: str, headers: list[str]) -> None:
        """RFC 3261 §17.1.1.3: the ACK of a non-2xx, on the INVITE's branch, hop by hop."""
        via = response.headers.values("via")[0]
        to = response.headers.get("to")
        lines = [f"ACK {uri} SIP/2.0", f"Via: {via}", "Max-Forwards: 70", headers[0],
                 f"To: {to}", headers[2], "CSeq: 1 ACK", "Content-Length: 0"]  # fmt: skip
        self.client.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _learn(self, response: Response) -> None:
        dialog = self.dialog
        assert dialog is not None
        dialog.remote_tag = response.to_tag or ""
        contacts = response.contacts or []
        dialog.remote_target = str(contacts[0].uri) if contacts else dialog.remote_target
        dialog.route = list(reversed(response.headers.values("record-route")))
        if response.body:
            dialog.remote_sdp = response.body

    async def answer_call(self, body: bytes | None = None) -> Request:
        """Wait for an INVITE, 180 then 200 with our SDP; wait for its ACK."""
        invite = await self._next_request()
        assert invite.method == "INVITE", invite.method
        self.dialog = dialog = Dialog(invite.call_id or "", secrets.token_hex(4))
        dialog.remote_tag = invite.from_tag or ""
        contacts = invite.contacts or []
        dialog.remote_target = str(contacts[0].uri)
        dialog.route = list(invite.headers.values("record-route"))
        dialog.remote_sdp = invite.body
        self._reply(invite, 180, "Ringing")
        self._reply(invite, 200, "OK", self.sdp() if body is None else body)
        ack = await self._next_request()
        assert ack.method == "ACK", ack.method
        if ack.body:
            dialog.remote_sdp = ack.body
        return invite

    async def reinvite(self, direction: str, version: int, body: bytes | None = None) -> Response:
        """An offer in the dialog (hold: sendonly; resume: sendrecv; or `body`); ACK its
        answer, or its failure (hop by hop, on the INVITE's branch: RFC 3261 §17.1.1.3)."""
        offer = self.sdp(direction, version) if body is None else body
        self.client.send(self._in_dialog("INVITE", offer))
        final = await self._final()
        assert self.dialog is not None
        if final.status == 200:
            self.dialog.remote_sdp = final.body
            self.client.send(self._in_dialog("ACK", cseq=self.dialog.cseq))
        elif final.status >= 300:
            self._ack_reinvite_failure(final)
        return final

    def _ack_reinvite_failure(self, response: Response) -> None:
        dialog = self.dialog
        assert dialog is not None
        lines = [
            f"ACK {dialog.remote_target} SIP/2.0",
            f"Via: {response.headers.values('via')[0]}",
            "Max-Forwards: 70",
            *(f"Route: {route}" for route in dialog.route),
            f"From: {response.headers.get('from')}",
            f"To: {response.headers.get('to')}",
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {dialog.cseq} ACK",
            "Content-Length: 0",
        ]
        self.client.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def answer_reinvite(self, direction: str, version: int, status: int = 200) -> None:
        """Answer the next re-INVITE: 200 with our SDP, or refuse it with `status` (a 488:
        the session stays as it was, RFC 3261 §14.2)."""
        invite = await self._next_request()
        assert invite.method == "INVITE", invite.method
        assert self.dialog is not None
        if status != 200:
            self._reply(invite, status, "Not Acceptable Here")
        else:
            self.dialog.remote_sdp = invite.body
            self._reply(invite, 200, "OK", self.sdp(direction, version))
        ack = await self._next_request()
        assert ack.method == "ACK"

    async def hang_up(self) -> Response:
        self.client.send(self._in_dialog("BYE"))
        return await self._final()

    async def answer_bye(self, timeout: float = 3.0) -> None:
        bye = await self._next_request(timeout)
        assert bye.method == "BYE", bye.method
        self._reply(bye, 200, "OK")
