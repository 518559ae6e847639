"""DeepSeek balance against a loopback server (provider-apis.md §4.2)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from bridge import app
from bridge.config import Settings
from bridge.ledger import Ledger
from bridge.sources.deepseek_api import NAME, DeepSeekBalance
from tests._provider_server import ProviderServer, Reply, running_server

KEY = "sk-TESTKEY-deepseek-abcdef"
DOC = {"is_available": True, "balance_infos": [
    {"currency": "USD", "total_balance": "7.42", "granted_balance": "0.00", "topped_up_balance": "7.42"},
    {"currency": "CNY", "total_balance": "10.00", "granted_balance": "10.00", "topped_up_balance": "0.00"},
]}  # fmt: skip


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with running_server() as srv:
        srv.route("/user/balance", DOC)
        yield srv


def test_one_balance_per_currency_from_decimal_strings(tmp_path, server, pricer):
    s = Settings(
        state_dir=tmp_path / "state", env={"DEEPSEEK_API_KEY": KEY, "TOKENBRIDGE_DEEPSEEK_BASE_URL": server.url}
    )
    with Ledger.open(s.state_dir) as ledger:
        assert app.scan_one(ledger, DeepSeekBalance(s), pricer).failure is None
        bal = {g.labels["currency"]: g.value for g in ledger.gauges("tokenbridge.balance")}
        detail = {
            (g.labels["currency"], g.labels["kind"]): g.value for g in ledger.gauges("tokenbridge.balance.detail")
        }
    assert bal == {"USD": Decimal("7.42"), "CNY": Decimal("10.00")}
    assert detail[("CNY", "granted")] == Decimal("10.00") and detail[("USD", "topped_up")] == Decimal("7.42")
    assert server.calls("/user/balance")[0].headers["authorization"] == f"Bearer {KEY}"


def test_insufficient_balance_402_and_a_truncated_body_are_failures_by_kind(tmp_path, server, pricer):
    s = Settings(
        state_dir=tmp_path / "state", env={"DEEPSEEK_API_KEY": KEY, "TOKENBRIDGE_DEEPSEEK_BASE_URL": server.url}
    )
    server.script("/user/balance", Reply(402, {"error": {"message": "Insufficient Balance"}}), Reply(200, '{"is_avail'))
    with Ledger.open(s.state_dir) as ledger:
        kinds = [getattr(app.scan_one(ledger, DeepSeekBalance(s), pricer).failure, "kind", None) for _ in range(2)]
        assert kinds == ["http_402", "bad_response"]
        assert ledger.health()[NAME].consecutive_failures == 2
        assert app.scan_one(ledger, DeepSeekBalance(s), pricer).failure is None


def test_sources_shows_state_schedule_and_balance_but_never_the_key(server, cli_env):
    from tests._otlp_sink import tokenbridge

    env = {**cli_env, "DEEPSEEK_API_KEY": KEY, "TOKENBRIDGE_DEEPSEEK_BASE_URL": server.url}
    assert tokenbridge(env, "sync", "--source", "deepseek", "--no-export").returncode == 0
    out = tokenbridge(env, "sources", "--json")
    row = next(r for r in json.loads(out.stdout)["sources"] if r["name"] == NAME)
    poll = row["poll"]
    assert poll["state"] == "ok" and poll["configured"] and poll["keyEnv"] == "DEEPSEEK_API_KEY"
    assert poll["lastSuccess"] is not None and poll["nextPoll"] > poll["lastSuccess"]
    assert poll["balances"] == [
        {"provider": "deepseek", "currency": "CNY", "amount": "10.00"},
        {"provider": "deepseek", "currency": "USD", "amount": "7.42"},
    ]
    server.script("/user/balance", Reply(401, {"error": {"message": "Authentication Fails"}}))
    assert tokenbridge(env, "sync", "--source", NAME, "--no-export").returncode == 1
    text = tokenbridge(env, "sources")
    block = text.stdout.split(NAME, 1)[1].split("\n\n", 1)[0]
    assert "auth failed, enabled" in block and "DEEPSEEK_API_KEY set" in block
    assert "http_401: deepseek_balance_api: GET /user/balance: HTTP 401" in block
    assert "balance               10.00 CNY, 7.42 USD" in block
    assert KEY not in out.stdout + text.stdout + text.stderr


def test_a_vanished_currency_or_a_removed_key_leaves_no_stale_balance(tmp_path, server, pricer):
    env = {"DEEPSEEK_API_KEY": KEY, "TOKENBRIDGE_DEEPSEEK_BASE_URL": server.url}
    s = Settings(tmp_path / "state", env=env)
    with Ledger.open(s.state_dir) as ledger:
        app.scan_one(ledger, DeepSeekBalance(s), pricer)
        server.route("/user/balance", {"is_available": True, "balance_infos": [DOC["balance_infos"][0]]})
        app.scan_one(ledger, DeepSeekBalance(s), pricer)
        assert {g.labels["currency"] for g in ledger.gauges("tokenbridge.balance")} == {"USD"}
        unset = Settings(tmp_path / "state", env={"TOKENBRIDGE_DEEPSEEK_BASE_URL": server.url})
        app.scan_one(ledger, DeepSeekBalance(unset), pricer)
        assert ledger.gauges() == []
