"""OpenAI organization usage and costs (admin key ``OPENAI_ADMIN_KEY``).

Endpoints (provider-apis.md §1), under ``TOKENBRIDGE_OPENAI_BASE_URL`` (default
``https://api.openai.com``):

* ``openai_usage_api``: ``/v1/organization/usage/completions`` and ``/usage/embeddings``, hourly
  buckets grouped by model. Completions: ``input_tokens`` includes cached input and cache
  writes, so ``input`` = ``input_tokens`` − ``input_cached_tokens`` − ``input_cache_write_tokens``,
  ``cacheRead`` = ``input_cached_tokens``, ``cacheCreation`` = ``input_cache_write_tokens``; the
  pre-2026-07 field set (no cache-write field) reads through the same rule with writes = 0.
  Requests = ``num_model_requests``. Window: the last 2 days re-read on every poll.
* ``openai_cost_api``: ``/v1/organization/costs``, daily buckets by line item; ``amount.value``
  is US dollars (a JSON number, read exactly). Each line item is a record with the billed cost
  reported, no tokens and no requests. Window: the last 3 days re-read on every poll.

**Billed cost vs estimated cost.** When ``openai_cost_api`` is enabled (the default: it needs
the same key), usage rows carry ``cost_origin=external``: their tokens count, their cost is the
cost API's, never an estimate added on top of the bill. With the cost source disabled (config
``sources.enabled``), usage rows are priced from the price table as estimates.

Every bucket is keyed ``openai:<endpoint>:<bucket start>:<model or line item...>`` and stored
with ``replace=True``: a re-polled or revised bucket replaces its value, up or down. The bucket
start is aligned down to the bucket width, so a truncated first bucket and the later full one
share one key. OpenAI has no balance endpoint for API keys: ``sources`` says so.
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
    bearer,
    count,
    parse_time,
    synced_state,
    utc,
)
from bridge.sources._registry import SourceSpec

if TYPE_CHECKING:
    pass

log = logging.getLogger("tokenbridge.sources.openai")

USAGE = "openai_usage_api"
COSTS = "openai_cost_api"
API = Api("openai", "OPENAI_ADMIN_KEY", "TOKENBRIDGE_OPENAI_BASE_URL", "https://api.openai.com", bearer)
NO_BALANCE = "no balance: OpenAI has no balance or credit endpoint for API keys"
_USAGE_ENDPOINTS = ("completions", "embeddings")


def _bucket_start(bucket: dict[str, Any], width: int) -> int:
    return parse_time(bucket["start_time"]) // width * width


def completion_tokens(r: dict[str, Any]) -> Tokens:
    """Tokens of a completions result, from either field set (provider-apis.md §1.4)."""
    total_in = count(r.get("input_tokens"))
    cached = count(r.get("input_cached_tokens"))
    writes = count(r.get("input_cache_write_tokens"))
    return Tokens(
        input=max(total_in - cached - writes, 0), output=count(r.get("output_tokens")), cache_read=cached,
        cache_creation=writes,
    )  # fmt: skip


class OpenAIUsage(BilledUsagePolledSource):
    name = USAGE
    api = API
    default_interval_s = 300.0
    notes = (NO_BALANCE,)
    cost_source = COSTS

    def poll(self, http: Http, ledger: Ledger, since: datetime | None, now: float) -> Iterator[Batch]:
        for endpoint in _USAGE_ENDPOINTS:
            start = self.window_start(ledger, endpoint, since, now, HOUR, 2 * DAY)
            params = [("start_time", str(start)), ("bucket_width", "1h"), ("group_by", "model"), ("limit", "168")]
            records = []
            for page in http.pages(f"/v1/organization/usage/{endpoint}", params):
                for bucket in page["data"]:
                    at = _bucket_start(bucket, HOUR)
                    records += self.rows(bucket.get("results"), partial(self._record, endpoint, at))
            yield Batch(records, synced_state(endpoint, now))

    def _record(self, endpoint: str, at: int, r: dict[str, Any]) -> UsageRecord:
        model = r.get("model") or "unknown"
        # Embeddings (and the other input-only endpoints) carry input tokens and requests only.
        tokens = completion_tokens(r) if endpoint == "completions" else Tokens(input=count(r.get("input_tokens")))
        return UsageRecord(
            source=USAGE, provider="openai", model=str(model), timestamp=utc(at),
            dedup_key=f"openai:{endpoint}:{at}:{model}", tokens=tokens,
            cost_origin=self.usage_cost_origin,
            requests=count(r.get("num_model_requests")), replace=True, extra={"endpoint": endpoint},
        )  # fmt: skip


class OpenAICosts(PolledSource):
    name = COSTS
    api = API
    default_interval_s = 3600.0  # daily buckets that land hours late
    notes = (NO_BALANCE,)

    def poll(self, http: Http, ledger: Ledger, since: datetime | None, now: float) -> Iterator[Batch]:
        start = self.window_start(ledger, "costs", since, now, DAY, 3 * DAY)
        params = [("start_time", str(start)), ("bucket_width", "1d"), ("group_by", "line_item"), ("limit", "31")]
        records = []
        for page in http.pages("/v1/organization/costs", params):
            for bucket in page["data"]:
                at = _bucket_start(bucket, DAY)
                records += self.rows(bucket.get("results"), partial(self._record, at))
        yield Batch(records, synced_state("costs", now))

    def _record(self, at: int, r: dict[str, Any]) -> UsageRecord | None:
        amount = r["amount"]
        value = amount["value"]
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise ValueError("amount.value is not a number")
        currency = str(amount.get("currency") or "usd").lower()
        line_item = r.get("line_item")
        project = r.get("project_id")
        if currency != "usd" or value < 0:
            # The ledger keeps US dollars and never-negative costs; say so instead of guessing.
            log.warning("openai costs: line item %r of %s skipped (%s %s)", line_item, utc(at).date(), value, currency)
            return None
        # Line items read "<model>, input" / "<model>, output": the model is the part before the comma.
        model = str(line_item).split(",", 1)[0].strip() if line_item else "(unattributed)"
        return UsageRecord(
            source=COSTS, provider="openai", model=model, timestamp=utc(at),
            dedup_key=f"openai:costs:{at}:{line_item}:{project}", tokens=Tokens(), cost=Decimal(value),
            cost_origin=CostOrigin.REPORTED, requests=0, replace=True,
        )  # fmt: skip


SPECS = (
    SourceSpec(
        USAGE,
        "polled",
        OpenAIUsage,
        "OpenAI organization usage API: completions and embeddings tokens per hour and model",
        group="openai",
        settings=("OPENAI_ADMIN_KEY", "TOKENBRIDGE_OPENAI_BASE_URL", "TOKENBRIDGE_OPENAI_POLL_INTERVAL"),
        provider="openai",
        extra={"view": "billing"},
    ),
    SourceSpec(
        COSTS,
        "polled",
        OpenAICosts,
        "OpenAI costs API: billed cost per day and line item",
        group="openai",
        settings=("OPENAI_ADMIN_KEY", "TOKENBRIDGE_OPENAI_BASE_URL", "TOKENBRIDGE_OPENAI_POLL_INTERVAL"),
        provider="openai",
        extra={"view": "billing"},
    ),
)
