"""The sans-I/O SIP layer: bytes and time in, messages and actions out. Stdlib only."""

from core.sip.address import NameAddr, parse_contacts, parse_name_addr
from core.sip.errors import SipParseError
from core.sip.fields import (
    AuthParams,
    CSeq,
    Via,
    format_auth,
    parse_auth,
    parse_content_length,
    parse_cseq,
    parse_expires,
    parse_max_forwards,
    parse_via,
)
from core.sip.framing import KEEPALIVE, KeepAlive, StreamFramer
from core.sip.headers import Headers, readable
from core.sip.message import Message, Request, Response, make_response, new_branch, new_tag
from core.sip.parser import parse_message
from core.sip.uri import OtherUri, SipUri, TelUri, Uri, parse_uri

__all__ = [
    "KEEPALIVE",
    "AuthParams",
    "CSeq",
    "Headers",
    "KeepAlive",
    "Message",
    "NameAddr",
    "OtherUri",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "TelUri",
    "Uri",
    "Via",
    "format_auth",
    "make_response",
    "new_branch",
    "new_tag",
    "parse_auth",
    "parse_contacts",
    "parse_content_length",
    "parse_cseq",
    "parse_expires",
    "parse_max_forwards",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "readable",
]
