"""The sans-I/O SIP layer: bytes and time in, messages and actions out. Stdlib only."""

from core.sip.address import NameAddr, parse_contacts, parse_name_addr
from core.sip.errors import SipParseError
from core.sip.fields import CSeq, Via, parse_auth, parse_via
from core.sip.headers import Headers
from core.sip.message import Message, Request, Response, make_response, new_branch, new_tag
from core.sip.parser import parse_message
from core.sip.uri import OtherUri, SipUri, TelUri, Uri, parse_uri

__all__ = [
    "CSeq",
    "Headers",
    "Message",
    "NameAddr",
    "OtherUri",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "TelUri",
    "Uri",
    "Via",
    "make_response",
    "new_branch",
    "new_tag",
    "parse_auth",
    "parse_contacts",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
]
