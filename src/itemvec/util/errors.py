"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class ItemvecError(Exception):
    """Base class: something the user can fix (bad input, bad option, unknown item)."""

    exit_code = 2


class ConfigError(ItemvecError, ValueError):
    """A configuration field has a bad value; the message names field, value and fix."""


class DataError(ItemvecError, ValueError):
    """Input data is unusable; the message names the file and, where known, row and column."""


class UnknownItemError(ItemvecError, KeyError):
    """An item id the model has never seen."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown item"


class BundleError(ItemvecError):
    """A model bundle is missing, corrupt, truncated or from a newer format version."""


class NoSpaceError(ItemvecError, OSError):
    """A write ran out of disk space; the message names the path and the bytes needed. Still
    an ``OSError``, so callers that survive a failed write (checkpoints) keep doing so."""
