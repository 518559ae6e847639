"""The single-count rule: a provider's billing API and Claude Code's transcripts carrying the same usage."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal

from bridge.ledger import Ledger
from bridge.views import billing_sources, default_exclusions
from tests._otlp_sink import tokenbridge
from tests._provider_server import anthropic_apis, anthropic_cost, anthropic_usage, running_server
from tests.conftest import assistant_line

HOUR, DAY = 3600, 86400
NOW = time.time()
H0 = int(NOW // HOUR * HOUR) - 3 * HOUR
OLD = H0 - 40 * DAY  # before the billing API's first row
MODEL = "claude-sonnet-4-5-20250929"
KEY = "sk-ant-admin01-TESTKEY-views"


def iso_ms(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_billing_sources_are_the_provider_usage_and_cost_apis():
    assert billing_sources() == {
        "anthropic_cost_api": "anthropic", "anthropic_usage_api": "anthropic", "openai_cost_api": "openai",
        "openai_usage_api": "openai", "openrouter_credits_api": "openrouter",
    }  # fmt: skip


def test_same_usage_in_transcripts_and_the_usage_report_counts_once_in_default_totals(claude_home, cli_env, tmp_path):
    f = claude_home.session_file()
    line = dict(input=4, output=187, cache_read=48000, cache_5m=1200)
    claude_home.append(
        f,
        assistant_line("msg_old", "req_old", ts=iso_ms(OLD + 600), **line),
        assistant_line("msg_new", "req_new", ts=iso_ms(H0 + 600), **line),
    )
    with running_server() as server:
        apis = anthropic_apis(server)
        apis["messages"].put(H0, anthropic_usage(MODEL, uncached=4, read=48000, w5m=1200, w1h=0, output=187))
        apis["cost"].put(H0 // DAY * DAY, anthropic_cost("100", "Claude Sonnet 4.5 Usage - Output Tokens", MODEL))
        env = {**cli_env, "ANTHROPIC_ADMIN_KEY": KEY, "TOKENBRIDGE_ANTHROPIC_BASE_URL": server.url}
        r = tokenbridge(env, "sync", "--no-export", "--no-progress")
        assert r.returncode == 0, r.stderr

    def report(*args: str) -> dict:
        out = tokenbridge(env, "report", "models", "--json", "--timezone", "UTC", *args)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["totals"] | {"stderr": out.stderr}

    client = report("--source", "claude")
    default = report()
    one = 4 + 187 + 48000 + 1200
    assert client["totalTokens"] == 2 * one  # the client view alone: both lines
    assert default["totalTokens"] == 2 * one  # old line (no billing data yet) + the billing view, not 3x
    old_cost = Decimal(client["totalCost"]) / 2  # both lines have the same estimated cost
    assert Decimal(default["totalCost"]) == old_cost + Decimal("1.00")  # estimate before, bill after
    assert "claude_transcripts: anthropic usage is counted from anthropic's billing API" in default["stderr"]
    with Ledger.open(tmp_path / "state") as ledger:
        [(source, provider, start)] = default_exclusions(ledger)
    assert (source, provider, start) == ("claude_transcripts", "anthropic", H0 // DAY * DAY * 1000)
