"""The event log's line (core/eventlines.py) against `Logger.log`: the same handlers reached,
at the same levels, through a record factory or a handler the user added."""

from __future__ import annotations

import io
import itertools
import logging

import pytest

from core.eventlines import log_line


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


def test_the_line_reaches_exactly_the_handlers_logging_would_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = ("a line", "drop this one", "call ended 486")
    levels = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, 35)
    for case in range(6):
        results = []
        for way, prefix in ((log_line, "eq-new"), (logging.Logger.log, "eq-old")):
            last_resort = _Keep("last-resort", logging.WARNING)
            monkeypatch.setattr(logging, "lastResort", last_resort)
            logger, handlers = _tree(case, f"{prefix}{case}")
            logger.setLevel(1)  # log_line runs once the level is known to be enabled
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
