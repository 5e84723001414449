"""Errors raised by the storage repositories, in Meterline's one hierarchy
(`pricing.errors.MeterlineError`).

Callers (CLI, actors) turn these into exit codes or rejections, so each message names the field
or the key at fault.
"""

from __future__ import annotations

from pricing.errors import ConfigError, MeterlineError, UserError


class StorageError(MeterlineError):
    """Base class of the errors the repositories raise on purpose."""


class NotFound(StorageError, UserError, KeyError):
    """The requested row does not exist (also a KeyError, for callers that look things up)."""

    def __str__(self) -> str:
        # KeyError quotes its argument; show the message as written.
        return str(self.args[0]) if self.args else ""


class Conflict(StorageError, UserError):
    """The write would violate uniqueness (e.g. a customer id that is already taken)."""


class InvalidInput(StorageError, UserError):
    """An argument is invalid; the message starts with the field name."""


class SchemaNotMigrated(StorageError, ConfigError):
    """The database's schema is behind this release: `meter db migrate` brings it up to date."""
