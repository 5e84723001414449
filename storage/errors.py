"""Errors raised by the storage repositories.

Callers (CLI, actors) turn these into exit codes or rejections, so each message names the field
or the key at fault.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of the errors the repositories raise on purpose."""


class NotFound(StorageError, KeyError):
    """The requested row does not exist."""

    def __str__(self) -> str:
        # KeyError quotes its argument; show the message as written.
        return str(self.args[0]) if self.args else ""


class Conflict(StorageError):
    """The write would violate uniqueness (e.g. a customer id that is already taken)."""


class InvalidInput(StorageError, ValueError):
    """An argument is invalid; the message starts with the field name."""
