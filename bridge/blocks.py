"""``tokenbridge report blocks``: usage in Claude's five-hour session blocks, with the active block's burn rate.

The rule (local-formats.md §1.7, as ccusage and Claude-Code-Usage-Monitor compute it): a block starts at its first
request's hour, floored in UTC epoch time, and lasts five hours, the half-open interval ``[start, start + 5 h)``.
The first request at or after a block's end starts the next block; an idle stretch between blocks is shown as a
gap. Because a block ends five hours after it starts, a pause of five hours or more always starts a new block.

Blocks depend on every earlier request (a busy day tiles into consecutive blocks), so they are computed over the
whole ledger and ``--since``/``--until`` keep the blocks that *start* on those local days. The active block is the
one that contains "now"; its burn rate is its usage divided by the time from its first request to now, and its
projection adds that rate until the block's end. Costs without a known price stay unknown, never $0.

By default only ``claude_transcripts`` is read: the one Claude source with the time of each request (the
stats cache holds daily sums). ``--source`` picks others.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from bridge.errors import ConfigError
from bridge.ledger import Ledger
from bridge.report import Line, day_start_ms

BLOCK_MS = 5 * 3600_000
_HOUR_MS = 3600_000
DEFAULT_SOURCES = ("claude_transcripts",)


@dataclass(slots=True)
class Block:
    """One five-hour block (or, with ``gap``, the idle time between two)."""

    start_ms: int
    end_ms: int
    line: Line = field(default_factory=Line)
    models: set[str] = field(default_factory=set)
    first_ms: int | None = None
    last_ms: int | None = None
    gap: bool = False
    active: bool = False
    # Active block only: per hour of the time since its first request, and at the block's end at that rate.
    tokens_per_minute: Decimal | None = None
    cost_per_hour: Decimal | None = None
    projected_tokens: int | None = None
    projected_cost: Decimal | None = None

    def as_json(self, tz: tzinfo, now_ms: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "start": _iso(self.start_ms, tz),
            "end": _iso(self.end_ms, tz),
            "isGap": self.gap,
            "isActive": self.active,
        }
        if self.gap:
            return item
        item.update(
            firstActivity=_iso(self.first_ms, tz),
            lastActivity=_iso(self.last_ms, tz),
            **self.line.as_json(),
            modelsUsed=sorted(self.models),
        )
        if self.active:
            cost = self.projected_cost
            item["burnRate"] = {
                "tokensPerMinute": str(self.tokens_per_minute),
                "costPerHour": None if self.cost_per_hour is None else str(self.cost_per_hour),
            }
            item["projection"] = {
                "totalTokens": self.projected_tokens,
                "totalCost": None if cost is None else str(cost),
                "remainingMinutes": max(0, (self.end_ms - now_ms) // 60_000),
            }
        return item


def _iso(ms: int | None, tz: tzinfo) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz).isoformat()


@dataclass(slots=True)
class BlocksReport:
    timezone: str
    blocks: list[Block]
    totals: Line
    now_ms: int
    sources: tuple[str, ...]

    def active(self) -> Block | None:
        return next((b for b in self.blocks if b.active), None)

    def as_json(self, tz: tzinfo) -> dict[str, Any]:
        items = [b.as_json(tz, self.now_ms) for b in self.blocks]
        return {"blocks": items, "totals": self.totals.as_json(), "timezone": self.timezone, "sources": self.sources}


def split(entries: Sequence[tuple[int, str, Sequence[Any], str, str]]) -> list[Block]:
    """Blocks of ``entries`` (time ms, model, the seven sums, provider, source), oldest first, gaps between."""
    out: list[Block] = []
    cur: Block | None = None
    for ts, model, sums, provider, source in sorted(entries, key=lambda e: e[0]):
        if cur is None or ts >= cur.end_ms:
            start = ts - ts % _HOUR_MS
            if cur is not None and start > cur.end_ms:
                out.append(Block(cur.end_ms, start, gap=True))
            cur = Block(start, start + BLOCK_MS, first_ms=ts)
            out.append(cur)
        cur.line.add(sums, provider, source)
        cur.models.add(model)
        cur.last_ms = ts
    return out


def _rates(b: Block, now_ms: int) -> None:
    """The active block's burn rate (since its first request) and where it ends at that rate."""
    assert b.first_ms is not None
    minutes = Decimal(max(now_ms - b.first_ms, 60_000)) / 60_000  # at least a minute: no rate from one instant
    left = Decimal(max(b.end_ms - now_ms, 0)) / 60_000
    b.tokens_per_minute = (Decimal(b.line.total) / minutes).quantize(Decimal("0.01"))
    b.projected_tokens = b.line.total + int(Decimal(b.line.total) / minutes * left)
    cost = b.line.cost
    if cost is not None:
        per_minute = cost / minutes
        b.cost_per_hour = (per_minute * 60).quantize(Decimal("0.000001"))
        b.projected_cost = (cost + per_minute * left).quantize(Decimal("0.000001"))


def build(
    ledger: Ledger,
    tz: tzinfo,
    since: date | None = None,
    until: date | None = None,
    sources: Sequence[str] | None = None,
    exclude: Sequence[tuple[str, str, int]] = (),
    now: float | None = None,
) -> BlocksReport:
    """The blocks of ``sources`` (default ``DEFAULT_SOURCES``) that start on the local days since..until."""
    if since and until and since > until:
        raise ConfigError("--since/--until", f"--since {since.isoformat()} is after --until {until.isoformat()}")
    chosen = tuple(sources) if sources else DEFAULT_SOURCES
    now_ms = int((time.time() if now is None else now) * 1000)
    rows = ledger.aggregate("ms", sources=chosen, extra=["source"], exclude=exclude)
    blocks = split([(int(r[0]), str(r[1]), r[4:11], str(r[2]), str(r[11])) for r in rows])
    lo = day_start_ms(since, tz) if since else None
    hi = day_start_ms(until + timedelta(days=1), tz) if until and until < date.max else None
    kept = [b for b in blocks if (lo is None or b.start_ms >= lo) and (hi is None or b.start_ms < hi)]
    while kept and kept[0].gap:
        kept.pop(0)
    while kept and kept[-1].gap:
        kept.pop()
    totals = Line()
    for b in kept:
        if b.gap:
            continue
        totals.merge(b.line)
        if b.start_ms <= now_ms < b.end_ms:
            b.active = True
            _rates(b, now_ms)
    return BlocksReport(getattr(tz, "key", None) or str(tz), kept, totals, now_ms, chosen)


def table(rep: BlocksReport, tz: tzinfo, cell: Any, cells: Any) -> Any:
    """The blocks as a Rich table; ``cell``/``cells`` are the report table's escaping and number formatting."""
    from rich.table import Table

    t = Table(title=cell(f"5-hour blocks ({rep.timezone}) of {', '.join(rep.sources)}"))
    t.add_column("Block start", no_wrap=True)
    t.add_column("Status", no_wrap=True)
    t.add_column("Models", overflow="fold")
    for col in ("Input", "Output", "Cache create", "Cache read", "Total tokens", "Cost (USD)"):
        t.add_column(col, justify="right", no_wrap=True)
    for b in rep.blocks:
        start = _local(b.start_ms, tz)
        if b.gap:
            t.add_row(start, f"gap ({_duration(b.end_ms - b.start_ms)})", "", *[""] * 6, style="dim")
            continue
        status = f"ACTIVE ({_duration(b.end_ms - rep.now_ms)} left)" if b.active else "ended"
        t.add_row(start, status, cell(", ".join(sorted(b.models))), *cells(b.line), style="bold" if b.active else "")
    t.add_section()
    t.add_row("Total", "", "", *cells(rep.totals), style="bold")
    return t


def active_summary(rep: BlocksReport, tz: tzinfo) -> list[str]:
    """Lines under the table: the active block's burn rate and projection (or that there is none)."""
    b = rep.active()
    if b is None:
        ended = [x for x in rep.blocks if not x.gap]
        last = f": the last one ended {_local(ended[-1].end_ms, tz)}" if ended else ""
        return [f"No active block (no request in the five hours' block that contains now){last}."]
    rate = f"{b.tokens_per_minute:,.0f} tokens/min"
    cost = "cost unknown (no known price)" if b.cost_per_hour is None else f"${b.cost_per_hour:,.2f}/h"
    proj_cost = "unknown" if b.projected_cost is None else f"${b.projected_cost:,.2f}"
    more = " + requests without a known price" if b.line.unpriced and b.projected_cost is not None else ""
    return [
        f"Active block: {_local(b.start_ms, tz)} to {_local(b.end_ms, tz)}, {_duration(b.end_ms - rep.now_ms)} left.",
        f"Burn rate (since its first request): {rate}, {cost}.",
        f"Projected at block end: {b.projected_tokens:,} tokens, {proj_cost}{more}.",
    ]


def _local(ms: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _duration(ms: int) -> str:
    minutes = max(ms, 0) // 60_000
    return f"{minutes // 60}h {minutes % 60:02d}m"
