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


class PollError(SourceError):
    """A provider API poll failed. ``kind`` names the failure for health and ``sources``
    (``http_401``, ``http_429``, ``network``, ``bad_response``, ...); ``retry_after`` is the
    provider's ``Retry-After`` in seconds when it sent one. Messages never hold a key: they are
    built from status codes, paths and scrubbed provider messages."""

    def __init__(self, source: str, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(source, message)
        self.kind = kind
        self.retry_after = retry_after


class ParseError(TokenbridgeError):
    """One record could not be parsed. Hot paths count these instead of raising them."""


class LedgerError(TokenbridgeError):
    """The ledger database is unusable (corrupt, locked for too long, newer schema)."""


class ExportError(TokenbridgeError):
    """An export did not reach its destination. Never fatal: totals are re-sent next time."""


class CentralError(TokenbridgeError):
    """The team's central store (``report --central``) could not answer: unreachable, refused, or not a
    Prometheus-compatible API. Messages name the store's URL, never its credentials."""
