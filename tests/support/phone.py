"""A minimal real softphone for tests: REGISTER with digest over a real UDP socket.

It answers challenges with core.sip.digest.build_authorization (the client side of the same
maths the server verifies), so a test can register with any Via/Contact it needs, e.g. a
phone that claims a private address (NAT) or registers somebody else (third party).
"""

from __future__ import annotations

import secrets

from core.sip.digest import build_authorization, pick_challenge
from core.sip.fields import parse_auth
from core.sip.message import Response
from support.client import TcpClient, UdpClient


class Phone:
    def __init__(
        self, client: UdpClient | TcpClient, user: str, password: str, domain: str = "pbx.test"
    ):
        self.client = client
        self.user = user
        self.password = password
        self.domain = domain
        self.call_id = secrets.token_hex(8)
        self.cseq = 0
        self.from_tag = secrets.token_hex(4)
        self.user_agent = "pbxtui-test-phone"
        self.transport = "UDP"  # the Via's transport: TCP or TLS for a stream client

    def register_text(
        self,
        *,
        contact: str | None = None,
        expires: int | None = 3600,
        via_host: str | None = None,
        authorization: str | None = None,
        extra: str = "",
    ) -> str:
        self.cseq += 1
        ip, port = self.client.local
        via = via_host or f"{ip}:{port}"
        contact = contact if contact is not None else f"<sip:{self.user}@{ip}:{port}>"
        lines = [
            f"REGISTER sip:{self.domain} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {via};branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{self.domain}>;tag={self.from_tag}",
            f"To: <sip:{self.user}@{self.domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"User-Agent: {self.user_agent}",
        ]
        if contact:
            lines.append(f"Contact: {contact}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if authorization:
            lines.append(f"Authorization: {authorization}")
        text = "\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n"
        return text

    async def register(self, **kwargs: object) -> Response | None:
        """REGISTER, answer the 401 once, return the final response."""
        text = self.register_text(**kwargs)  # type: ignore[arg-type]
        first = await self.client.ask(text.encode("utf-8", "surrogateescape"))
        if first is None or first.status != 401:
            return first
        return await self.answer(first, **kwargs)

    async def answer(self, challenge_response: Response, **kwargs: object) -> Response | None:
        challenges = [parse_auth(v) for v in challenge_response.headers.get_all("WWW-Authenticate")]
        challenge = pick_challenge(challenges)
        assert challenge is not None, "no answerable challenge"
        authorization = build_authorization(
            challenge, self.user, self.password, "REGISTER", f"sip:{self.domain}"
        )
        text = self.register_text(authorization=authorization, **kwargs)  # type: ignore[arg-type]
        return await self.client.ask(text.encode("utf-8", "surrogateescape"))
