"""The one usage record every source yields.

Token types use Claude Code's own ``type`` attribute values so that bridge series and native
series share one schema: ``input``, ``output``, ``cacheRead``, ``cacheCreation``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

# No real request (or day) comes near this; above it a count is corrupt, and its cost would
# overflow the ledger's 64-bit integers.
MAX_TOKENS = 10**11


class CostOrigin(enum.StrEnum):
    """Where a record's cost comes from."""

    REPORTED = "reported"  # the tool or provider wrote the cost itself (e.g. old ``costUSD`` lines)
    ESTIMATED = "estimated"  # computed from token counts and the price table
    UNKNOWN = "unknown"  # no price for this model: never shown as $0
    # The provider's own cost source (a billing API) carries this usage's cost: the row adds
    # tokens but no cost of its own, so billed cost is never added to an estimate of itself.
    EXTERNAL = "external"


# The one table of token types: Claude Code's ``type`` attribute value, the ledger column and
# the ``Tokens`` field. Export, ledger totals and reports all read it from here.
TOKEN_TYPES: tuple[tuple[str, str], ...] = (
    ("input", "input"),
    ("output", "output"),
    ("cacheRead", "cache_read"),
    ("cacheCreation", "cache_creation"),
)


# Records and token counts are treated as immutable, but not declared frozen: a frozen
# dataclass costs twice as much to build, and a cold scan builds hundreds of thousands.
@dataclass(slots=True)
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


@dataclass(slots=True)
class UsageRecord:
    """One request's usage, normalised.

    ``dedup_key`` is stable across re-reads, restarts and copies of the same request into other
    files; the ledger keeps one row per key. ``group_key`` (optional) names a wider identity used
    to collapse replays (Claude Code's sidechain replays share ``message.id``); records with the
    same ``dedup_key`` always have the same ``group_key``.
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
    # How many API requests this record stands for: 1 for a transcript line, N for a provider's
    # usage bucket (``num_model_requests``), 0 for a cost-only line item.
    requests: int = 1
    # Merge policy. False: a max-register per field (re-read lines, streamed duplicates). True:
    # the record is the latest state of a bucket (a provider's hour or day, re-polled): it
    # replaces the stored row, up or down, and the totals move by the difference.
    replace: bool = False
    # Priced on top of the tokens (see bridge/surcharges.py): ``usage.speed`` as written ("fast"
    # costs a per-model multiple; None = not stated) and ``usage.server_tool_use`` request counts.
    speed: str | None = None
    web_search_requests: int = 0
    web_fetch_requests: int = 0

    def __post_init__(self) -> None:
        t = self.tokens
        if not (
            0 <= t.input <= MAX_TOKENS
            and 0 <= t.output <= MAX_TOKENS
            and 0 <= t.cache_read <= MAX_TOKENS
            and 0 <= t.cache_creation <= MAX_TOKENS
            and 0 <= t.cache_creation_1h <= t.cache_creation
        ):
            raise ValueError(f"token counts out of range: {t}")
        if self.timestamp.tzinfo is None:
            raise ValueError("UsageRecord.timestamp must be timezone-aware (UTC)")
        if self.cost is None and self.cost_origin not in (CostOrigin.UNKNOWN, CostOrigin.EXTERNAL):
            raise ValueError("a record without cost must have cost_origin=unknown or external")
        if not 0 <= self.requests <= MAX_TOKENS:
            raise ValueError(f"request count out of range: {self.requests}")
        if not (0 <= self.web_search_requests <= MAX_TOKENS and 0 <= self.web_fetch_requests <= MAX_TOKENS):
            raise ValueError(f"server tool counts out of range: {self.web_search_requests}, {self.web_fetch_requests}")

    @property
    def timestamp_ms(self) -> int:
        return int(self.timestamp.astimezone(UTC).timestamp() * 1000)


def record_to_tuple(r: UsageRecord) -> tuple[object, ...]:
    """A compact, fast-to-pickle form (worker processes send records back as tuples)."""
    t = r.tokens
    return (
        r.source, r.provider, r.model, r.timestamp, r.dedup_key,
        t.input, t.output, t.cache_read, t.cache_creation, t.cache_creation_1h,
        r.cost, r.cost_origin.value, r.session_id, r.project, r.group_key, r.is_sidechain, r.requests, r.replace,
        r.speed, r.web_search_requests, r.web_fetch_requests,
    )  # fmt: skip


_ORIGINS = {o.value: o for o in CostOrigin}  # a dict lookup costs a tenth of CostOrigin(value)


def record_from_tuple(v: tuple[Any, ...]) -> UsageRecord:
    # Positional: keyword arguments cost a third more, and a cold scan decodes every record.
    return UsageRecord(
        v[0], v[1], v[2], v[3], v[4], Tokens(v[5], v[6], v[7], v[8], v[9]), v[10], _ORIGINS[v[11]],
        v[12], v[13], v[14], v[15], {}, v[16], v[17], v[18], v[19], v[20],
    )  # fmt: skip


def _reported(r: UsageRecord) -> Decimal | None:
    return r.cost if r.cost_origin is CostOrigin.REPORTED else None


def _merge_into(base: UsageRecord, other: UsageRecord) -> UsageRecord:
    """``base``'s identity with the field-wise max of both usages and reported costs."""
    a, b = _reported(base), _reported(other)
    cost = a if b is None else b if a is None else max(a, b)
    tokens = base.tokens.merge_max(other.tokens)
    speed = base.speed if base.speed is not None else other.speed
    search = max(base.web_search_requests, other.web_search_requests)
    fetch = max(base.web_fetch_requests, other.web_fetch_requests)
    if (
        tokens == base.tokens
        and cost == _reported(base)
        and (speed, search, fetch) == (base.speed, base.web_search_requests, base.web_fetch_requests)
    ):
        return base
    if cost is not None:
        origin = CostOrigin.REPORTED
    else:
        origin = CostOrigin.EXTERNAL if base.cost_origin is CostOrigin.EXTERNAL else CostOrigin.UNKNOWN
    # An explicit constructor call: dataclasses.replace() costs several times more, and this
    # runs for every streamed duplicate line.
    return UsageRecord(
        base.source, base.provider, base.model, base.timestamp, base.dedup_key, tokens, cost, origin,
        base.session_id, base.project, base.group_key, base.is_sidechain, base.extra, base.requests, base.replace,
        speed, search, fetch,
    )  # fmt: skip


def collapse(records: Iterable[UsageRecord]) -> dict[str, UsageRecord]:
    """Merge records of one batch that describe the same request, as the ledger would.

    Same ``dedup_key`` (streamed lines, copies): field-wise max; the first line keeps the
    identity (time, session), unless it is a sidechain line and a non-sidechain one follows.
    Same ``group_key`` with another key (a sidechain replay of a parent message): dropped when
    the non-sidechain record is there, which keeps its own values (as ``_rows.resolve_groups``).
    Reported costs are kept (max); estimated costs are the ledger's job.
    """
    out: dict[str, UsageRecord] = {}
    for rec in records:
        prev = out.get(rec.dedup_key)
        if prev is None or rec.replace:  # a bucket's later state replaces the earlier one
            out[rec.dedup_key] = rec
        elif prev.is_sidechain and not rec.is_sidechain:
            out[rec.dedup_key] = _merge_into(rec, prev)
        else:
            out[rec.dedup_key] = _merge_into(prev, rec)
    parents: dict[str, str] = {}
    for key, rec in out.items():
        if rec.group_key and not rec.is_sidechain:
            parents.setdefault(rec.group_key, key)
    for key in [k for k, r in out.items() if r.is_sidechain and r.group_key in parents]:
        del out[key]
    return out


# Positions in a record tuple (``record_to_tuple``).
_KEY, _COST, _ORIGIN, _GROUP, _SIDE, _REPLACE, _SPEED, _SEARCH, _FETCH = 4, 10, 11, 14, 15, 17, 18, 19, 20
_REPORTED, _EXTERNAL, _UNKNOWN = CostOrigin.REPORTED.value, CostOrigin.EXTERNAL.value, CostOrigin.UNKNOWN.value


def _merge_tuples(base: tuple[Any, ...], other: tuple[Any, ...]) -> tuple[Any, ...]:
    """``_merge_into`` on record tuples (the same rules, without building records)."""
    a = base[_COST] if base[_ORIGIN] == _REPORTED else None
    b = other[_COST] if other[_ORIGIN] == _REPORTED else None
    cost = a if b is None else b if a is None else max(a, b)
    tokens = (
        max(base[5], other[5]), max(base[6], other[6]), max(base[7], other[7]), max(base[8], other[8]),
        max(base[9], other[9]),
    )  # fmt: skip
    speed = base[_SPEED] if base[_SPEED] is not None else other[_SPEED]
    search, fetch = max(base[_SEARCH], other[_SEARCH]), max(base[_FETCH], other[_FETCH])
    if tokens == base[5:10] and cost == a and (speed, search, fetch) == base[_SPEED:]:
        return base
    origin = _REPORTED if cost is not None else _EXTERNAL if base[_ORIGIN] == _EXTERNAL else _UNKNOWN
    return (*base[:5], *tokens, cost, origin, *base[12:_SPEED], speed, search, fetch)


def collapse_tuples(records: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``collapse`` on record tuples (the parse worker's wire format), in the same order."""
    out: dict[str, tuple[Any, ...]] = {}
    get = out.get
    sidechains = False
    for rec in records:
        key = rec[_KEY]
        prev = get(key)
        if prev is None or rec[_REPLACE]:
            out[key] = rec
        elif prev[_SIDE] and not rec[_SIDE]:
            out[key] = _merge_tuples(rec, prev)
        else:
            out[key] = _merge_tuples(prev, rec)
        sidechains = sidechains or rec[_SIDE]
    if not sidechains:
        return list(out.values())
    parents = {r[_GROUP] for r in out.values() if r[_GROUP] and not r[_SIDE]}
    return [r for r in out.values() if not (r[_SIDE] and r[_GROUP] in parents)]
