"""OpenRouter: account balance, key limits and per-day activity (provider-apis.md §3).

Base ``TOKENBRIDGE_OPENROUTER_BASE_URL`` (default ``https://openrouter.ai/api``), Bearer keys:

* ``openrouter_key_api`` (``OPENROUTER_API_KEY``, any key): ``GET /v1/key`` → gauges
  ``tokenbridge.key.limit_remaining`` (only when the key has a cap) and ``tokenbridge.key.spend``
  per ``period`` (day, week, month, total; UTC) and ``kind`` (``credits``; ``byok`` kept apart:
  BYOK spend is paid to the upstream provider, not from OpenRouter credits).
* ``openrouter_credits_api`` (``OPENROUTER_MANAGEMENT_KEY``, else ``OPENROUTER_API_KEY``):
  ``GET /v1/credits`` → ``tokenbridge.balance`` = ``total_credits − total_usage`` (USD), and
  ``GET /v1/activity`` → one ledger row per completed UTC day, model and endpoint: prompt
  tokens as ``input``, completion tokens as ``output``, ``requests``, and the credits spent as
  the reported cost (``byok_usage_inference`` is not credit spend and is not added). Rows are
  ``replace=True``: the 30 days the endpoint returns are re-read on every poll. A 403 here means
  the key is not a management key: the source's state is ``needs_management_key``, not a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from bridge.errors import PollError
from bridge.ledger import Gauge, Ledger
from bridge.record import CostOrigin, Tokens, UsageRecord
from bridge.sources._poll import Api, Batch, Http, PolledSource, bearer, count, gauge, money
from bridge.sources._registry import SourceSpec

KEY_SOURCE = "openrouter_key_api"
CREDITS_SOURCE = "openrouter_credits_api"
_BASE = ("TOKENBRIDGE_OPENROUTER_BASE_URL", "https://openrouter.ai/api")
KEY_API = Api("openrouter", "OPENROUTER_API_KEY", *_BASE, bearer)
MANAGEMENT_API = Api("openrouter", "OPENROUTER_MANAGEMENT_KEY", *_BASE, bearer, fallback_env="OPENROUTER_API_KEY")
_PERIODS = (("day", "_daily"), ("week", "_weekly"), ("month", "_monthly"), ("total", ""))


class OpenRouterKey(PolledSource):
    name = KEY_SOURCE
    api = KEY_API
    default_interval_s = 900.0

    def poll(self, http: Http, ledger: Ledger, since: datetime | None, now: float) -> Iterator[Batch]:
        data = http.get("/v1/key")["data"]
        gauges: list[Gauge] = []
        if data.get("limit_remaining") is not None:
            gauges.append(gauge("tokenbridge.key.limit_remaining", "openrouter", "USD", money(data["limit_remaining"])))
        for period, suffix in _PERIODS:
            for kind, prefix in (("credits", "usage"), ("byok", "byok_usage")):
                value = data.get(prefix + suffix)
                if value is not None:
                    gauges.append(
                        gauge("tokenbridge.key.spend", "openrouter", "USD", money(value), period=period, kind=kind)
                    )
        yield Batch(gauges=gauges)


class OpenRouterCredits(PolledSource):
    name = CREDITS_SOURCE
    api = MANAGEMENT_API
    default_interval_s = 900.0

    def poll(self, http: Http, ledger: Ledger, since: datetime | None, now: float) -> Iterator[Batch]:
        try:
            credits = http.get("/v1/credits")["data"]
            balance = money(credits["total_credits"]) - money(credits["total_usage"])
            yield Batch(gauges=[gauge("tokenbridge.balance", "openrouter", "USD", balance)])
            rows = http.get("/v1/activity")["data"]
        except PollError as exc:
            if exc.kind == "http_403":
                raise PollError(
                    self.name,
                    "needs_management_key",
                    "OpenRouter answers 403: /credits and /activity need a management key "
                    "(set OPENROUTER_MANAGEMENT_KEY)",
                ) from None
            raise
        yield Batch(self.rows(rows, self._record))

    def _record(self, r: dict[str, Any]) -> UsageRecord:
        day = date.fromisoformat(str(r["date"])[:10])
        model = str(r.get("model") or "unknown")
        ident = r.get("model_permaslug") or model
        cost = money(r.get("usage") or 0)
        if cost < 0:
            raise ValueError("negative usage")
        return UsageRecord(
            source=CREDITS_SOURCE, provider="openrouter", model=model,
            timestamp=datetime.combine(day, time(0), tzinfo=UTC),
            dedup_key=f"openrouter:activity:{day}:{ident}:{r.get('endpoint_id')}",
            tokens=Tokens(input=count(r.get("prompt_tokens")), output=count(r.get("completion_tokens"))),
            cost=Decimal(cost), cost_origin=CostOrigin.REPORTED, requests=count(r.get("requests")), replace=True,
        )  # fmt: skip


_SETTINGS = ("TOKENBRIDGE_OPENROUTER_BASE_URL", "TOKENBRIDGE_OPENROUTER_POLL_INTERVAL")
SPECS = (
    SourceSpec(
        KEY_SOURCE,
        "polled",
        OpenRouterKey,
        "OpenRouter key: spending cap left and spend per day, week, month (credits and BYOK apart)",
        group="openrouter",
        settings=("OPENROUTER_API_KEY", *_SETTINGS),
        provider="openrouter",
    ),
    SourceSpec(
        CREDITS_SOURCE,
        "polled",
        OpenRouterCredits,
        "OpenRouter account: credit balance and per-day per-model activity (management key)",
        group="openrouter",
        settings=("OPENROUTER_MANAGEMENT_KEY", "OPENROUTER_API_KEY", *_SETTINGS),
        provider="openrouter",
        extra={"view": "billing"},
    ),
)
