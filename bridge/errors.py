"""One exception hierarchy for the bridge, by layer.

Config errors fail fast with the exact key. Source and parse errors are caught on the hot
path, counted and logged once; they never stop a scan. Export errors are warnings: the ledger
keeps everything and the next successful export carries the full totals.
"""

from __future__ import annotations


class TokenbridgeError(Exception):
    """Base class of every error the bridge raises on purpose."""


class ConfigError(TokenbridgeError):
    """Bad configuration. ``key`` names the exact setting (file key or environment variable)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class SourceError(TokenbridgeError):
    """A data source could not be read (missing root, permission denied, unreadable file)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class ParseError(TokenbridgeError):
    """One record could not be parsed. Hot paths count these instead of raising them."""


class LedgerError(TokenbridgeError):
    """The ledger database is unusable (corrupt, locked for too long, newer schema)."""


class ExportError(TokenbridgeError):
    """An export did not reach its destination. Never fatal: totals are re-sent next time."""
