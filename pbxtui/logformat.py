"""The headless log's formatter: logging.Formatter's text, with less work per line.

Under load the service writes a line per call. `logging.Formatter.format` spends most of
such a line in frames around one `%` (usesTime twice, formatMessage, the style's format and
_format) and in `time.localtime` + `strftime` for a time text that changes once a second.
`LineFormatter` writes the same text: the `%` done in place for a %-style format without
defaults, the seconds part of asctime made once per second, everything else (a traceback, a
stack, another style, a datefmt, another converter) left to logging.Formatter itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class LineFormatter(logging.Formatter):
    """`logging.Formatter(fmt)`, the same text (tests/test_logformat.py), cheaper per line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # logging.Formatter's arguments, as they are
        # The local time's text, to the second, and the second it is for.
        self._second_text: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        style = self._style
        if (
            record.exc_info
            or record.exc_text
            or record.stack_info
            or type(style) is not logging.PercentStyle
            or style._defaults
        ):
            return super().format(record)
        record.message = record.getMessage()
        if style._fmt.find(style.asctime_search) >= 0:  # style.usesTime(), in place
            record.asctime = self.formatTime(record, self.datefmt)
        try:
            return style._fmt % record.__dict__
        except KeyError as error:
            raise ValueError(f"Formatting field not found in record: {error}") from None

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        created = record.created
        if datefmt or self.converter is not time.localtime or not created >= 0:
            return super().formatTime(record, datefmt)
        second = int(created)  # localtime() floors: the text is the same all this second
        cached_second, text = self._second_text
        if second != cached_second:
            text = time.strftime(self.default_time_format, time.localtime(created))
            self._second_text = (second, text)
        if self.default_msec_format:
            return self.default_msec_format % (text, record.msecs)
        return text
