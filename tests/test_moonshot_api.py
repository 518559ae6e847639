"""Moonshot / Kimi balance against a loopback server (provider-apis.md §4.1)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from bridge import app
from bridge.config import Settings
from bridge.ledger import Ledger
from bridge.sources.moonshot_api import NAME, MoonshotBalance, currency_for
from tests._provider_server import ProviderServer, Reply, running_server

KEY = "sk-TESTKEY-moonshot-0123456789"
DOC = {"code": 0, "data": {"available_balance": 18.40217, "voucher_balance": 20.0, "cash_balance": -1.59783},
       "scode": "0x0", "status": True}  # fmt: skip


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with running_server() as srv:
        srv.route("/v1/users/me/balance", DOC)
        yield srv


def test_currency_follows_the_host_unless_overridden():
    assert currency_for("https://api.moonshot.cn", None) == "CNY"
    assert currency_for("https://api.moonshot.ai", None) == "USD"
    assert currency_for("http://127.0.0.1:8080", None) is None
    assert currency_for("https://api.moonshot.cn", "usd") == "USD"


def test_balance_and_its_parts_are_gauges_in_the_currency_label(tmp_path, server, pricer):
    env = {"MOONSHOT_API_KEY": KEY, "TOKENBRIDGE_MOONSHOT_BASE_URL": server.url, "TOKENBRIDGE_MOONSHOT_CURRENCY": "CNY"}
    s = Settings(state_dir=tmp_path / "state", env=env)
    with Ledger.open(s.state_dir) as ledger:
        assert app.scan_one(ledger, MoonshotBalance(s), pricer).failure is None
        got = {(g.name, g.labels.get("kind")): (g.value, g.labels["currency"]) for g in ledger.gauges()}
    assert got[("tokenbridge.balance", None)] == (Decimal("18.40217"), "CNY")
    assert got[("tokenbridge.balance.detail", "cash")] == (Decimal("-1.59783"), "CNY")  # debt stays negative
    assert got[("tokenbridge.balance.detail", "voucher")] == (Decimal("20.0"), "CNY")


def test_a_custom_base_url_without_a_currency_is_a_clear_error_not_a_guess(tmp_path, server, pricer):
    s = Settings(
        state_dir=tmp_path / "state", env={"MOONSHOT_API_KEY": KEY, "TOKENBRIDGE_MOONSHOT_BASE_URL": server.url}
    )
    with Ledger.open(s.state_dir) as ledger:
        stats = app.scan_one(ledger, MoonshotBalance(s), pricer)
        assert stats.failure is not None and "TOKENBRIDGE_MOONSHOT_CURRENCY" in str(stats.failure)
        assert ledger.gauges() == []


def test_invalid_key_401_is_recorded_and_keeps_the_last_balance(tmp_path, server, pricer):
    env = {"MOONSHOT_API_KEY": KEY, "TOKENBRIDGE_MOONSHOT_BASE_URL": server.url, "TOKENBRIDGE_MOONSHOT_CURRENCY": "USD"}
    s = Settings(state_dir=tmp_path / "state", env=env)
    with Ledger.open(s.state_dir) as ledger:
        app.scan_one(ledger, MoonshotBalance(s), pricer)
        err = {"error": {"message": "Invalid Authentication", "type": "invalid_authentication_error"}}
        server.script("/v1/users/me/balance", Reply(401, err))
        stats = app.scan_one(ledger, MoonshotBalance(s), pricer)
        assert stats.failure is not None and stats.failure.kind == "http_401"  # type: ignore[attr-defined]
        assert ledger.health()[NAME].last_error_kind == "http_401"
        assert [g.value for g in ledger.gauges("tokenbridge.balance")] == [Decimal("18.40217")]
