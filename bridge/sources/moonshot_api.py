"""Moonshot / Kimi balance (``MOONSHOT_API_KEY``; provider-apis.md §4.1).

``GET /v1/users/me/balance`` under ``TOKENBRIDGE_MOONSHOT_BASE_URL`` (default
``https://api.moonshot.ai``) → ``tokenbridge.balance`` = ``available_balance`` and
``tokenbridge.balance.detail`` for ``cash`` (can be negative: debt) and ``voucher``. The response
names no currency: it follows the host (``.cn`` → CNY, ``.ai`` → USD);
``TOKENBRIDGE_MOONSHOT_CURRENCY`` overrides it (needed for a custom base URL). Moonshot has no
usage history endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from urllib.parse import urlsplit

from bridge.errors import PollError
from bridge.ledger import Ledger
from bridge.sources._poll import Api, Batch, Http, PolledSource, bearer, gauge, money
from bridge.sources._registry import SourceSpec

NAME = "moonshot_balance_api"
API = Api("moonshot", "MOONSHOT_API_KEY", "TOKENBRIDGE_MOONSHOT_BASE_URL", "https://api.moonshot.ai", bearer)


def currency_for(base: str, override: str | None) -> str | None:
    if override:
        return override.strip().upper()
    host = (urlsplit(base).hostname or "").lower()
    if host.endswith(".cn"):
        return "CNY"
    if host.endswith(".ai"):
        return "USD"
    return None


class MoonshotBalance(PolledSource):
    name = NAME
    api = API
    default_interval_s = 900.0
    notes = ("balance only: Moonshot has no usage history endpoint",)

    def poll(self, http: Http, ledger: Ledger, since: datetime | None, now: float) -> Iterator[Batch]:
        override = self.env.get("TOKENBRIDGE_MOONSHOT_CURRENCY") or self.config.get("moonshot_currency")
        currency = currency_for(self.base, str(override) if override else None)
        if currency is None:
            raise PollError(
                NAME,
                "config",
                "the balance's currency is unknown for a custom base URL: set TOKENBRIDGE_MOONSHOT_CURRENCY",
            )
        doc = http.get("/v1/users/me/balance")
        if doc.get("code") != 0 or doc.get("status") is False:
            raise PollError(NAME, "bad_response", f"balance answered code {doc.get('code')!r} ({doc.get('scode')!r})")
        data = doc["data"]
        yield Batch(
            gauges=[
                gauge("tokenbridge.balance", "moonshot", currency, money(data["available_balance"])),
                gauge("tokenbridge.balance.detail", "moonshot", currency, money(data["cash_balance"]), kind="cash"),
                gauge(
                    "tokenbridge.balance.detail", "moonshot", currency, money(data["voucher_balance"]), kind="voucher"
                ),
            ]
        )


_SETTINGS = (
    "MOONSHOT_API_KEY",
    "TOKENBRIDGE_MOONSHOT_BASE_URL",
    "TOKENBRIDGE_MOONSHOT_CURRENCY",
    "TOKENBRIDGE_MOONSHOT_POLL_INTERVAL",
)
SPECS = (
    SourceSpec(
        NAME,
        "polled",
        MoonshotBalance,
        "Moonshot / Kimi account balance (CNY on .cn, USD on .ai)",
        group="moonshot",
        settings=_SETTINGS,
        provider="moonshot",
    ),
)
