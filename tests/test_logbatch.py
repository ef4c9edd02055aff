"""The headless log handler: lines at once before batching starts, then in batches."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Iterator

from pbxtui import logbatch
from pbxtui.logbatch import BatchingStreamHandler


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test-logbatch-{id(handler)}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    return logger


def _handler() -> tuple[BatchingStreamHandler, io.StringIO]:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    return handler, stream


@contextlib.contextmanager
def _batching() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose handler batches on the running loop, stopped when the test ends."""
    handler, stream = _handler()
    handler.start_batching(asyncio.get_running_loop())
    try:
        yield _logger(handler), stream
    finally:
        handler.stop_batching()


def test_each_line_goes_out_at_once_before_batching_starts() -> None:
    handler, stream = _handler()
    _logger(handler).info("starting")
    assert stream.getvalue() == "INFO starting\n"


async def test_info_lines_wait_for_the_tick_then_go_out_in_order() -> None:
    with _batching() as (logger, stream):
        logger.info("call answered 1")
        logger.info("call ended 1")
        assert stream.getvalue() == ""
        await asyncio.sleep(logbatch.FLUSH_SECONDS * 2.5)
        assert stream.getvalue() == "INFO call answered 1\nINFO call ended 1\n"
        logger.info("call answered 2")
        await asyncio.sleep(logbatch.FLUSH_SECONDS * 2.5)  # the tick keeps running
        assert stream.getvalue().endswith("INFO call answered 2\n")


async def test_a_warning_goes_out_at_once_with_what_waited_before_it() -> None:
    with _batching() as (logger, stream):
        logger.info("registered alice")
        logger.warning("ban 192.0.2.7")
        assert stream.getvalue() == "INFO registered alice\nWARNING ban 192.0.2.7\n"


async def test_a_full_batch_goes_out_without_waiting() -> None:
    with _batching() as (logger, stream):
        for number in range(logbatch.MAX_BATCH_LINES - 1):
            logger.info("line %d", number)
        assert stream.getvalue() == ""
        logger.info("the last line of a batch")
        lines = stream.getvalue().splitlines()
        assert len(lines) == logbatch.MAX_BATCH_LINES
        assert lines[-1] == "INFO the last line of a batch"


async def test_stop_batching_writes_what_waits_and_goes_back_to_a_line_at_a_time() -> None:
    handler, stream = _handler()
    logger = _logger(handler)
    handler.start_batching(asyncio.get_running_loop())
    logger.info("stopping")
    handler.stop_batching()
    assert stream.getvalue() == "INFO stopping\n"
    logger.info("stopped")
    assert stream.getvalue() == "INFO stopping\nINFO stopped\n"


class _BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("journald went away")


async def test_a_broken_stream_loses_the_lines_but_not_the_server() -> None:
    handler = BatchingStreamHandler(_BrokenStream())
    logger = _logger(handler)
    handler.start_batching(asyncio.get_running_loop())
    logger.info("held")
    handler.flush()  # must not raise
    logger.error("written at once, and lost")
    handler.stop_batching()
