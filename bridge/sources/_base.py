"""What every source shares: the status it reports and the scan contract.

Each source module has the same shape: where its files are (``roots``), how one record parses,
and what it yields (``UsageRecord``s committed to the shared ledger with their cursors).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from bridge.ledger import CostFunction, Ledger

log = logging.getLogger("tokenbridge.sources")

ProgressHook = Callable[[int], None]


@dataclass(slots=True)
class ScanStats:
    """Outcome of one ingest pass of one source."""

    source: str
    files_seen: int = 0
    files_read: int = 0
    bytes_read: int = 0
    records: int = 0
    new_requests: int = 0
    malformed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    # False when the pass did not cover everything (a file or directory could not be read, the
    # pass was cut short): such a pass never counts as the source's first complete scan.
    complete: bool = True
    # Set when the whole pass failed (the source's own error, e.g. its root is missing).
    failure: Exception | None = None
    # False when the source did not try at all (a provider without its key, a poll still inside
    # the provider's Retry-After): not an attempt, so its health is left as it was.
    attempted: bool = True


@dataclass(slots=True)
class SourceStatus:
    """What ``tokenbridge sources`` shows for one source."""

    name: str
    detected: bool
    enabled: bool
    roots: list[str]
    files: int
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Watch:
    """A directory whose file events wake ``tokenbridge run`` for one source."""

    path: Path
    recursive: bool
    suffixes: tuple[str, ...]  # only files whose name ends with one of these


class Source(Protocol):
    """A data source. ``scan`` must be safe to call any number of times (exactly-once)."""

    name: str

    def status(self) -> SourceStatus: ...

    def pending_bytes(self, ledger: Ledger, since: datetime | None = None) -> int: ...

    def scan(
        self,
        ledger: Ledger,
        pricer: CostFunction,
        since: datetime | None = None,
        progress: ProgressHook | None = None,
        paths: Collection[Path] | None = None,
    ) -> ScanStats:
        """Ingest what is new. ``paths``, when given, limits the pass to those files (file events)."""
        ...

    def watches(self) -> list[Watch]:
        """File events that should wake the daemon for this source (none for polled sources)."""
        ...

    def due_in(self, ledger: Ledger, now: float) -> float | None:
        """Seconds until this source wants a pass without a file event (a poll schedule, a
        backoff); None when only file events (and the safety rescan) drive it."""
        ...


class BaseSource:
    """Defaults for the optional parts of ``Source``: no pending-size estimate, no watches, no
    schedule. Drivers and sources inherit it and override what applies."""

    name: str

    def pending_bytes(self, ledger: Ledger, since: datetime | None = None) -> int:
        return 0

    def watches(self) -> list[Watch]:
        return []

    def due_in(self, ledger: Ledger, now: float) -> float | None:
        return None


def expand_dir_list(value: str) -> list[Path]:
    """A comma-separated list of directories, ``~`` expanded, empty items dropped."""
    return [Path(os.path.expanduser(item.strip())) for item in value.split(",") if item.strip()]


@functools.lru_cache(maxsize=1024)
def infer_provider(model: str) -> str:
    """Which provider served a model name written by an Anthropic-compatible client.

    Claude Code can talk to Anthropic-compatible endpoints of other providers
    (``ANTHROPIC_BASE_URL``); the model name is the only hint left in the transcript.
    """
    m = model.lower()
    if m.startswith(("kimi", "moonshot")):
        return "moonshot"
    if m.startswith("deepseek"):
        return "deepseek"
    if m.startswith(("gpt-", "o1", "o3", "o4", "codex")):
        return "openai"
    if "/" in m:
        return "openrouter"
    return "anthropic"
