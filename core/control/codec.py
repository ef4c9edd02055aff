"""Core dataclasses to and from JSON values, for the control protocol.

Only the types listed in `WIRE_TYPES` cross the socket, each rebuilt field by field and checked
against its annotation: whatever arrives stays plain data (strings are never markup, nothing is
ever evaluated or unpickled). Bytes travel as base64; tuples as lists; infinity (a permanent
ban) as null. Password hashes never leave the service: a `User` goes out with empty HA1s.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
from typing import Any

from core.control.rows import ContactRow, ServiceStatus
from core.events import (
    CallEvent,
    ContactExpired,
    ContactRefreshed,
    ContactRegistered,
    ContactUnreachable,
    ContactUnregistered,
    Event,
    SecurityEvent,
    ServerEvent,
    SipTraffic,
    SourceBanned,
    SourceUnbanned,
)
from core.media.relay import MediaStats, StreamStats
from core.proxy.calls import CallInfo
from core.security.bans import Ban
from core.store.rows import BanRow, CarrierRow, CdrRow, DidRow
from core.users import User

EVENT_TYPES: tuple[type[Event], ...] = (
    SipTraffic,
    ContactRegistered,
    ContactRefreshed,
    ContactUnregistered,
    ContactExpired,
    ContactUnreachable,
    SecurityEvent,
    SourceBanned,
    SourceUnbanned,
    CallEvent,
    ServerEvent,
)
WIRE_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        *EVENT_TYPES,
        User,
        CarrierRow,
        DidRow,
        CdrRow,
        BanRow,
        Ban,
        CallInfo,
        MediaStats,
        StreamStats,
        ContactRow,
        ServiceStatus,
    )
}
_SECRET_FIELDS = {User: ("ha1_md5", "ha1_sha256")}
# The field types of the wire classes that mypyc compiles: a compiled class keeps only the
# erased runtime types (`float | None` becomes `type`), so their annotations are declared
# here as written in the source (tests/test_control.py checks them against it).
_SECURITY_FIELDS = {
    "at": "float",
    "action": "str",
    "source": "str",
    "detail": "str",
    "user": "str",
    "user_agent": "str",
    "count": "int",
}
COMPILED_FIELD_TYPES: dict[type[Any], dict[str, str]] = {
    # core/event_types.py: every field, the inherited `at` among them.
    SipTraffic: {
        "at": "float",
        "direction": "str",
        "transport": "str",
        "remote": "tuple[str, int]",
        "local": "tuple[str, int]",
        "data": "bytes",
    },
    ContactRegistered: {
        "at": "float",
        "user": "str",
        "contact": "str",
        "source": "tuple[str, int]",
        "transport": "str",
        "expires": "int",
        "user_agent": "str",
        "behind_nat": "bool",
    },
    ContactRefreshed: {
        "at": "float",
        "user": "str",
        "contact": "str",
        "source": "tuple[str, int]",
        "expires": "int",
    },
    ContactUnregistered: {
        "at": "float",
        "user": "str",
        "contact": "str",
        "source": "tuple[str, int] | None",
        "reason": "str",
    },
    ContactExpired: {"at": "float", "user": "str", "contact": "str"},
    ContactUnreachable: {"at": "float", "user": "str", "contact": "str", "failures": "int"},
    SecurityEvent: _SECURITY_FIELDS,
    SourceBanned: {**_SECURITY_FIELDS, "until": "float", "reason": "str"},
    SourceUnbanned: _SECURITY_FIELDS,
    CallEvent: {
        "at": "float",
        "call_id": "str",
        "state": "str",
        "caller": "str",
        "callee": "str",
        "source": "str",
        "status": "int",
        "reason": "str",
        "duration": "float",
        "direction": "str",
    },
    ServerEvent: {"at": "float", "message": "str", "level": "str"},
    Ban: {"ip": "str", "until": "float", "until_wall": "float", "reason": "str", "count": "int"},
    CallInfo: {
        "call_id": "str",
        "caller": "str",
        "callee": "str",
        "source": "str",
        "state": "str",
        "started_at": "float",
        "answered_at": "float | None",
        "direction": "str",
        "media": "MediaStats | None",
    },
    MediaStats: {"streams": "tuple[StreamStats, ...]", "idle_seconds": "float"},
    StreamStats: {
        "caller_packets": "int",
        "caller_bytes": "int",
        "callee_packets": "int",
        "callee_bytes": "int",
        "dropped": "int",
        "on_hold": "bool",
        "caller_loss": "float | None",
        "caller_jitter_ms": "float | None",
        "callee_loss": "float | None",
        "callee_jitter_ms": "float | None",
    },
}


class CodecError(ValueError):
    """A value that is not what the protocol allows; the connection is dropped."""


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_wire(value)  # a nested row: a call's media counters
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value


def to_wire(item: object) -> dict[str, object]:
    """A dataclass of `WIRE_TYPES` as a JSON object tagged with its type name."""
    cls = type(item)
    if WIRE_TYPES.get(cls.__name__) is not cls:
        raise CodecError(f"{cls.__name__} does not cross the control socket")
    secret = _SECRET_FIELDS.get(cls, ())
    encoded: dict[str, object] = {"@": cls.__name__}
    for field in dataclasses.fields(item):  # type: ignore[arg-type]
        if not field.init:
            continue
        value = getattr(item, field.name)
        encoded[field.name] = "" if field.name in secret else _plain(value)
    return encoded


# Annotation text → a check and a conversion of the JSON value (annotations are strings here:
# every module uses `from __future__ import annotations`).
def _as_str(value: object) -> str:
    if not isinstance(value, str):
        raise CodecError("expected text")
    return value


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError("expected an integer")
    return value


def _as_float(value: object) -> float:
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CodecError("expected a number")
    return float(value)


def _as_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise CodecError("expected true or false")
    return value


def _as_bytes(value: object) -> bytes:
    if not isinstance(value, dict) or not isinstance(value.get("b64"), str):
        raise CodecError("expected base64 bytes")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise CodecError("bad base64") from None


def _as_address(value: object) -> tuple[str, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise CodecError("expected [host, port]")
    return _as_str(value[0]), _as_int(value[1])


def _as_strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise CodecError("expected a list of text")
    return tuple(_as_str(item) for item in value)


def _as_streams(value: object) -> tuple[StreamStats, ...]:
    if not isinstance(value, list) or len(value) > MAX_STREAMS:
        raise CodecError("expected a short list of streams")
    return tuple(from_wire(item, StreamStats) for item in value)


def _as_media(value: object) -> MediaStats:
    return from_wire(value, MediaStats)  # type: ignore[no-any-return]


def _optional(convert):  # type: ignore[no-untyped-def]
    def converted(value: object) -> object:
        return None if value is None else convert(value)

    return converted


_CONVERTERS = {
    "str": _as_str,
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "bytes": _as_bytes,
    "tuple[str, int]": _as_address,
    "tuple[str, ...]": _as_strings,
    "str | None": _optional(_as_str),
    "int | None": _optional(_as_int),
    "float | None": _optional(_as_float),
    "tuple[str, int] | None": _optional(_as_address),
    "tuple[StreamStats, ...]": _as_streams,
    "MediaStats | None": _optional(_as_media),
}
MAX_STREAMS = 16  # media streams in one call's counters


def from_wire(value: object, expected: type[Any] | tuple[type[Any], ...] | None = None) -> Any:
    """Rebuild one tagged object; CodecError for an unknown type, field or value."""
    if not isinstance(value, dict):
        raise CodecError("expected an object")
    cls = WIRE_TYPES.get(str(value.get("@")))
    if cls is None:
        raise CodecError(f"unknown type {value.get('@')!r}")
    if expected is not None and not issubclass(cls, expected):
        raise CodecError(f"unexpected {cls.__name__}")
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    arguments: dict[str, object] = {}
    for name, raw in value.items():
        if name == "@":
            continue
        field = fields.get(name)
        if field is None:
            raise CodecError(f"{cls.__name__} has no field {name!r}")
        declared = COMPILED_FIELD_TYPES.get(cls)
        convert = _CONVERTERS.get(declared[name] if declared else str(field.type))
        if convert is None:
            raise CodecError(f"{cls.__name__}.{name} does not cross the control socket")
        arguments[name] = convert(raw)
    try:
        return cls(**arguments)
    except TypeError as error:
        raise CodecError(f"{cls.__name__}: {error}") from None
