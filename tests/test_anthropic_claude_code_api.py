"""Claude Code analytics: its own attribution source, never in default totals nor exported."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import app
from bridge.config import Settings
from bridge.ledger import Ledger
from bridge.series import values
from bridge.sources import _registry
from bridge.sources.anthropic_claude_code_api import NAME, ClaudeCodeAnalytics
from bridge.views import default_exclusions
from tests._provider_server import ProviderServer, Reply, Request, running_server
from tests.test_openai_api import usage_sums

KEY = "sk-ant-admin01-TESTKEY-analytics"
YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()


def record(day: str, email: str, tokens: dict[str, int], cents: int) -> dict[str, object]:
    return {
        "date": f"{day}T00:00:00Z", "actor": {"type": "user_actor", "email_address": email},
        "organization_id": "3f1c2a9e-5b7d-4c8e-9a10-2b3c4d5e6f70", "customer_type": "api", "subscription_type": None,
        "terminal_type": "vscode", "is_remote": False,
        "core_metrics": {"num_sessions": 4, "lines_of_code": {"added": 610, "removed": 204},
                         "commits_by_claude_code": 3, "pull_requests_by_claude_code": 1},
        "tool_actions": {"edit_tool": {"accepted": 31, "rejected": 2}},
        "model_breakdown": [{"model": "claude-sonnet-5", "tokens": tokens,
                             "estimated_cost": {"amount": cents, "currency": "USD"}}],
    }  # fmt: skip


class Analytics:
    def __init__(self) -> None:
        self.days: dict[str, list[dict[str, object]]] = {}

    def __call__(self, req: Request) -> Reply:
        day = req.one("starting_at") or ""
        return Reply(200, {"data": self.days.get(day, []), "has_more": False, "next_page": None})


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with running_server() as srv:
        yield srv


def settings(tmp_path: Path, server: ProviderServer) -> Settings:
    env = {"ANTHROPIC_ADMIN_KEY": KEY, "TOKENBRIDGE_ANTHROPIC_BASE_URL": server.url}
    return Settings(state_dir=tmp_path / "state", env=env)


def test_analytics_rows_are_kept_apart_from_totals_and_exports(tmp_path, server, pricer):
    api = Analytics()
    tokens = {"input": 52000, "output": 14100, "cache_read": 410000, "cache_creation": 22000}
    api.days[YESTERDAY] = [record(YESTERDAY, "dev1@example.com", tokens, 297)]
    server.route("/v1/organizations/usage_report/claude_code", api)
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        src = ClaudeCodeAnalytics(s)
        assert app.scan_one(ledger, src, pricer).failure is None
        # Yesterday grows (the report is re-read): replaced, not added.
        api.days[YESTERDAY] = [record(YESTERDAY, "dev1@example.com", {**tokens, "output": 15000}, 310)]
        assert app.scan_one(ledger, src, pricer).failure is None
        sums = usage_sums(ledger, NAME)["claude-sonnet-5"]
        assert sums == {"input": 52000, "output": 15000, "cacheRead": 410000, "cacheCreation": 22000, "requests": 0}
        assert [t.cost for t in ledger.totals()] == [Decimal("3.10")]
        assert default_exclusions(ledger) == [(NAME, "anthropic", 0)]  # never in default totals
        assert list(values(ledger.totals(), include_session_id=False)) == []  # never exported
        days = [r.one("starting_at") for r in server.calls("/v1/organizations/usage_report/claude_code")]
        assert len(days) >= 31 and days[-2:] == [YESTERDAY, datetime.now(UTC).date().isoformat()]
    for f in (tmp_path / "state").iterdir():  # the database and its WAL
        assert b"dev1@example.com" not in f.read_bytes(), f


def test_analytics_is_its_own_group_and_off_by_default():
    spec = _registry.get(NAME)
    assert spec.group == "claude_code_analytics" and not spec.default_enabled
    assert NAME not in _registry.groups()["anthropic"]


def test_second_poll_rereads_only_yesterday_and_today(tmp_path, server, pricer):
    server.route("/v1/organizations/usage_report/claude_code", Analytics())
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        app.scan_one(ledger, ClaudeCodeAnalytics(s), pricer)
        before = len(server.requests)
        app.scan_one(ledger, ClaudeCodeAnalytics(s), pricer)
    assert len(server.requests) - before == 2


def test_a_record_of_a_wrong_shape_is_skipped_and_the_others_stored(tmp_path, server, pricer):
    api = Analytics()
    tokens = {"input": 10, "output": 1, "cache_read": 0, "cache_creation": 0}
    api.days[YESTERDAY] = [
        {"date": "not a date", "actor": {}},
        record(YESTERDAY, "dev2@example.com", {**tokens, "output": -1}, 1),
        record(YESTERDAY, "dev3@example.com", tokens, 2),
    ]
    server.route("/v1/organizations/usage_report/claude_code", api)
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        stats = app.scan_one(ledger, ClaudeCodeAnalytics(s), pricer)
        assert stats.failure is None and stats.malformed == 2
        assert usage_sums(ledger, NAME)["claude-sonnet-5"]["input"] == 10
