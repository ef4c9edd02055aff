"""The event log's own record and dispatch (core/eventlines.py) against logging's: the same
record, attribute for attribute, the same handlers, the same text in every format of ours."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from core.eventlines import (
    UNKNOWN_FILE,
    UNKNOWN_FUNCTION,
    call_handlers,
    fast_record,
    general_record,
    log_line,
)
from pbxtui.eventlog import JOURNAL_LOG_FORMAT, LOG_FORMAT
from pbxtui.systemd import JournalFormatter

LINE = "call ended 200: al\\x1bice -> bob (c1@x), 12.5 s, BYE from caller"
FLAGS = ("logThreads", "logProcesses", "logMultiprocessing")


def _times(count: int) -> list[float]:
    rng = random.Random(21)
    fixed = [0.0, 1.0, 1_700_000_000.0, 1_700_000_000.999_999_9, 1_700_000_000.000_000_1]
    return fixed + [rng.uniform(1e9, 2e9) for _ in range(count)]


def _logging_record(name: str, level: int, line: str, ct: float) -> logging.LogRecord:
    """What logging itself builds, with its clock stopped at `ct`."""
    original = time.time
    time.time = lambda: ct
    try:
        return logging.LogRecord(name, level, UNKNOWN_FILE, 0, line, (), None, UNKNOWN_FUNCTION)
    finally:
        time.time = original


@contextmanager
def _flags(values: tuple[bool, ...]) -> Iterator[None]:
    saved = tuple(getattr(logging, flag) for flag in FLAGS)
    for flag, value in zip(FLAGS, values, strict=True):
        setattr(logging, flag, value)
    try:
        yield
    finally:
        for flag, value in zip(FLAGS, saved, strict=True):
            setattr(logging, flag, value)


def test_the_record_is_loggings_own_attribute_for_attribute_and_in_order() -> None:
    logging.addLevelName(25, "NOTICE-25")
    levels = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, 25, 7, 99)
    names = ("pbxtui", "pbxtui.bench", "", "a.b.c")
    for values in itertools.product((True, False), repeat=3):
        with _flags(values):
            for ct, level, name in itertools.product(_times(40), levels, names):
                got = fast_record(name, level, LINE, ct)
                want = _logging_record(name, level, LINE, ct)
                assert type(got) is logging.LogRecord
                assert list(vars(got).items()) == list(vars(want).items()), (values, ct, level)


def test_the_record_names_the_thread_and_task_it_was_made_in() -> None:
    made: list[tuple[logging.LogRecord, logging.LogRecord]] = []

    def make() -> None:
        made.append((fast_record("x", 20, LINE, 5.5), _logging_record("x", 20, LINE, 5.5)))

    thread = threading.Thread(target=make, name="not-the-main-thread")
    thread.start()
    thread.join()

    async def in_a_task() -> None:
        make()

    async def main() -> None:
        await asyncio.create_task(in_a_task(), name="a-named-task")

    asyncio.run(main())
    assert made[0][0].threadName == "not-the-main-thread"
    for got, want in made:
        assert list(vars(got).items()) == list(vars(want).items())


class _Keep(logging.Handler):
    def __init__(self, tag: str, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.tag = tag
        self.seen: list[tuple[str, str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((self.tag, record.getMessage(), record.levelno, record.name))


class _SubLogger(logging.Logger):
    pass


def _tree(case: int, prefix: str) -> tuple[logging.Logger, list[_Keep]]:
    """Loggers prefix.a.b.c with handlers at several levels, shaped by `case`."""
    top = logging.getLogger(prefix)
    middle = logging.getLogger(prefix + ".a.b")
    leaf: logging.Logger = logging.getLogger(prefix + ".a.b.c")
    if case == 5:
        leaf = _SubLogger(prefix + ".a.b.c")
        leaf.parent = middle
    handlers = [_Keep("top-debug"), _Keep("top-warning", logging.WARNING)]
    top.handlers[:] = handlers
    top.propagate = False
    middle.handlers[:] = [_Keep("middle-info", logging.INFO)] if case != 4 else []
    middle.propagate = case != 2
    leaf.handlers[:] = [_Keep("leaf-error", logging.ERROR), _Keep("leaf")] if case != 4 else []
    leaf.filters.clear()
    leaf.disabled = case == 3
    if case == 1:
        leaf.addFilter(lambda record: "drop" not in record.getMessage())
    if case == 4:
        middle.propagate = False  # no handler on the way: logging's last resort
    handlers = [*handlers, *middle.handlers, *leaf.handlers]
    return leaf, handlers  # type: ignore[return-value]


def _old_path(logger: logging.Logger, level: int, line: str) -> None:
    """What EventLogger did before core/eventlines.py."""
    logger.handle(general_record(logger, level, line))


def test_the_line_reaches_exactly_the_handlers_logging_would_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = ("a line", "drop this one", "call ended 486")
    levels = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, 35)
    for case in range(6):
        results = []
        for way, prefix in ((log_line, "eq-new"), (_old_path, "eq-old")):
            last_resort = _Keep("last-resort", logging.WARNING)
            monkeypatch.setattr(logging, "lastResort", last_resort)
            logger, handlers = _tree(case, f"{prefix}{case}")
            for level, line in itertools.product(levels, lines):
                way(logger, level, line)
            seen = [
                (tag, message, level, name.replace(prefix, "P"))
                for handler in [*handlers, last_resort]
                for tag, message, level, name in handler.seen
            ]
            results.append(seen)
        assert results[0] == results[1], case
        assert results[0] or case == 3  # only the disabled logger gets nothing


def test_an_installed_record_factory_still_makes_the_record() -> None:
    made: list[str] = []
    default = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = default(*args, **kwargs)  # type: ignore[arg-type]
        record.extra_field = "from the factory"
        made.append(record.getMessage())
        return record

    logger = logging.getLogger("eq-factory")
    keep = _Keep("keep")
    logger.handlers[:] = [keep]
    logger.propagate = False
    logging.setLogRecordFactory(factory)
    try:
        log_line(logger, logging.INFO, "made by the factory")
    finally:
        logging.setLogRecordFactory(default)
    assert made == ["made by the factory"]
    assert keep.seen == [("keep", "made by the factory", logging.INFO, "eq-factory")]


def test_call_handlers_with_no_handler_anywhere_is_loggings_last_resort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logging, "lastResort", logging.StreamHandler(stream))
    logger = logging.getLogger("eq-nohandler")
    logger.handlers[:] = []
    logger.propagate = False
    call_handlers(logger, fast_record(logger.name, logging.WARNING, "nobody listens", 1.0))
    assert stream.getvalue() == "nobody listens\n"


def test_the_text_in_every_format_of_ours_is_unchanged() -> None:
    formatters = [
        logging.Formatter(LOG_FORMAT),
        logging.Formatter(JOURNAL_LOG_FORMAT),
        JournalFormatter(),
        logging.Formatter(),
        logging.Formatter("%(asctime)s %(msecs)d %(relativeCreated)d %(filename)s %(module)s"),
    ]
    for ct, level in itertools.product(_times(200), (logging.INFO, logging.WARNING)):
        got = fast_record("pbxtui", level, LINE, ct)
        want = _logging_record("pbxtui", level, LINE, ct)
        for formatter in formatters:
            assert formatter.format(got) == formatter.format(want)


def test_a_handler_the_user_added_gets_the_line_in_its_own_format() -> None:
    root = logging.getLogger()
    stream = io.StringIO()
    added = logging.StreamHandler(stream)
    added.setFormatter(logging.Formatter("%(levelname)s|%(name)s|%(message)s|%(lineno)d"))
    root.addHandler(added)
    try:
        logger = logging.getLogger("eq-user.pbxtui")
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.INFO)
        log_line(logger, logging.INFO, "call ended 200: alice -> bob")
    finally:
        root.removeHandler(added)
    assert stream.getvalue() == "INFO|eq-user.pbxtui|call ended 200: alice -> bob|0\n"
