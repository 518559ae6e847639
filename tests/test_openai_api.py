"""OpenAI usage and costs against a real loopback server answering like provider-apis.md §1."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from bridge import app
from bridge.config import Settings
from bridge.ledger import Ledger
from bridge.sources import _registry
from bridge.sources.openai_api import COSTS, USAGE, OpenAICosts, OpenAIUsage
from tests._provider_server import (
    BucketApi,
    ProviderServer,
    Reply,
    openai_apis,
    openai_completion,
    openai_cost,
    openai_embedding,
    running_server,
)

KEY = "sk-admin-TESTKEY-9f8e7d6c5b4a39281706"
HOUR = 3600
DAY = 86400
NOW = time.time()
H0 = int(NOW // HOUR * HOUR) - 5 * HOUR  # a closed hour, five hours ago
D0 = int(NOW // DAY * DAY) - DAY  # yesterday 00:00 UTC


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with running_server() as srv:
        yield srv


@pytest.fixture
def apis(server: ProviderServer) -> dict[str, BucketApi]:
    return openai_apis(server)


def settings(tmp_path: Path, server: ProviderServer, **extra: str) -> Settings:
    env = {"OPENAI_ADMIN_KEY": KEY, "TOKENBRIDGE_OPENAI_BASE_URL": server.url, **extra}
    return Settings(state_dir=tmp_path / "state", env=env)


def usage_sums(ledger: Ledger, source: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for t in ledger.totals():
        if t.source == source:
            d = out.setdefault(t.model, {"input": 0, "output": 0, "cacheRead": 0, "cacheCreation": 0, "requests": 0})
            for k, v in t.tokens.items():
                d[k] += v
            d["requests"] += t.requests
    assert ledger.totals() == ledger.recomputed_totals()
    return out


def cost_of(ledger: Ledger, source: str) -> Decimal:
    return sum((t.cost for t in ledger.totals() if t.source == source), Decimal(0))


def test_completions_both_field_sets_map_cached_and_cache_writes_out_of_input(tmp_path, server, apis, pricer):
    apis["completions"].put(
        H0,
        openai_completion("gpt-5-2026-08-07", input=42000, cached=30000, output=3500, requests=18, writes=2000),
        openai_completion("gpt-5-mini-2026-08-07", input=6224, cached=1024, output=900, requests=7),
    )
    # The pre-2026-07 field set: no cache-write or uncached fields at all.
    old = openai_completion("gpt-5-2026-08-07", input=800, cached=100, output=150, requests=1, new_fields=False)
    apis["completions"].put(H0 + HOUR, old)
    apis["embeddings"].put(H0, openai_embedding("text-embedding-3-small", input=5000, requests=3))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        stats = app.scan_one(ledger, OpenAIUsage(s), pricer)
        assert stats.failure is None, stats.errors
        sums = usage_sums(ledger, USAGE)
    assert sums["gpt-5-2026-08-07"] == {
        "input": 10000 + 700, "output": 3650, "cacheRead": 30100, "cacheCreation": 2000, "requests": 19
    }  # fmt: skip
    assert sums["gpt-5-mini-2026-08-07"] == {
        "input": 5200, "output": 900, "cacheRead": 1024, "cacheCreation": 0, "requests": 7
    }  # fmt: skip
    assert sums["text-embedding-3-small"] == {
        "input": 5000, "output": 0, "cacheRead": 0, "cacheCreation": 0, "requests": 3
    }  # fmt: skip


def test_first_poll_drains_every_page_with_identical_parameters(tmp_path, server, apis, pricer):
    # 30 days of hours at 168 buckets a page: a chain of 5 pages; the cursors hold "=" (URL-encoded).
    for i in range(0, 30 * 24, 7):
        apis["completions"].put(H0 - i * HOUR, openai_completion("gpt-5", input=10, cached=0, output=1, requests=1))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        app.scan_one(ledger, OpenAIUsage(s), pricer)
        sums = usage_sums(ledger, USAGE)
    calls = server.calls("/v1/organization/usage/completions")
    assert len(calls) == 5
    first = {k: v for k, v in calls[0].query.items()}
    for c in calls[1:]:
        assert {k: v for k, v in c.query.items() if k != "page"} == first  # else the server answers 400
        assert c.query["page"][0].startswith("page_")
    start = int(first["start_time"][0])  # the 30-day backfill from the time of the poll, hour-aligned
    expected = sum(1 for i in range(0, 30 * 24, 7) if H0 - i * HOUR >= start)
    assert sums["gpt-5"]["requests"] == expected
    assert first["group_by"] == ["model"] and first["bucket_width"] == ["1h"]
    assert int(first["start_time"][0]) % HOUR == 0  # aligned: no truncated first bucket


def utc_iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def test_repolled_buckets_are_exactly_once_and_revisions_replace_up_and_down(tmp_path, server, apis, pricer, caplog):
    c = apis["completions"]
    c.put(H0, openai_completion("gpt-5", input=1000, cached=0, output=100, requests=2))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        src = OpenAIUsage(s)
        app.scan_one(ledger, src, pricer)
        app.scan_one(ledger, src, pricer)  # same data again: nothing added
        assert usage_sums(ledger, USAGE)["gpt-5"]["input"] == 1000
        # The open bucket grows, a new one appears.
        c.put(H0, openai_completion("gpt-5", input=1500, cached=0, output=150, requests=3))
        c.put(H0 + HOUR, openai_completion("gpt-5", input=10, cached=0, output=1, requests=1))
        app.scan_one(ledger, src, pricer)
        assert usage_sums(ledger, USAGE)["gpt-5"] == {
            "input": 1510, "output": 151, "cacheRead": 0, "cacheCreation": 0, "requests": 4
        }  # fmt: skip
        # A late downward correction replaces the stored value: the total moves by the difference,
        # and the correction is logged once (not on every later re-read of the same value).
        c.put(H0, openai_completion("gpt-5", input=1400, cached=0, output=140, requests=3))
        with caplog.at_level(logging.INFO, "tokenbridge"):
            app.scan_one(ledger, src, pricer)
            app.scan_one(ledger, src, pricer)
        revised = [r.getMessage() for r in caplog.records if "revised" in r.getMessage()]
        assert revised == [f"{USAGE}: openai revised 1 bucket(s) down (e.g. gpt-5 at {utc_iso(H0)}: 1650 -> 1540 "
                           "tokens); stored values replaced"]  # fmt: skip
        assert usage_sums(ledger, USAGE)["gpt-5"]["input"] == 1410
        assert usage_sums(ledger, USAGE)["gpt-5"]["output"] == 141
    # A restart (a new process, a new source object) re-reads the window and adds nothing.
    with Ledger.open(s.state_dir) as ledger:
        app.scan_one(ledger, OpenAIUsage(s), pricer)
        assert usage_sums(ledger, USAGE)["gpt-5"]["input"] == 1410


def test_later_polls_reread_a_trailing_window_not_everything(tmp_path, server, apis, pricer):
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        src = OpenAIUsage(s)
        # The clock of the passes, not the module's import time: in a full run the test starts minutes later.
        before = time.time()
        app.scan_one(ledger, src, pricer)
        app.scan_one(ledger, src, pricer)
        after = time.time()
    calls = server.calls("/v1/organization/usage/completions")
    starts = [int(c.query["start_time"][0]) for c in calls if "page" not in c.query]
    assert starts[0] <= after - 30 * DAY
    assert before - 2 * DAY - 2 * HOUR <= starts[1] <= after - 2 * DAY  # two days back, hour-aligned


def test_costs_are_exact_billed_dollars_and_usage_rows_carry_no_estimate(tmp_path, server, apis, pricer):
    apis["costs"].put(
        D0,
        openai_cost(0.5250000000, "gpt-5-2026-08-07, input"),
        openai_cost(0.35, "gpt-5-2026-08-07, output"),
        openai_cost(0.1, None, project=None),
    )
    apis["completions"].put(H0, openai_completion("gpt-5-2026-08-07", input=420000, cached=0, output=35000, requests=9))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        for src in (OpenAIUsage(s), OpenAICosts(s)):
            assert app.scan_one(ledger, src, pricer).failure is None
        assert cost_of(ledger, COSTS) == Decimal("0.975")
        assert cost_of(ledger, USAGE) == 0  # billed by the cost API: no estimate on top
        costs = {t.model: (t.cost, t.requests, sum(t.tokens.values())) for t in ledger.totals() if t.source == COSTS}
        assert costs["gpt-5-2026-08-07"] == (Decimal("0.875"), 0, 0)
        assert costs["(unattributed)"] == (Decimal("0.1"), 0, 0)
        # Re-polled (the 3-day window): the same cents, not twice.
        app.scan_one(ledger, OpenAICosts(s), pricer)
        assert cost_of(ledger, COSTS) == Decimal("0.975")
        assert ledger.unpriced_requests() == 0


def test_without_the_cost_source_usage_is_priced_as_an_estimate(tmp_path, server, apis, pricer):
    apis["completions"].put(H0, openai_completion("gpt-5", input=1_000_000, cached=0, output=0, requests=1))
    s = settings(tmp_path, server)
    s.enabled_sources = (USAGE,)
    with Ledger.open(s.state_dir) as ledger:
        app.scan_one(ledger, OpenAIUsage(s), pricer)
        assert cost_of(ledger, USAGE) == Decimal(1)  # FlatPricer: $1 per million tokens


def test_a_source_without_its_key_is_not_configured_and_never_an_error(tmp_path, server, apis, pricer):
    s = Settings(state_dir=tmp_path / "state", env={"TOKENBRIDGE_OPENAI_BASE_URL": server.url})
    src = OpenAIUsage(s)
    st = src.status()
    assert not st.detected and "not configured: set OPENAI_ADMIN_KEY" in st.notes[0]
    with Ledger.open(s.state_dir) as ledger:
        stats = app.scan_one(ledger, src, pricer)
        assert stats.failure is None and not stats.errors
        assert ledger.health() == {}
        assert src.due_in(ledger, time.time()) is None
    assert server.requests == []
    spec = _registry.get(USAGE)
    assert spec.kind == "polled" and spec.group == "openai" and spec.default_enabled


def test_sources_says_there_is_no_balance_endpoint(tmp_path, server):
    assert any("no balance" in n for n in OpenAIUsage(settings(tmp_path, server)).status().notes)


def test_malformed_json_keeps_what_was_stored_and_retries_later(tmp_path, server, apis, pricer):
    apis["completions"].put(H0, openai_completion("gpt-5", input=1000, cached=0, output=100, requests=2))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        src = OpenAIUsage(s)
        app.scan_one(ledger, src, pricer)
        server.script("/v1/organization/usage/completions", Reply(200, '{"object":"page","data":[{"object":"buck'))
        stats = app.scan_one(ledger, src, pricer)
        assert stats.failure is not None and stats.failure.kind == "bad_response"  # type: ignore[attr-defined]
        assert usage_sums(ledger, USAGE)["gpt-5"]["input"] == 1000
        h = ledger.health()[USAGE]
        assert h.last_error_kind == "bad_response" and h.consecutive_failures == 1
        assert 0 < src.due_in(ledger, time.time()) <= 30 * 1.25 + 1  # backs off, retries soon
        assert app.scan_one(ledger, src, pricer).failure is None
        assert ledger.health()[USAGE].consecutive_failures == 0


def test_a_timeout_is_a_network_kind_failure_and_nothing_is_lost(tmp_path, server, apis, pricer):
    apis["completions"].put(H0, openai_completion("gpt-5", input=1000, cached=0, output=100, requests=2))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger, httpx.Client(timeout=0.3) as client:
        src = OpenAIUsage(s, client=client)
        app.scan_one(ledger, src, pricer)
        server.script("/v1/organization/usage/completions", Reply(200, {"object": "page"}, delay=1.0))
        stats = app.scan_one(ledger, src, pricer)
        assert stats.failure is not None and stats.failure.kind == "timeout"  # type: ignore[attr-defined]
        assert usage_sums(ledger, USAGE)["gpt-5"]["input"] == 1000


def test_a_chain_that_fails_midway_stores_nothing_of_it_and_the_next_poll_is_exact(tmp_path, server, apis, pricer):
    c = apis["completions"]
    for i in range(0, 30 * 24, 5):
        c.put(H0 - i * HOUR, openai_completion("gpt-5", input=10, cached=0, output=1, requests=1))
    s = settings(tmp_path, server)
    calls = 0

    def flaky(req):  # page 3 of the chain fails: the provider's 500 after two good pages
        nonlocal calls
        calls += 1
        return (
            Reply(500, {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}})
            if (calls == 3)
            else c(req)
        )

    server.route("/v1/organization/usage/completions", flaky)
    with Ledger.open(s.state_dir) as ledger:
        stats = app.scan_one(ledger, OpenAIUsage(s), pricer)
        assert stats.failure is not None and stats.failure.kind == "http_500"  # type: ignore[attr-defined]
        assert "gpt-5" not in usage_sums(ledger, USAGE)  # nothing of the broken chain
        assert ledger.state(USAGE, "synced:completions") is None  # the cursor did not move
        assert app.scan_one(ledger, OpenAIUsage(s), pricer).failure is None
        # The window starts where the source asked it to (the 30-day backfill from the time of the poll).
        start = int(server.calls("/v1/organization/usage/completions")[-1].query["start_time"][0])
        want = sum(1 for i in range(0, 30 * 24, 5) if H0 - i * HOUR >= start)
        assert usage_sums(ledger, USAGE)["gpt-5"]["requests"] == want


def test_an_empty_window_stores_nothing_and_succeeds(tmp_path, server, apis, pricer):
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        assert app.scan_one(ledger, OpenAIUsage(s), pricer).failure is None
        assert app.scan_one(ledger, OpenAICosts(s), pricer).failure is None
        assert ledger.totals() == []
        assert ledger.health()[USAGE].last_success_ms is not None


def test_sync_days_widens_the_window_and_a_restart_never_readds(tmp_path, server, apis, pricer):
    old = int(NOW // HOUR * HOUR) - 40 * DAY  # before the default 30-day backfill
    apis["completions"].put(old, openai_completion("gpt-5", input=7, cached=0, output=0, requests=1))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        app.scan_one(ledger, OpenAIUsage(s), pricer)
        assert "gpt-5" not in usage_sums(ledger, USAGE)
        since = datetime.fromtimestamp(NOW - 45 * DAY, UTC)
        app.scan_one(ledger, OpenAIUsage(s), pricer, since=since)
        app.scan_one(ledger, OpenAIUsage(s), pricer, since=since)
    with Ledger.open(s.state_dir) as ledger:
        app.scan_one(ledger, OpenAIUsage(s), pricer)
        assert usage_sums(ledger, USAGE)["gpt-5"]["input"] == 7


def test_one_result_row_of_a_wrong_shape_is_skipped_and_the_rest_is_stored(tmp_path, server, apis, pricer, caplog):
    bad = openai_completion("gpt-5-broken", input=10, cached=0, output=1, requests=1)
    bad["output_tokens"] = -5  # a corrupt count: never stored, never blocks the bucket's other rows
    weird = openai_completion("gpt-5-weird", input=10, cached=0, output=1, requests=1)
    weird["num_model_requests"] = "many"
    apis["completions"].put(H0, bad, weird, openai_completion("gpt-5", input=100, cached=0, output=10, requests=2))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        stats = app.scan_one(ledger, OpenAIUsage(s), pricer)
        assert stats.failure is None and stats.malformed == 2
        assert set(usage_sums(ledger, USAGE)) == {"gpt-5"}
    assert any("2 result row(s) of an unexpected shape skipped" in r.getMessage() for r in caplog.records)
