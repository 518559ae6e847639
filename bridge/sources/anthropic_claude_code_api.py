"""Anthropic's Claude Code analytics report (``ANTHROPIC_ADMIN_KEY``; provider-apis.md §2.4).

``GET /v1/organizations/usage_report/claude_code?starting_at=YYYY-MM-DD`` returns one record per
actor (user or API key) per UTC day, with ``model_breakdown[]`` tokens (``input``, ``output``,
``cache_read``, ``cache_creation``) and an ``estimated_cost`` in cents (a number).

This is **another view of the same API usage** that ``anthropic_usage_api`` reports, so it is an
*attribution view*: its own source (``anthropic_claude_code_api``, group
``claude_code_analytics``, off by default), kept in the ledger for ``report --source
anthropic_claude_code_api``, never added to default totals (``bridge.views``) and never exported
under Claude Code's metric names (``series.values``). One row per day, actor and model
(``replace=True``); the actor is part of the row's key only. Each poll re-reads yesterday and
today (data lands within about an hour and is only returned once an hour old).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from bridge.ledger import Ledger
from bridge.record import CostOrigin, Tokens, UsageRecord
from bridge.sources._poll import BACKFILL_S, Batch, Http, PolledSource, count, money
from bridge.sources._registry import SourceSpec
from bridge.sources.anthropic_api import _SETTINGS, API

NAME = "anthropic_claude_code_api"
_PATH = "/v1/organizations/usage_report/claude_code"


def _actor(doc: dict[str, Any]) -> str:
    """A stable, non-identifying key for the actor (an e-mail address never enters the ledger)."""
    actor = doc.get("actor") or {}
    who = actor.get("email_address") or actor.get("api_key_name") or ""
    import hashlib  # here: its OpenSSL start-up is 2 ms of every one-off sync

    return hashlib.sha256(f"{actor.get('type')}:{who}".encode()).hexdigest()[:16]


class ClaudeCodeAnalytics(PolledSource):
    name = NAME
    api = API
    default_interval_s = 3600.0
    notes = ("attribution view of the usage report: not added to totals, not exported",)

    def poll(self, http: Http, ledger: Ledger, since: datetime | None, now: float) -> Iterator[Batch]:
        today = datetime.fromtimestamp(now, UTC).date()
        synced = ledger.state(self.name, "synced_day")
        first = today - timedelta(seconds=BACKFILL_S) if synced is None else date.fromisoformat(synced) - timedelta(1)
        if since is not None:
            first = min(first, since.astimezone(UTC).date())
        day = first
        while day <= today:
            records = []
            for page in http.pages(_PATH, [("starting_at", day.isoformat()), ("limit", "1000")]):
                records += [r for doc in self.rows(page["data"], self._day_of) for r in self._records(doc)]
            # Each day commits with the cursor: an interrupted backfill resumes where it stopped.
            yield Batch(records, {"synced_day": day.isoformat()})
            day += timedelta(1)

    @staticmethod
    def _day_of(doc: dict[str, Any]) -> dict[str, Any]:
        """The record itself once its date and actor read (a record that does not is skipped)."""
        date.fromisoformat(str(doc["date"])[:10])
        _actor(doc)
        return doc

    def _records(self, doc: dict[str, Any]) -> list[UsageRecord]:
        day = date.fromisoformat(str(doc["date"])[:10])
        at = datetime.combine(day, time(0), tzinfo=UTC)
        return self.rows(doc.get("model_breakdown"), partial(self._record, day, at, _actor(doc)))

    @staticmethod
    def _record(day: date, at: datetime, actor: str, m: dict[str, Any]) -> UsageRecord:
        t = m.get("tokens") or {}
        cost = (m.get("estimated_cost") or {}).get("amount")
        tokens = Tokens(
            input=count(t.get("input")), output=count(t.get("output")), cache_read=count(t.get("cache_read")),
            cache_creation=count(t.get("cache_creation")),
        )  # fmt: skip
        return UsageRecord(
            source=NAME, provider="anthropic", model=str(m.get("model") or "unknown"), timestamp=at,
            dedup_key=f"anthropic:claude_code:{day}:{actor}:{m.get('model')}", tokens=tokens,
            cost=None if cost is None else money(cost) / Decimal(100),
            cost_origin=CostOrigin.UNKNOWN if cost is None else CostOrigin.REPORTED, requests=0, replace=True,
        )  # fmt: skip


SPECS = (
    SourceSpec(
        NAME,
        "polled",
        ClaudeCodeAnalytics,
        "Anthropic Claude Code analytics: tokens and estimated cost per day, actor and model (attribution view)",
        group="claude_code_analytics",
        settings=_SETTINGS,
        default_enabled=False,
        provider="anthropic",
        extra={"view": "attribution"},
    ),
)
