"""What every CLI command shares: its context, the operator's error, the checks and the
command table the families add their subcommands to.

A `UsageError` is printed as one `pbxtui: error: ...` line and exits 2 (DESIGN.md's CLI
contract); a validator's `ValueError` becomes one through `checked`.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO, TypeAlias, TypeVar

from core.settings import Settings
from core.store.database import Store

PROG = "pbxtui"

T = TypeVar("T")
R = TypeVar("R")

# A string: argparse's class is generic only to type checkers.
Actions: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """A bad value from the operator: printed as one line, exit status 2."""


@dataclass(slots=True)
class Context:
    """What a command handler gets."""

    args: argparse.Namespace
    settings: Settings
    store: Store
    out: TextIO
    err: TextIO


Handler = Callable[[Context], Awaitable[int]]


class CommandTable:
    """The `pbxtui COMMAND ACTION` tree: each command family adds its group and actions.
    Every subcommand takes the global options too, so they work before or after it."""

    def __init__(self, commands: Actions, global_options: argparse.ArgumentParser) -> None:
        self._commands = commands
        self._global_options = global_options

    def group(self, name: str, help_text: str) -> Actions:
        sub = self._commands.add_parser(name, help=help_text, parents=[self._global_options])
        return sub.add_subparsers(title="actions", metavar="ACTION", required=True)

    def command(
        self, name: str, help_text: str, actions: Actions | None = None
    ) -> argparse.ArgumentParser:
        """A command without actions (`pbxtui status`), or an action of `actions`, that the
        caller sets its own defaults on (it runs without the database opened for it)."""
        parent = self._commands if actions is None else actions
        return parent.add_parser(name, help=help_text, parents=[self._global_options])

    def action(
        self, actions: Actions, name: str, handler: Handler, help_text: str
    ) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, parents=[self._global_options])
        sub.set_defaults(handler=handler)
        return sub


def checked(check: Callable[[T], None], value: T) -> T:
    """Run a validator; its ValueError becomes a UsageError (exit 2, one line)."""
    try:
        check(value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return value


def checked_call(build: Callable[[], R]) -> R:
    try:
        return build()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
