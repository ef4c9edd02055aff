"""The store's errors: what the CLI and the console tell an operator when a write is refused.

Kept apart from the SQLite code so callers that only catch them (the admin API, the forms)
do not import aiosqlite.
"""

from __future__ import annotations


class StoreError(Exception):
    """A database operation could not be done; the message is fit for an operator."""


class DuplicateError(StoreError):
    """A row with the same key already exists."""


class NotFoundError(StoreError):
    """The row to change or reference does not exist."""
