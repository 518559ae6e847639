"""Anthropic usage and cost reports against a real loopback server answering like provider-apis.md §2."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import _api, app, cli, report, status
from bridge.config import Settings
from bridge.ledger import Ledger
from bridge.sources.anthropic_api import COSTS, USAGE, AnthropicCosts, AnthropicUsage
from tests._provider_server import (
    BucketApi,
    ProviderServer,
    Reply,
    anthropic_apis,
    anthropic_cost,
    anthropic_usage,
    running_server,
)
from tests.test_openai_api import cost_of, usage_sums

KEY = "sk-ant-admin01-TESTKEY-0a1b2c3d4e5f"
HOUR = 3600
DAY = 86400
NOW = time.time()
H0 = int(NOW // HOUR * HOUR) - 3 * HOUR
D0 = int(NOW // DAY * DAY) - DAY


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with running_server() as srv:
        yield srv


@pytest.fixture
def apis(server: ProviderServer) -> dict[str, BucketApi]:
    return anthropic_apis(server)


def settings(tmp_path: Path, server: ProviderServer) -> Settings:
    env = {"ANTHROPIC_ADMIN_KEY": KEY, "TOKENBRIDGE_ANTHROPIC_BASE_URL": server.url}
    return Settings(state_dir=tmp_path / "state", env=env)


def test_usage_maps_uncached_reads_and_both_cache_write_ttls(tmp_path, server, apis, pricer):
    apis["messages"].put(
        H0,
        anthropic_usage("claude-sonnet-5", uncached=18250, read=212480, w5m=4096, w1h=0, output=9310),
        anthropic_usage("claude-haiku-4-5", uncached=40000, read=0, w5m=0, w1h=12000, output=15500),
    )
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        assert app.scan_one(ledger, AnthropicUsage(s), pricer).failure is None
        sums = usage_sums(ledger, USAGE)
        rows = ledger.tokens_for([f"anthropic:messages:{H0}:claude-haiku-4-5"])
    assert sums["claude-sonnet-5"] == {
        "input": 18250, "output": 9310, "cacheRead": 212480, "cacheCreation": 4096, "requests": 0
    }  # fmt: skip
    assert sums["claude-haiku-4-5"]["cacheCreation"] == 12000
    assert rows[f"anthropic:messages:{H0}:claude-haiku-4-5"].cache_creation_1h == 12000
    req = server.calls("/v1/organizations/usage_report/messages")[0]
    assert req.headers["x-api-key"] == KEY and req.headers["anthropic-version"] == "2023-06-01"
    assert req.query["group_by[]"] == ["model"] and req.query["starting_at"][0].endswith(":00:00Z")


def test_a_filling_hour_is_replaced_as_it_grows_and_after_a_correction_down(tmp_path, server, apis, pricer):
    m = apis["messages"]
    m.put(H0, anthropic_usage("claude-sonnet-5", uncached=2100, read=30720, w5m=0, w1h=0, output=640))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        src = AnthropicUsage(s)
        app.scan_one(ledger, src, pricer)
        m.put(H0, anthropic_usage("claude-sonnet-5", uncached=5600, read=61440, w5m=0, w1h=0, output=1280))
        app.scan_one(ledger, src, pricer)
        assert usage_sums(ledger, USAGE)["claude-sonnet-5"]["input"] == 5600
        m.put(H0, anthropic_usage("claude-sonnet-5", uncached=5400, read=61440, w5m=0, w1h=0, output=1280))
        app.scan_one(ledger, src, pricer)
        app.scan_one(ledger, src, pricer)
        assert usage_sums(ledger, USAGE)["claude-sonnet-5"] == {
            "input": 5400, "output": 1280, "cacheRead": 61440, "cacheCreation": 0, "requests": 0
        }  # fmt: skip


def test_cost_report_cents_strings_are_exact_dollars_and_rows_without_model_count(tmp_path, server, apis, pricer):
    apis["cost"].put(
        D0,
        anthropic_cost("1843.2750", "Claude Sonnet 5 Usage - Output Tokens", "claude-sonnet-5", "output_tokens"),
        anthropic_cost("412.8", "Claude Sonnet 5 Usage - Input Tokens", "claude-sonnet-5", "uncached_input_tokens"),
        anthropic_cost("30", "Web Search Usage", None),
    )
    apis["messages"].put(H0, anthropic_usage("claude-sonnet-5", uncached=18250, read=0, w5m=0, w1h=0, output=9310))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        for src in (AnthropicUsage(s), AnthropicCosts(s)):
            assert app.scan_one(ledger, src, pricer).failure is None
        by_model = {t.model: t.cost for t in ledger.totals() if t.source == COSTS}
        assert by_model == {"claude-sonnet-5": Decimal("22.56075"), "web_search": Decimal("0.3")}
        assert cost_of(ledger, USAGE) == 0  # billed cost is the total: no estimate on top
        # A late correction of the day (down a few percent) replaces it; a re-poll adds nothing.
        apis["cost"].put(
            D0,
            anthropic_cost("1800", "Claude Sonnet 5 Usage - Output Tokens", "claude-sonnet-5", "output_tokens"),
            anthropic_cost("412.8", "Claude Sonnet 5 Usage - Input Tokens", "claude-sonnet-5", "uncached_input_tokens"),
            anthropic_cost("30", "Web Search Usage", None),
        )
        app.scan_one(ledger, AnthropicCosts(s), pricer)
        app.scan_one(ledger, AnthropicCosts(s), pricer)
        assert cost_of(ledger, COSTS) == Decimal("22.428")


def test_a_403_for_a_non_admin_key_is_recorded_by_kind(tmp_path, server, apis, pricer):
    err = {"type": "error", "error": {"type": "permission_error", "message": "not an admin key"}, "request_id": "r"}
    server.script("/v1/organizations/cost_report", Reply(403, err))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        stats = app.scan_one(ledger, AnthropicCosts(s), pricer)
        assert stats.failure is not None and stats.failure.kind == "http_403"  # type: ignore[attr-defined]
        assert "not an admin key" in str(stats.failure) and KEY not in str(stats.failure)
        assert ledger.health()[COSTS].last_error_kind == "http_403"


def test_usage_of_an_unknown_model_without_the_cost_api_is_unknown_never_zero(tmp_path, server, apis, pricer):
    # The usage report has no request count: its rows count 0 requests. With the cost API off the
    # usage row's cost is estimated, and a model without a price must read as unknown everywhere.
    apis["messages"].put(
        H0,
        anthropic_usage("unknown-claude-x", uncached=1_000_000, read=0, w5m=0, w1h=0, output=0),
        anthropic_usage("claude-sonnet-5", uncached=2_000_000, read=0, w5m=0, w1h=0, output=500_000),
    )
    s = settings(tmp_path, server)
    s.enabled_sources = (USAGE,)  # the cost report is not read: usage rows are estimated
    with Ledger.open(s.state_dir) as ledger:
        assert app.scan_one(ledger, AnthropicUsage(s), pricer).failure is None
        models = report.build(ledger, "models", UTC)
        daily = report.build(ledger, "daily", UTC).as_json()
        status_data = status.build(ledger, {}, now=NOW, tz=UTC)
        web = _api.by_model(ledger, _api.parse_query({"timezone": ["UTC"]}))
        web_summary = _api.summary(ledger, _api.parse_query({"timezone": ["UTC"]}))
        totals = {t.model: t for t in ledger.totals()}
        assert ledger.totals() == ledger.recomputed_totals()
    unknown = next(b for b in models.buckets if b.key == "unknown-claude-x")
    assert unknown.line.cost is None and cli._fmt_cost(unknown.line) == "unknown"
    assert cli._fmt_cost(models.totals) == "$2.50 + ?"  # the priced row's $2.50 and the unknown row
    day = daily["daily"][0]  # one bucket holding both rows
    assert (day["totalCost"], day["unpricedRequests"], day["requests"]) == ("2.5", 1, 0)
    breakdown = {m["modelName"]: m for m in day["modelBreakdowns"]}
    assert breakdown["unknown-claude-x"]["totalCost"] is None and breakdown["unknown-claude-x"]["unpricedRequests"] == 1
    assert breakdown["claude-sonnet-5"]["totalCost"] == "2.5" and breakdown["claude-sonnet-5"]["unpricedRequests"] == 0
    by_web = {m["model"]: m for m in web["models"]}
    assert by_web["unknown-claude-x"]["totalCost"] is None and by_web["unknown-claude-x"]["unpricedRequests"] == 1
    assert web["totals"]["unpricedRequests"] == 1 and web_summary["allTime"]["unpricedRequests"] == 1
    month = status_data["month"]["anthropic"]
    assert (month["cost"], month["unpriced"]) == (Decimal("2.5"), 1)
    assert "1 request(s) or usage row(s) this month have no known price" in status.render(status_data)
    assert (totals["unknown-claude-x"].unpriced, totals["unknown-claude-x"].priced) == (1, 0)
    assert (totals["claude-sonnet-5"].unpriced, totals["claude-sonnet-5"].priced) == (0, 1)
