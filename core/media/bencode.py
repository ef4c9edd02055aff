"""Bencode (BEP 3), the encoding of rtpengine's ng control protocol; sans-I/O.

Four types: byte strings `4:spam`, integers `i42e`, lists `l...e`, dictionaries `d...e` with
byte-string keys in sorted order. Strings here go out as UTF-8 and come back as bytes, which
the caller decodes where it expects text. Decoding is bounded (`MAX_DEPTH`, the input's own
length) and raises `BencodeError` alone, whatever the bytes: a reply is wire input.
"""

from __future__ import annotations

MAX_DEPTH = 32

Value = bytes | int | list["Value"] | dict[bytes, "Value"]
Encodable = str | bytes | int | list["Encodable"] | tuple["Encodable", ...] | dict[str, "Encodable"]


class BencodeError(ValueError):
    """Not bencode, or nested too deep."""


def encode(value: Encodable) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Encodable, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str | bytes):
        data = value.encode("utf-8") if isinstance(value, str) else value
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key in sorted(value, key=lambda k: k.encode("utf-8")):
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """One value filling `data` exactly."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError("trailing bytes after the value")
    return value


def _decode(data: bytes, at: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deep")
    if at >= len(data):
        raise BencodeError("truncated")
    lead = data[at]
    if lead == 0x69:  # i
        end = data.find(b"e", at + 1)
        if end < 0:
            raise BencodeError("unterminated integer")
        digits = data[at + 1 : end]
        if not digits or not (digits.lstrip(b"-").isdigit()) or digits.count(b"-") > 1:
            raise BencodeError("bad integer")
        if len(digits) > 20:
            raise BencodeError("integer too long")
        return int(digits), end + 1
    if lead == 0x6C:  # l
        items: list[Value] = []
        at += 1
        while at < len(data) and data[at] != 0x65:
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        if at >= len(data):
            raise BencodeError("unterminated list")
        return items, at + 1
    if lead == 0x64:  # d
        mapping: dict[bytes, Value] = {}
        at += 1
        while at < len(data) and data[at] != 0x65:
            key, at = _decode(data, at, depth + 1)
            if not isinstance(key, bytes):
                raise BencodeError("dictionary key is not a string")
            mapping[key], at = _decode(data, at, depth + 1)
        if at >= len(data):
            raise BencodeError("unterminated dictionary")
        return mapping, at + 1
    if 0x30 <= lead <= 0x39:  # a digit: length-prefixed string
        colon = data.find(b":", at)
        if colon < 0 or colon - at > 10 or not data[at:colon].isdigit():
            raise BencodeError("bad string length")
        start = colon + 1
        end = start + int(data[at:colon])
        if end > len(data):
            raise BencodeError("truncated string")
        return data[start:end], end
    raise BencodeError("unknown type")
