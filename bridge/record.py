"""The one usage record every source yields.

Token types use Claude Code's own ``type`` attribute values so that bridge series and native
series share one schema: ``input``, ``output``, ``cacheRead``, ``cacheCreation``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

TOKEN_TYPES: tuple[str, ...] = ("input", "output", "cacheRead", "cacheCreation")


class CostOrigin(enum.StrEnum):
    """Where a record's cost comes from."""

    REPORTED = "reported"  # the tool or provider wrote the cost itself (e.g. old ``costUSD`` lines)
    ESTIMATED = "estimated"  # computed from token counts and the price table
    UNKNOWN = "unknown"  # no price for this model: never shown as $0


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts of one request. ``cache_creation`` is the total of all cache writes."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    # Split of cache_creation by TTL when the source says so (priced differently).
    cache_creation_1h: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_creation

    def by_type(self) -> dict[str, int]:
        """Counts keyed by Claude Code's ``type`` attribute values."""
        return {
            "input": self.input,
            "output": self.output,
            "cacheRead": self.cache_read,
            "cacheCreation": self.cache_creation,
        }

    def merge_max(self, other: Tokens) -> Tokens:
        """Field-wise maximum: the most complete view of one request seen so far.

        Streamed lines repeat a message with a growing ``output_tokens``; a max-register per
        field is order-independent and idempotent, so re-reading any line never adds tokens.
        """
        return Tokens(
            max(self.input, other.input),
            max(self.output, other.output),
            max(self.cache_read, other.cache_read),
            max(self.cache_creation, other.cache_creation),
            max(self.cache_creation_1h, other.cache_creation_1h),
        )


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One request's usage, normalised.

    ``dedup_key`` is stable across re-reads, restarts and copies of the same request into other
    files; the ledger keeps one row per key. ``group_key`` (optional) names a wider identity used
    to collapse replays (Claude Code's sidechain replays share ``message.id``).
    """

    source: str
    provider: str
    model: str
    timestamp: datetime
    dedup_key: str
    tokens: Tokens
    cost: Decimal | None = None
    cost_origin: CostOrigin = CostOrigin.UNKNOWN
    session_id: str | None = None
    project: str | None = None
    group_key: str | None = None
    is_sidechain: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError("UsageRecord.timestamp must be timezone-aware (UTC)")
        if self.cost is None and self.cost_origin is not CostOrigin.UNKNOWN:
            raise ValueError("a record without cost must have cost_origin=unknown")

    @property
    def timestamp_ms(self) -> int:
        return int(self.timestamp.astimezone(UTC).timestamp() * 1000)
