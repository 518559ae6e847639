"""One series model for every writer of metrics: the live exporter, the backfill and status.

A series is a metric name plus its sorted attributes. Its value is the ledger's cumulative
total; its start time is stored in the ledger the first time any process exports it and reused
forever after (a backend that writes a zero at a series' start never sees a fake reset).

**Exported values never go down**, across processes: the last exported value of every series
is kept in the ledger's ``series`` table, every writer takes the larger of the ledger's total
and that value, and ``ExportLock`` serialises "read totals, decide values, send" between the
processes sharing a ledger (``tokenbridge run`` and a ``tokenbridge sync`` beside it), so a
writer holding an older total can never send it after another writer sent a newer one.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from bridge.ledger import Ledger, SeriesTotal
from bridge.record import TOKEN_TYPES
from bridge.views import attribution_sources

log = logging.getLogger("tokenbridge.series")

TOKEN_METRIC = "claude_code.token.usage"  # noqa: S105 - a metric name, not a password
COST_METRIC = "claude_code.cost.usage"
UNPRICED_METRIC = "tokenbridge.unpriced.requests"

Attrs = tuple[tuple[str, str], ...]

# Gauges: states, not sums (exported as OTLP gauges, never guarded as monotonic). Name → (unit,
# description). Balances carry a ``currency`` label, so their unit is left empty.
BALANCE_METRIC = "tokenbridge.balance"
GAUGE_METRICS: dict[str, tuple[str, str]] = {
    BALANCE_METRIC: ("", "Prepaid balance left at a provider, in the currency of the currency label"),
    "tokenbridge.balance.detail": ("", "Parts of a provider balance (kind: cash, voucher, granted, topped_up)"),
    "tokenbridge.key.limit_remaining": ("", "Spending cap left on an API key (currency label)"),
    "tokenbridge.key.spend": ("", "Spend of an API key in the current period (period, kind: credits or byok)"),
    "tokenbridge.source.last_success": ("s", "Unix time of the source's last successful pass"),
    "tokenbridge.source.consecutive_failures": ("", "Failed passes of the source since its last success"),
    # Claude plan quota windows, from `tokenbridge statusline` (labels provider, window).
    "tokenbridge.quota.used_percent": ("", "Share of a plan quota window used, in percent"),
    "tokenbridge.quota.resets_at": ("", "Unix time at which a plan quota window resets"),
}


@dataclass(frozen=True, slots=True)
class Point:
    """One series' value to export."""

    metric: str
    attrs: Attrs
    value: Decimal
    start_ns: int

    @property
    def key(self) -> str:
        return series_key(self.metric, self.attrs)


def series_key(metric: str, attrs: Attrs) -> str:
    return metric + "|" + "|".join(f"{k}={v}" for k, v in attrs)


def attrs_of(mapping: dict[str, object]) -> Attrs:
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


def values(
    totals: Iterable[SeriesTotal], include_session_id: bool, include_project: bool = False
) -> Iterator[tuple[str, Attrs, Decimal]]:
    """The ledger's totals as (metric, attributes, cumulative value), in Claude Code's schema:
    ``model``, ``type`` for tokens, plus ``provider`` and ``source`` (``session.id`` and
    ``project`` opt-in)."""
    tokens: dict[Attrs, Decimal] = {}
    cost: dict[Attrs, Decimal] = {}
    unpriced: dict[Attrs, Decimal] = {}
    hidden = attribution_sources()
    for t in totals:
        if t.source in hidden:
            continue  # another view of usage a billing source exports (bridge.views)
        base = {"model": t.model, "provider": t.provider, "source": t.source}
        if include_session_id and t.session_id:
            base["session.id"] = t.session_id
        if include_project and t.project:
            base["project"] = t.project
        attrs = tuple(sorted(base.items()))
        for typ, _column in TOKEN_TYPES:
            k = tuple(sorted((*attrs, ("type", typ))))
            tokens[k] = tokens.get(k, Decimal(0)) + t.tokens[typ]
        # A series with unpriced rows and no priced one has no cost (unknown, never $0); the
        # unpriced count weighs a row without a request count (a usage bucket) as one.
        if t.priced or not t.unpriced:
            cost[attrs] = cost.get(attrs, Decimal(0)) + t.cost
        if t.unpriced:
            unpriced[attrs] = unpriced.get(attrs, Decimal(0)) + t.unpriced
    for metric, table in ((TOKEN_METRIC, tokens), (COST_METRIC, cost), (UNPRICED_METRIC, unpriced)):
        for attrs, value in table.items():
            yield metric, attrs, value


def gauge_values(ledger: Ledger) -> Iterator[tuple[str, Attrs, Decimal]]:
    """Every stored gauge (balances, key limits) and each source's health, as (metric, attrs, value)."""
    for g in ledger.gauges():
        if g.name in GAUGE_METRICS:
            yield g.name, tuple(sorted(g.labels.items())), g.value
    for h in ledger.health().values():
        if h.last_success_ms is not None:
            yield "tokenbridge.source.last_success", (("source", h.source),), Decimal(h.last_success_ms) / 1000
        attrs = (("last_error_kind", h.last_error_kind or ""), ("source", h.source))
        yield "tokenbridge.source.consecutive_failures", attrs, Decimal(h.consecutive_failures)


class SeriesBook:
    """Stable start times and the monotonic guard over a ledger's ``series`` table."""

    def __init__(self, known: dict[str, tuple[int, str]]) -> None:
        self.known = dict(known)
        self.pending: dict[str, tuple[int, str]] = {}

    def admit(self, metric: str, attrs: Attrs, total: Decimal, now_ns: int) -> Point:
        """The point to export for ``total``: never below what any writer exported before."""
        key = series_key(metric, attrs)
        start, last_s = self.known.get(key, (now_ns, "0"))
        last = Decimal(last_s)
        value = total
        if total < last:
            log.debug("%s is below its exported value (%s < %s); keeping the exported value", key, total, last)
            value = last
        if key not in self.known or last != value:
            self.known[key] = self.pending[key] = (start, str(value))
        return Point(metric, attrs, value, start)

    def save(self, ledger: Ledger) -> None:
        if self.pending:
            ledger.record_series(self.pending)
            self.pending = {}


def guarded_points(ledger: Ledger, include_session_id: bool, now_ns: int, include_project: bool = False) -> list[Point]:
    """Every series' point from the ledger's current totals, guarded against every earlier
    export (of this process or another) and recorded as exported."""
    book = SeriesBook(ledger.all_series())
    totals = ledger.totals_by_project() if include_project else ledger.totals()
    points = [book.admit(m, a, v, now_ns) for m, a, v in values(totals, include_session_id, include_project)]
    book.save(ledger)
    return points


@contextmanager
def export_lock(ledger_path: Path) -> Iterator[None]:
    """Serialise exports between processes sharing one ledger (an advisory file lock)."""
    fd = os.open(ledger_path.with_name("export.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
