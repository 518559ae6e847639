"""DeepSeek balance (``DEEPSEEK_API_KEY``; provider-apis.md §4.2).

``GET /user/balance`` under ``TOKENBRIDGE_DEEPSEEK_BASE_URL`` (default
``https://api.deepseek.com``) → one ``tokenbridge.balance`` per entry of ``balance_infos`` in its
own currency (``total_balance``, a decimal string, read exactly), and
``tokenbridge.balance.detail`` for ``granted`` and ``topped_up``. DeepSeek has no public usage
history endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from bridge.ledger import Gauge, Ledger
from bridge.sources._poll import Api, Batch, Http, PolledSource, bearer, gauge, money
from bridge.sources._registry import SourceSpec

NAME = "deepseek_balance_api"
API = Api("deepseek", "DEEPSEEK_API_KEY", "TOKENBRIDGE_DEEPSEEK_BASE_URL", "https://api.deepseek.com", bearer)


class DeepSeekBalance(PolledSource):
    name = NAME
    api = API
    default_interval_s = 900.0
    notes = ("balance only: DeepSeek has no public usage history endpoint",)

    def poll(self, http: Http, ledger: Ledger, since: datetime | None, now: float) -> Iterator[Batch]:
        doc = http.get("/user/balance")
        gauges: list[Gauge] = []
        for info in doc["balance_infos"]:
            cur = str(info["currency"]).upper()
            gauges.append(gauge("tokenbridge.balance", "deepseek", cur, money(info["total_balance"])))
            for kind, field in (("granted", "granted_balance"), ("topped_up", "topped_up_balance")):
                if info.get(field) is not None:
                    gauges.append(gauge("tokenbridge.balance.detail", "deepseek", cur, money(info[field]), kind=kind))
        yield Batch(gauges=gauges)


SPECS = (
    SourceSpec(
        NAME,
        "polled",
        DeepSeekBalance,
        "DeepSeek account balance, per currency",
        group="deepseek",
        settings=("DEEPSEEK_API_KEY", "TOKENBRIDGE_DEEPSEEK_BASE_URL", "TOKENBRIDGE_DEEPSEEK_POLL_INTERVAL"),
        provider="deepseek",
    ),
)
