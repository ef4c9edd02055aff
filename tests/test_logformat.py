"""The headless log's formatter and handler write what logging.Formatter and a plain
StreamHandler write, line for line, over generated records (tracebacks and odd formats too)."""

from __future__ import annotations

import io
import itertools
import logging
import random
import sys

import pytest

from pbxtui.eventlog import JOURNAL_LOG_FORMAT, LOG_FORMAT
from pbxtui.logbatch import BatchingStreamHandler
from pbxtui.logformat import LineFormatter
from pbxtui.systemd import JournalFormatter

FORMATS = (
    LOG_FORMAT,
    JOURNAL_LOG_FORMAT,
    None,
    "%(asctime)s",
    "%(message)s at %(asctime)s (%(msecs)03d) %(lineno)d %(funcName)s %(threadName)s",
    "%(levelno)d %(missing)s",
    "{asctime} {message}",
)


def _records(count: int) -> list[logging.LogRecord]:
    rng = random.Random(26)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    records = []
    created = 1_700_000_000.0
    for index in range(count):
        # Mostly forward, within and across seconds; sometimes back (a clock step).
        created += rng.choice((0.0004, 0.3, 0.9999, 1.0, 3600.5, -2.5))
        args: tuple[object, ...] = ("x",) if index % 7 == 0 else ()
        msg = "line %s" if args else f"call ended {index}: a -> b, {rng.random():.1f} s"
        record = logging.LogRecord(
            "pbxtui", rng.choice((10, 20, 30, 40)), "(unknown file)", 0, msg, args, None
        )
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        if index % 11 == 0:
            record.exc_info = exc_info
        if index % 13 == 0:
            record.stack_info = "Stack (most recent call last):\n  here"
        records.append(record)
    return records


def _text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    copy = logging.makeLogRecord(dict(vars(record)))
    try:
        return formatter.format(copy)
    except ValueError as error:
        return f"ValueError: {error}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_text_is_logging_formatters_for_every_record(fmt: str | None) -> None:
    style = "{" if fmt is not None and fmt.startswith("{") else "%"
    want_formatter = logging.Formatter(fmt, style=style)  # type: ignore[arg-type]
    got_formatter = LineFormatter(fmt, style=style)
    for record in _records(600):
        assert _text(got_formatter, record) == _text(want_formatter, record)


def test_defaults_are_left_to_logging() -> None:
    fmt = "%(asctime)s %(site)s %(message)s"
    got, want = (cls(fmt, defaults={"site": "edge"}) for cls in (LineFormatter, logging.Formatter))
    for record in _records(100):
        assert _text(got, record) == _text(want, record)


def test_the_journal_format_is_unchanged() -> None:
    class OldJournalFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            text = super().format(record)
            prefix = "<" + {10: "7", 20: "6", 30: "4", 40: "3"}[record.levelno] + ">"
            return "\n".join(prefix + line for line in text.split("\n"))

    old = OldJournalFormatter(JOURNAL_LOG_FORMAT)
    for record in _records(300):
        assert _text(JournalFormatter(), record) == _text(old, record)


def test_a_datefmt_or_another_converter_is_left_to_logging() -> None:
    records = _records(50)
    for formatter, want in (
        (LineFormatter(LOG_FORMAT), logging.Formatter(LOG_FORMAT)),
        (LineFormatter("%(asctime)s"), logging.Formatter("%(asctime)s")),
    ):
        formatter.converter = want.converter = __import__("time").gmtime  # type: ignore[method-assign]
        for record in records:
            assert _text(formatter, record) == _text(want, record)
        formatter.datefmt = want.datefmt = "%H:%M"
        for record in records:
            assert _text(formatter, record) == _text(want, record)


def test_the_handler_writes_what_a_stream_handler_writes_filters_and_levels_included() -> None:
    for level, filtered in itertools.product((logging.NOTSET, logging.WARNING), (False, True)):
        got_stream, want_stream = io.StringIO(), io.StringIO()
        got, want = BatchingStreamHandler(got_stream), logging.StreamHandler(want_stream)
        for handler in (got, want):
            handler.setLevel(level)
            handler.setFormatter(LineFormatter(LOG_FORMAT))
            if filtered:
                handler.addFilter(lambda record: "3" not in record.getMessage())
        for handler, name in ((got, "test-logformat-got"), (want, "test-logformat-want")):
            logger = logging.getLogger(name)
            logger.propagate = False
            logger.handlers[:] = [handler]
            logger.setLevel(logging.DEBUG)
            for record in _records(80):
                record.exc_info = record.stack_info = None
                logger.handle(logging.makeLogRecord(dict(vars(record))))
        assert got_stream.getvalue() == want_stream.getvalue()
        assert got_stream.getvalue()
