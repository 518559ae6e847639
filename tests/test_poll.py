"""The polled-source driver: errors by kind, backoff, Retry-After, and keys that never leak.

Driven through the OpenAI usage source against the real loopback server (tests/_provider_server.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import app
from bridge.config import Settings
from bridge.errors import PollError
from bridge.ledger import Ledger
from bridge.sources._poll import Schedule, backoff_s
from bridge.sources.openai_api import USAGE, OpenAIUsage
from tests._otlp_sink import running_sink, tokenbridge
from tests._provider_server import (
    BucketApi,
    ProviderServer,
    Reply,
    openai_apis,
    openai_completion,
    openai_cost,
    openai_error,
    running_server,
)
from tests.test_openai_api import H0, KEY, settings, usage_sums

PATH = "/v1/organization/usage/completions"


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with running_server() as srv:
        yield srv


@pytest.fixture
def apis(server: ProviderServer) -> dict[str, BucketApi]:
    return openai_apis(server)


def failure(stats: object) -> PollError:
    exc = getattr(stats, "failure", None)
    assert isinstance(exc, PollError), stats
    return exc


def test_401_is_an_auth_failure_with_one_clear_line_and_no_key(tmp_path, server, apis, pricer):
    # OpenAI echoes (part of) a wrong key in its message: the bridge must scrub it.
    body = openai_error(f"Incorrect API key provided: {KEY}. You can find your API key at ...", "invalid_request_error")
    server.script(PATH, Reply(401, body))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        exc = failure(app.scan_one(ledger, OpenAIUsage(s), pricer))
        assert exc.kind == "http_401"
        assert KEY not in str(exc) and "HTTP 401" in str(exc) and "check openai_usage_api's key" in str(exc)
        h = ledger.health()[USAGE]
        assert h.last_error_kind == "http_401" and KEY not in (h.last_error or "")


def test_429_waits_for_retry_after_and_is_never_retried_early(tmp_path, server, apis, pricer):
    apis["completions"].put(H0, openai_completion("gpt-5", input=100, cached=0, output=1, requests=1))
    server.script(PATH, Reply(429, openai_error("Rate limit exceeded", "rate_limit_error"), {"Retry-After": "20"}))
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        src = OpenAIUsage(s)
        exc = failure(app.scan_one(ledger, src, pricer))
        assert exc.kind == "http_429" and exc.retry_after == 20
        assert 19 <= src.due_in(ledger, time.time()) <= 20
        before = len(server.requests)
        # A manual pass inside the window does not call the provider: it says when it will.
        stats = app.scan_one(ledger, src, pricer)
        assert stats.failure is None and not stats.attempted
        assert "rate limited by openai" in stats.errors[0]
        assert len(server.requests) == before
        assert ledger.health()[USAGE].consecutive_failures == 1  # not an attempt
        # Once the Retry-After has passed, the next pass polls and succeeds.
        sched = Schedule.load(ledger, USAGE)
        sched.not_before = sched.next_poll = time.time() - 1
        ledger.set_state(USAGE, "schedule", sched.dump())
        assert app.scan_one(ledger, src, pricer).failure is None
        assert usage_sums(ledger, USAGE)["gpt-5"]["input"] == 100


def test_5xx_backs_off_exponentially_then_success_resets_the_schedule(tmp_path, server, apis, pricer):
    apis["completions"].put(H0, openai_completion("gpt-5", input=100, cached=0, output=1, requests=1))
    s = settings(tmp_path, server)
    err = {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
    server.script(PATH, Reply(500, err), Reply(500, err))
    with Ledger.open(s.state_dir) as ledger:
        src = OpenAIUsage(s)
        assert failure(app.scan_one(ledger, src, pricer)).kind == "http_500"
        first = src.due_in(ledger, time.time())
        assert failure(app.scan_one(ledger, src, pricer)).kind == "http_500"
        second = src.due_in(ledger, time.time())
        assert 29 < first <= 30 * 1.25 and 59 < second <= 60 * 1.25
        assert ledger.health()[USAGE].consecutive_failures == 2
        assert app.scan_one(ledger, src, pricer).failure is None
        assert ledger.health()[USAGE].consecutive_failures == 0
        assert src.interval_s - 2 < src.due_in(ledger, time.time()) <= src.interval_s


def test_backoff_is_capped_by_the_interval_and_jitter_only_adds():
    assert backoff_s(1, 300, lambda: 0.0) == 30
    assert backoff_s(4, 300, lambda: 0.0) == 240
    assert backoff_s(50, 300, lambda: 1.0) == 375
    assert backoff_s(2, 300, lambda: 0.5) == 60 * 1.125


def test_one_failing_provider_does_not_stop_another(tmp_path, server, apis, pricer):
    apis["completions"].put(H0, openai_completion("gpt-5", input=100, cached=0, output=1, requests=1))
    s = settings(tmp_path, server)
    broken = Settings(
        state_dir=s.state_dir, env={**s.env, "TOKENBRIDGE_OPENAI_BASE_URL": "http://127.0.0.1:9"}
    )  # nothing listens on port 9
    with Ledger.open(s.state_dir) as ledger:
        results = app.ingest(ledger, [OpenAIUsage(broken), OpenAIUsage(s)], pricer)
        assert failure(results[0]).kind == "network"
        assert results[1].failure is None
        assert usage_sums(ledger, USAGE)["gpt-5"]["input"] == 100


def test_a_key_that_is_not_a_header_value_is_refused_without_showing_it(tmp_path, server, apis, pricer):
    bad = "sk-admin-LEAK\nInjected: yes"
    s = settings(tmp_path, server, OPENAI_ADMIN_KEY=bad)
    with Ledger.open(s.state_dir) as ledger:
        exc = failure(app.scan_one(ledger, OpenAIUsage(s), pricer))
    assert exc.kind == "bad_key" and "LEAK" not in str(exc) and "OPENAI_ADMIN_KEY" in str(exc)
    assert server.requests == []


def test_the_key_goes_only_into_the_auth_header(tmp_path, server, apis, pricer):
    s = settings(tmp_path, server)
    with Ledger.open(s.state_dir) as ledger:
        app.scan_one(ledger, OpenAIUsage(s), pricer)
    for r in server.requests:
        assert r.headers["authorization"] == f"Bearer {KEY}"
        assert KEY not in json.dumps(r.query)


@pytest.mark.parametrize("debug", [False, True])
def test_the_key_appears_in_no_output_ledger_or_export_after_failing_and_succeeding_polls(
    tmp_path: Path, server: ProviderServer, apis: dict[str, BucketApi], cli_env: dict[str, str], debug: bool
) -> None:
    apis["completions"].put(H0, openai_completion("gpt-5", input=100, cached=0, output=1, requests=1))
    apis["costs"].put(H0 // 86400 * 86400, openai_cost(0.25, "gpt-5, input"))
    echo = openai_error(f"Incorrect API key provided: {KEY}.", "invalid_request_error")
    server.script(PATH, Reply(401, echo))
    server.script("/v1/organization/costs", Reply(500, echo))
    flags = ["--debug"] if debug else []
    with running_sink("http/protobuf") as sink:
        env = {**cli_env, **sink.env(), "OPENAI_ADMIN_KEY": KEY, "TOKENBRIDGE_OPENAI_BASE_URL": server.url}
        failed = tokenbridge(env, *flags, "sync", "--source", "openai", "--no-progress")
        assert failed.returncode == 1
        assert "HTTP 500" in failed.stderr and "provided: ***" in failed.stderr
        ok = tokenbridge(env, *flags, "sync", "--source", "openai", "--no-progress")
        assert ok.returncode == 0, ok.stderr
        listed = tokenbridge(env, *flags, "sources", "--json")
        assert listed.returncode == 0, listed.stderr
        points = sink.points()
    assert any(p.attrs.get("source") == USAGE for p in points)
    for out in (failed.stdout, failed.stderr, ok.stdout, ok.stderr, listed.stdout, listed.stderr):
        assert KEY not in out
        assert "TESTKEY" not in out
    for p in points:
        assert "TESTKEY" not in json.dumps(p.attrs) + json.dumps(p.resource)
    for f in Path(env["TOKENBRIDGE_STATE_DIR"]).rglob("*"):
        if f.is_file():
            assert b"TESTKEY" not in f.read_bytes(), f


def _chains(server: ProviderServer) -> int:
    return sum(1 for r in server.calls(PATH) if "page" not in r.query)


@pytest.mark.parametrize(("interval", "want_more"), [("3600", False), ("0.5", True)])
def test_run_polls_on_the_schedule_and_the_safety_rescan_never_polls_early(
    server: ProviderServer, apis: dict[str, BucketApi], cli_env: dict[str, str], interval: str, want_more: bool
) -> None:
    from tests._otlp_sink import Daemon

    env = {
        **cli_env,
        "OPENAI_ADMIN_KEY": KEY,
        "TOKENBRIDGE_OPENAI_BASE_URL": server.url,
        "TOKENBRIDGE_OPENAI_POLL_INTERVAL": interval,
        "TOKENBRIDGE_RESCAN_INTERVAL": "0.2",
    }
    daemon = Daemon(env, "--no-otlp")
    try:
        daemon.wait_ready()
        assert _chains(server) == 1
        time.sleep(2.5)
    finally:
        assert daemon.stop() == 0
    if want_more:
        assert _chains(server) >= 3
    else:
        assert _chains(server) == 1  # ten safety rescans, no early poll (nor at shutdown)


def test_config_file_names_the_key_variable_base_url_and_interval_env_wins(tmp_path, server, apis, pricer):
    from bridge import config
    from bridge.errors import ConfigError

    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[providers]\nopenai_key_env = "MY_ORG_KEY"\nopenai_base_url = "{server.url}"\n'
        "openai_poll_interval_seconds = 120\n"
    )
    s = config.load({"MY_ORG_KEY": KEY}, state_dir=tmp_path / "state", config=cfg)
    src = OpenAIUsage(s)
    assert src.key == KEY and src.base == server.url and src.interval_s == 120
    with Ledger.open(s.state_dir) as ledger:
        assert app.scan_one(ledger, src, pricer).failure is None
        assert src.poll_info(ledger)["keyEnv"] == "MY_ORG_KEY"
    env = {"MY_ORG_KEY": KEY, "TOKENBRIDGE_OPENAI_POLL_INTERVAL": "30"}
    assert OpenAIUsage(config.load(env, state_dir=tmp_path / "state", config=cfg)).interval_s == 30
    cfg.write_text("[providers]\nopenai_poll_interval_seconds = 0\n")
    with pytest.raises(ConfigError, match=r"providers\.openai_poll_interval_seconds"):
        config.load({}, state_dir=tmp_path / "state", config=cfg)
    cfg.write_text('[providers]\nopenai_key = "sk-admin-in-a-file"\n')
    with pytest.raises(ConfigError, match=r"providers\.openai_key: unknown key") as err:
        config.load({}, state_dir=tmp_path / "state", config=cfg)
    assert "sk-admin-in-a-file" not in str(err.value)


def test_a_base_url_without_a_scheme_is_a_config_failure_of_that_source_only(tmp_path, server, apis, pricer):
    s = settings(tmp_path, server, TOKENBRIDGE_OPENAI_BASE_URL="api.openai.example")
    with Ledger.open(s.state_dir) as ledger:
        exc = failure(app.scan_one(ledger, OpenAIUsage(s), pricer))
    assert exc.kind == "config" and "TOKENBRIDGE_OPENAI_BASE_URL" in str(exc)
