"""Errors a user can act on: each names the file, field or argument at fault."""

from __future__ import annotations


class UniFashionError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(UniFashionError, ValueError):
    """A config value is missing, unknown or of the wrong type."""


class BackboneError(UniFashionError, RuntimeError):
    """A pretrained backbone cannot be found or loaded."""


class DataError(UniFashionError, ValueError):
    """Malformed dataset input. ``path`` and ``item`` locate the fault."""

    def __init__(self, message: str, *, path: str | None = None, item: str | int | None = None):
        self.path = path
        self.item = item
        self.reason = message
        where = ""
        if path is not None:
            where = str(path)
            if item is not None:
                where += f" [{item}]"
            where += ": "
        super().__init__(where + message)


class PickleCheckpointError(UniFashionError, ValueError):
    """A checkpoint folder holds a pickle-format file (which could run code when read)."""
