"""OpenRouter key limits, credit balance and activity against a loopback server (provider-apis.md §3)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import app
from bridge.config import Settings
from bridge.ledger import Ledger
from bridge.sources.openrouter_api import CREDITS_SOURCE, KEY_SOURCE, OpenRouterCredits, OpenRouterKey
from tests._provider_server import ProviderServer, Reply, running_server
from tests.test_openai_api import usage_sums

API_KEY = "sk-or-v1-TESTKEY-1a2b3c4d5e6f"
MGMT_KEY = "sk-or-v1-TESTMGMT-6f5e4d3c2b1a"
KEY_DOC = {"data": {
    "label": "sk-or-v1-9c1...a2f", "limit": 50, "limit_remaining": 41.27, "limit_reset": "monthly",
    "include_byok_in_limit": False, "usage": 122.918, "usage_daily": 0.84, "usage_weekly": 4.02, "usage_monthly": 8.73,
    "byok_usage": 3.5, "byok_usage_daily": 0, "byok_usage_weekly": 0, "byok_usage_monthly": 1.25,
    "is_free_tier": False, "is_management_key": False, "is_provisioning_key": False, "creator_user_id": None,
    "expires_at": None, "rate_limit": {"requests": -1, "interval": "10s", "note": "deprecated"},
}}  # fmt: skip


def activity(day: str, model: str, usage: float, requests: int, prompt: int, completion: int) -> dict[str, object]:
    return {
        "date": day, "model": model, "model_permaslug": f"{model}-20260901", "endpoint_id": f"ep-{model}",
        "provider_name": "Upstream", "usage": usage, "byok_usage_inference": 0.5, "requests": requests,
        "prompt_tokens": prompt, "completion_tokens": completion, "reasoning_tokens": 0,
    }  # fmt: skip


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with running_server() as srv:
        srv.route("/api/v1/key", KEY_DOC)
        srv.route("/api/v1/credits", {"data": {"total_credits": 150, "total_usage": 37.4213505}})
        srv.route("/api/v1/activity", {"data": [
            activity("2026-11-21", "anthropic/claude-sonnet-5", 2.4175, 61, 512400, 38120),
            activity("2026-11-21", "openai/gpt-5-mini", 0.0931, 22, 80210, 9033),
        ]})  # fmt: skip
        yield srv


def settings(tmp_path: Path, server: ProviderServer, **keys: str) -> Settings:
    return Settings(state_dir=tmp_path / "state", env={"TOKENBRIDGE_OPENROUTER_BASE_URL": server.url + "/api", **keys})


def gauges(ledger: Ledger) -> dict[tuple[str, tuple[tuple[str, str], ...]], Decimal]:
    return {(g.name, tuple(sorted(g.labels.items()))): g.value for g in ledger.gauges()}


def test_key_limit_and_spend_are_gauges_with_byok_kept_apart(tmp_path, server, pricer):
    s = settings(tmp_path, server, OPENROUTER_API_KEY=API_KEY)
    with Ledger.open(s.state_dir) as ledger:
        assert app.scan_one(ledger, OpenRouterKey(s), pricer).failure is None
        g = gauges(ledger)
        assert ledger.totals() == []  # states, not usage
    usd = (("currency", "USD"), ("provider", "openrouter"))
    assert g[("tokenbridge.key.limit_remaining", usd)] == Decimal("41.27")
    assert g[("tokenbridge.key.spend", (*usd[:1], ("kind", "credits"), ("period", "month"), usd[1]))] == Decimal("8.73")
    assert g[("tokenbridge.key.spend", (*usd[:1], ("kind", "byok"), ("period", "month"), usd[1]))] == Decimal("1.25")
    assert server.calls("/api/v1/key")[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_credits_balance_and_activity_with_a_management_key_exactly_once(tmp_path, server, pricer):
    s = settings(tmp_path, server, OPENROUTER_API_KEY=API_KEY, OPENROUTER_MANAGEMENT_KEY=MGMT_KEY)
    with Ledger.open(s.state_dir) as ledger:
        src = OpenRouterCredits(s)
        assert app.scan_one(ledger, src, pricer).failure is None
        assert app.scan_one(ledger, src, pricer).failure is None  # the same 30 days again: no change
        g = gauges(ledger)
        assert g[("tokenbridge.balance", (("currency", "USD"), ("provider", "openrouter")))] == Decimal("112.5786495")
        sums = usage_sums(ledger, CREDITS_SOURCE)
        assert sums["anthropic/claude-sonnet-5"] == {
            "input": 512400, "output": 38120, "cacheRead": 0, "cacheCreation": 0, "requests": 61
        }  # fmt: skip
        cost = {t.model: t.cost for t in ledger.totals()}
        assert cost == {"anthropic/claude-sonnet-5": Decimal("2.4175"), "openai/gpt-5-mini": Decimal("0.0931")}
    assert server.calls("/api/v1/credits")[0].headers["authorization"] == f"Bearer {MGMT_KEY}"


def test_403_without_a_management_key_is_a_state_not_a_crash(tmp_path, server, pricer):
    server.script(
        "/api/v1/credits",
        Reply(403, {"error": {"code": 403, "message": "Only management keys can perform this operation"}}),
    )
    s = settings(tmp_path, server, OPENROUTER_API_KEY=API_KEY)  # no management key: the API key is tried
    with Ledger.open(s.state_dir) as ledger:
        stats = app.scan_one(ledger, OpenRouterCredits(s), pricer)
        assert stats.failure is not None and stats.failure.kind == "needs_management_key"  # type: ignore[attr-defined]
        assert "OPENROUTER_MANAGEMENT_KEY" in str(stats.failure) and API_KEY not in str(stats.failure)
        assert ledger.health()[CREDITS_SOURCE].last_error_kind == "needs_management_key"
        # The key source with the same key still works.
        assert app.scan_one(ledger, OpenRouterKey(s), pricer).failure is None


def test_key_source_status_names_its_variable_when_not_configured(tmp_path, server):
    st = OpenRouterCredits(settings(tmp_path, server)).status()
    assert not st.detected and "OPENROUTER_MANAGEMENT_KEY (or OPENROUTER_API_KEY)" in st.notes[0]
    assert KEY_SOURCE != CREDITS_SOURCE
