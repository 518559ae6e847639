"""Anthropic organization usage and cost reports (Admin API key ``ANTHROPIC_ADMIN_KEY``).

Endpoints (provider-apis.md §2), under ``TOKENBRIDGE_ANTHROPIC_BASE_URL`` (default
``https://api.anthropic.com``), key in ``x-api-key`` with ``anthropic-version: 2023-06-01``:

* ``anthropic_usage_api``: ``/v1/organizations/usage_report/messages``, hourly buckets grouped
  by model. ``uncached_input_tokens`` → ``input`` (it already excludes cache reads and writes),
  ``cache_read_input_tokens`` → ``cacheRead``, the 5-minute + 1-hour cache writes →
  ``cacheCreation`` (a flat ``cache_creation_input_tokens`` is accepted too). The report has no
  request count: rows count 0 requests. Window: the last 2 days re-read on every poll.
* ``anthropic_cost_api``: ``/v1/organizations/cost_report``, daily buckets grouped by
  description. ``amount`` is a decimal string in **cents** (``"1843.2750"`` = $18.43275), read
  exactly. Rows without a model (web search, code execution) are real spend: their model label
  is the cost type. Window: the last 3 days re-read on every poll (cost lags and is corrected).

**Billed cost vs estimated cost.** As for OpenAI: with ``anthropic_cost_api`` enabled (the
default; same key) usage rows carry ``cost_origin=external`` and add tokens only. Usage the cost
report leaves out (Priority Tier) therefore has no cost here: the bill is the total.

Buckets are keyed ``anthropic:<endpoint>:<bucket start>:<every returned coordinate>`` and stored
with ``replace=True``, so re-polls and late corrections (up or down) replace the stored value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from bridge.ledger import Ledger
from bridge.record import CostOrigin, Tokens, UsageRecord
from bridge.sources._poll import (
    DAY,
    HOUR,
    Api,
    Batch,
    BilledUsagePolledSource,
    Http,
    PolledSource,
    count,
    parse_time,
    rfc3339,
    synced_state,
    utc,
)
from bridge.sources._registry import SourceSpec

if TYPE_CHECKING:
    pass

log = logging.getLogger("tokenbridge.sources.anthropic")

USAGE = "anthropic_usage_api"
COSTS = "anthropic_cost_api"
VERSION = "2023-06-01"
NO_BALANCE = "no balance: the Admin API has no balance endpoint"


def _auth(key: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": VERSION}


API = Api("anthropic", "ANTHROPIC_ADMIN_KEY", "TOKENBRIDGE_ANTHROPIC_BASE_URL", "https://api.anthropic.com", _auth)
_SETTINGS = ("ANTHROPIC_ADMIN_KEY", "TOKENBRIDGE_ANTHROPIC_BASE_URL", "TOKENBRIDGE_ANTHROPIC_POLL_INTERVAL")
# Coordinates a cost row can carry; rows sharing a description can differ in the others.
_COST_COORDS = ("description", "workspace_id", "model", "token_type", "service_tier", "context_window", "inference_geo")


def message_tokens(r: dict[str, Any]) -> Tokens:
    """Tokens of a messages usage row (provider-apis.md §2.2)."""
    created = r.get("cache_creation")
    if isinstance(created, dict):
        five, hour = count(created.get("ephemeral_5m_input_tokens")), count(created.get("ephemeral_1h_input_tokens"))
    else:
        five, hour = count(r.get("cache_creation_input_tokens")), 0
    return Tokens(
        input=count(r.get("uncached_input_tokens")), output=count(r.get("output_tokens")),
        cache_read=count(r.get("cache_read_input_tokens")), cache_creation=five + hour, cache_creation_1h=hour,
    )  # fmt: skip


def _bucket_start(bucket: dict[str, Any], width: int) -> int:
    return parse_time(bucket["starting_at"]) // width * width


class AnthropicUsage(BilledUsagePolledSource):
    name = USAGE
    api = API
    default_interval_s = 300.0
    notes = (NO_BALANCE,)
    cost_source = COSTS

    def poll(self, http: Http, ledger: Ledger, since: datetime | None, now: float) -> Iterator[Batch]:
        start = self.window_start(ledger, "messages", since, now, HOUR, 2 * DAY)
        params = [("starting_at", rfc3339(start)), ("bucket_width", "1h"), ("group_by[]", "model"), ("limit", "168")]
        records = []
        for page in http.pages("/v1/organizations/usage_report/messages", params):
            for bucket in page["data"]:
                at = _bucket_start(bucket, HOUR)
                records += self.rows(bucket.get("results"), partial(self._record, at))
        yield Batch(records, synced_state("messages", now))

    def _record(self, at: int, r: dict[str, Any]) -> UsageRecord:
        model = str(r.get("model") or "unknown")
        return UsageRecord(
            source=USAGE, provider="anthropic", model=model, timestamp=utc(at),
            dedup_key=f"anthropic:messages:{at}:{model}", tokens=message_tokens(r),
            cost_origin=self.usage_cost_origin, requests=0, replace=True,
        )  # fmt: skip


class AnthropicCosts(PolledSource):
    name = COSTS
    api = API
    default_interval_s = 3600.0
    notes = (NO_BALANCE,)

    def poll(self, http: Http, ledger: Ledger, since: datetime | None, now: float) -> Iterator[Batch]:
        start = self.window_start(ledger, "cost", since, now, DAY, 3 * DAY)
        params = [("starting_at", rfc3339(start)), ("bucket_width", "1d"), ("group_by[]", "description")]
        params.append(("limit", "31"))
        records = []
        for page in http.pages("/v1/organizations/cost_report", params):
            for bucket in page["data"]:
                at = _bucket_start(bucket, DAY)
                records += self.rows(bucket.get("results"), partial(self._record, at))
        yield Batch(records, synced_state("cost", now))

    def _record(self, at: int, r: dict[str, Any]) -> UsageRecord | None:
        raw = r["amount"]
        if not isinstance(raw, str | int | Decimal) or isinstance(raw, bool):
            raise ValueError("amount is not a decimal string")
        dollars = Decimal(raw) / 100  # cents, as a decimal string: exact
        currency = str(r.get("currency") or "USD").upper()
        if currency != "USD" or dollars < 0:
            log.warning("anthropic cost: %r of %s skipped (%s %s)", r.get("description"), utc(at).date(), raw, currency)
            return None
        model = r.get("model") or r.get("cost_type") or r.get("description") or "(unattributed)"
        coords = ":".join(str(r.get(k)) for k in _COST_COORDS)
        return UsageRecord(
            source=COSTS, provider="anthropic", model=str(model), timestamp=utc(at),
            dedup_key=f"anthropic:cost:{at}:{coords}", tokens=Tokens(), cost=dollars,
            cost_origin=CostOrigin.REPORTED, requests=0, replace=True,
        )  # fmt: skip


SPECS = (
    SourceSpec(
        USAGE,
        "polled",
        AnthropicUsage,
        "Anthropic usage report: tokens per hour and model (Admin API)",
        group="anthropic",
        settings=_SETTINGS,
        provider="anthropic",
        extra={"view": "billing"},
    ),
    SourceSpec(
        COSTS,
        "polled",
        AnthropicCosts,
        "Anthropic cost report: billed cost per day and description (Admin API)",
        group="anthropic",
        settings=_SETTINGS,
        provider="anthropic",
        extra={"view": "billing"},
    ),
)
