"""The events' written-out __init__s (core/events.py) against their dataclass declarations.

The module is compiled, and a dataclass-generated __init__ would run interpreted: each event
writes its own. These tests hold every one to what the dataclass declares (field order, which
are keyword-only, the defaults), and keep equality, repr and pickling (the cluster's links
carry events between processes) as a dataclass gives them.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import random
import time
from typing import Any

import pytest

from core import events
from core.control.codec import COMPILED_FIELD_TYPES, EVENT_TYPES, from_wire, to_wire

ALL_EVENTS = (events.Event, *EVENT_TYPES)


def _value(field: dataclasses.Field[Any], rng: random.Random, cls: type[Any]) -> object:
    """A random value of the field's declared type: as the codec declares it (a compiled
    class keeps no annotation text), else as written."""
    declared = COMPILED_FIELD_TYPES.get(cls, {}).get(field.name)
    written = field.type if isinstance(field.type, str) else field.type.__name__
    kind = declared or written
    if kind.startswith("tuple[str, int]"):
        return (f"192.0.2.{rng.randrange(256)}", rng.randrange(65536))
    if kind == "float":
        return rng.choice([0.0, 1.5, rng.uniform(0, 2e9), math.inf])
    if kind == "int":
        return rng.randrange(-5, 100_000)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "bytes":
        return rng.randbytes(rng.randrange(40))
    return "".join(rng.choice("abc:@ é\x1b") for _ in range(rng.randrange(12)))


def _declared_default(field: dataclasses.Field[Any]) -> object:
    if field.default is not dataclasses.MISSING:
        return field.default
    return dataclasses.MISSING  # `at`: the clock's


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda cls: cls.__name__)
def test_an_event_built_by_keyword_or_position_holds_what_the_dataclass_declares(
    cls: type[events.Event],
) -> None:
    rng = random.Random(cls.__name__)
    fields = dataclasses.fields(cls)
    positional = [f for f in fields if not f.kw_only]
    keyword_only = [f for f in fields if f.kw_only]
    assert "at" in [f.name for f in keyword_only]
    for _ in range(50):
        values = {f.name: _value(f, rng, cls) for f in fields}
        by_keyword = cls(**values)
        by_position = cls(
            *(values[f.name] for f in positional),
            **{f.name: values[f.name] for f in keyword_only},
        )
        for f in fields:
            assert getattr(by_keyword, f.name) == values[f.name], f.name
            assert getattr(by_position, f.name) == values[f.name], f.name
        assert by_keyword == by_position
        assert repr(by_keyword) == (
            f"{cls.__name__}(" + ", ".join(f"{f.name}={values[f.name]!r}" for f in fields) + ")"
        )
        # A field's change is seen by equality; a copy through pickle is equal.
        assert pickle.loads(pickle.dumps(by_keyword, pickle.HIGHEST_PROTOCOL)) == by_keyword
        changed = fields[rng.randrange(len(fields))]
        other = cls(**{**values, changed.name: _value(changed, rng, cls)})
        assert (other == by_keyword) == (getattr(other, changed.name) == values[changed.name])


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda cls: cls.__name__)
def test_an_event_built_with_its_required_fields_has_the_declared_defaults(
    cls: type[events.Event],
) -> None:
    rng = random.Random(cls.__name__)
    fields = dataclasses.fields(cls)
    required = [
        f for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]  # fmt: skip
    values = {f.name: _value(f, rng, cls) for f in required}
    before = time.time()
    event = cls(*(values[f.name] for f in required))
    after = time.time()
    for f in fields:
        default = _declared_default(f)
        if f.name in values:
            assert getattr(event, f.name) == values[f.name]
        elif default is dataclasses.MISSING:
            assert f.name == "at"
            assert before <= event.at <= after
        else:
            assert getattr(event, f.name) == default, f.name
    # Too many positional arguments, or an unknown keyword, fail as a dataclass's would.
    with pytest.raises(TypeError):
        cls(*(values[f.name] for f in required), *([None] * (len(fields) + 1)))
    with pytest.raises(TypeError):
        cls(*(values[f.name] for f in required), no_such_field=1)


def test_the_keyword_only_fields_stay_keyword_only() -> None:
    with pytest.raises(TypeError):
        events.SourceBanned("banned", "192.0.2.1", "", "", "", 1, 5.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        events.ServerEvent("hello", "info", 1.0)  # type: ignore[misc]
    banned = events.SourceBanned("banned", "192.0.2.1", until=5.0, reason="admin", at=2.0)
    assert (banned.until, banned.reason, banned.at, banned.count) == (5.0, "admin", 2.0, 1)
    unbanned = events.SourceUnbanned("unbanned", "192.0.2.1", "expired", at=3.0)
    assert (unbanned.kind, unbanned.detail, unbanned.at) == ("unban", "expired", 3.0)


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_every_event_crosses_the_control_socket_intact(cls: type[events.Event]) -> None:
    rng = random.Random(cls.__name__ + "wire")
    for _ in range(20):
        values = {f.name: _value(f, rng, cls) for f in dataclasses.fields(cls)}
        if "until" in values and values["until"] == math.inf:
            values["until"] = 7.0  # infinity travels as null, and comes back as infinity
        event = cls(**values)
        assert from_wire(to_wire(event), events.Event) == event


def test_an_events_kind_is_what_the_feed_counts_and_no_field() -> None:
    """`kind` is a property: as a class variable, a compiled dataclass would make it a field
    (in its repr, its equality and what crosses the control socket)."""
    kinds = {
        events.Event: "event",
        events.SipTraffic: "traffic",
        events.ContactRegistered: "registered",
        events.ContactRefreshed: "refreshed",
        events.ContactUnregistered: "unregistered",
        events.ContactExpired: "expired",
        events.ContactUnreachable: "unreachable",
        events.SecurityEvent: "security",
        events.SourceBanned: "ban",
        events.SourceUnbanned: "unban",
        events.CallEvent: "call",
        events.ServerEvent: "server",
    }
    assert set(kinds) == set(ALL_EVENTS)
    rng = random.Random(7)
    for cls, kind in kinds.items():
        assert "kind" not in {f.name for f in dataclasses.fields(cls)}
        event = cls(**{f.name: _value(f, rng, cls) for f in dataclasses.fields(cls)})
        assert event.kind == kind
        assert "kind" not in to_wire(event) if cls is not events.Event else True
    bus = events.EventBus()
    bus.publish(events.CallEvent("c", "ended", "a", "b"))
    bus.publish(events.SourceBanned("flood-banned", "192.0.2.1"))
    bus.publish(events.ServerEvent("up"))
    assert bus.counts == {"call": 1, "flood-banned": 1, "server": 1}
