"""The web view and HTTP API: every endpoint against ``tokenbridge report --json`` on a synthetic
history, bad parameters, the token rule beyond loopback, cross-site refusal, and the page in a real
headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge import config
from bridge.errors import ConfigError
from bridge.web import WebServer
from tests._otlp_sink import Daemon, free_port, tokenbridge, wait_for
from tests._provider_server import openai_apis, running_server
from tests.conftest import assistant_line

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-admin-tb-w3b-s3cr3t"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    # The OpenAI key is set (the web view must never serve it): its sources poll a loopback OpenAI.
    with running_server() as openai:
        openai_apis(openai)
        yield _history(tmp_path_factory, openai.url)


def _history(tmp_path_factory: pytest.TempPathFactory, openai_url: str) -> dict[str, str]:
    base = tmp_path_factory.mktemp("web")
    subprocess.run(
        [sys.executable, "scripts/gen_history.py", "--out", str(base / "claude"), "--size", "1MB", "--seed", "7",
         "--days", "6", "--start", "2026-03-27"],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOKENBRIDGE_", "CLAUDE_"))}
    env.update(
        {
            "HOME": str(base / "home"),
            "CLAUDE_CONFIG_DIR": str(base / "claude"),
            "TOKENBRIDGE_STATE_DIR": str(base / "state"),
            "TOKENBRIDGE_CONFIG": str(base / "none.toml"),
            "OPENAI_ADMIN_KEY": SECRET,
            "TOKENBRIDGE_OPENAI_BASE_URL": openai_url,
            "TZ": "UTC",
        }
    )
    out = tokenbridge(env, "sync", "--no-export")
    assert out.returncode == 0, out.stderr
    return env


@pytest.fixture
def server(history: dict[str, str]) -> Iterator[WebServer]:
    srv = WebServer(config.load(env=history), "127.0.0.1", 0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def get(srv: WebServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(srv.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
            code = resp.status
            ctype = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        body, code, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
    return code, json.loads(body) if ctype.startswith("application/json") else body.decode()


def post(srv: WebServer, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(srv.url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def report(env: dict[str, str], *args: str) -> dict[str, Any]:
    out = tokenbridge(env, "report", *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


TOKENS = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens", "totalTokens", "totalCost")


def same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert {k: a[k] for k in (*TOKENS, "requests", "unpricedRequests")} == {
        k: b[k] for k in (*TOKENS, "requests", "unpricedRequests")
    }


def test_by_model_equals_the_models_report(server, history):
    code, body = get(server, "/api/usage/by-model")
    assert code == 200
    rep = report(history, "models")
    assert len(body["models"]) == len(rep["models"]) >= 3
    mine = {(m["model"], m["provider"]): m for m in body["models"]}
    for row in rep["models"]:
        same(mine[(row["model"], row["provider"])], row)
    same(body["totals"], rep["totals"])


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_timeline_days_and_every_split_equal_the_daily_report(server, history, tz):
    q = f"since=2026-03-26&until=2026-04-03&timezone={tz}"
    rep = report(history, "daily", "--since", "2026-03-26", "--until", "2026-04-03", "--timezone", tz)
    by_day = {d["date"]: d for d in rep["daily"]}
    for by in ("provider", "model", "source"):
        code, body = get(server, f"/api/usage/timeline?{q}&by={by}")
        assert code == 200, body
        assert body["days"][0]["date"] == "2026-03-26" and len(body["days"]) == 9
        for day in body["days"]:
            if day["date"] in by_day:
                same(day, by_day[day["date"]])
            else:
                assert day["requests"] == 0
            parts = [pts[i] for pts in body["series"].values() for i, d in enumerate(body["days"]) if d is day]
            assert sum(p["totalTokens"] for p in parts) == day["totalTokens"]
            assert sum(Decimal(p["totalCost"] or 0) for p in parts) == Decimal(day["totalCost"] or 0)


def test_summary_and_filters_equal_the_report_with_the_same_filters(server, history):
    code, body = get(server, "/api/usage/summary")
    assert code == 200
    same(body["allTime"], report(history, "daily")["totals"])
    code, body = get(server, "/api/usage/summary?since=2026-03-28&until=2026-03-30&source=claude")
    same(body["allTime"], report(history, "daily", "--since", "2026-03-28", "--until", "2026-03-30")["totals"])
    code, body = get(server, "/api/usage/by-provider?provider=nobody")
    assert body["providers"] == [] and body["totals"]["requests"] == 0
    code, body = get(server, "/api/usage/by-provider")
    assert sum(p["requests"] for p in body["providers"]) == report(history, "daily")["totals"]["requests"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("since=2026-13-01", "since"),
        ("until=yesterday", "until"),
        ("since=2026-04-02&until=2026-04-01", "since"),
        ("timezone=Mars/Base", "timezone"),
        ("source=nope", "source"),
        ("days=0", "days"),
        ("days=x", "days"),
        ("by=user", "by"),
        ("since=2026-03-01&since=2026-03-02", "since"),
        ("until=9999-12-31", "until"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(server, query, param):
    code, body = get(server, f"/api/usage/timeline?{query}")
    assert code == 400
    assert body["parameter"] == param and body["error"].startswith(f"{param}: ")


def test_unknown_paths_and_methods(server):
    assert get(server, "/api/nothing")[0] == 404
    assert get(server, "/api/sync")[0] == 405
    assert post(server, "/api/usage/summary", b"{}", {"Content-Type": "application/json"})[0] == 405


def test_providers_and_everything_else_never_serve_a_secret(server):
    paths = ["/api/providers", "/api/usage/summary", "/api/sync/log", "/healthz", "/openapi.json", "/docs", "/"]
    for path in paths:
        code, body = get(server, path)
        assert code == 200, path
        assert SECRET not in (body if isinstance(body, str) else json.dumps(body)), path
    code, body = get(server, "/api/providers")
    assert "claude_transcripts" in [s["name"] for s in body["sources"]]


def test_post_sync_ingests_refuses_cross_site_and_is_logged(server, history):
    home = Path(history["CLAUDE_CONFIG_DIR"]) / "projects" / "-home-dev-web"
    home.mkdir(parents=True, exist_ok=True)
    (home / "s.jsonl").write_text(assistant_line("msg_web_1", "req_web_1", ts="2026-03-30T12:00:00.000Z") + "\n")
    json_ct = {"Content-Type": "application/json"}
    assert post(server, "/api/sync", b"{}", {**json_ct, "Origin": "https://evil.example"})[0] == 403
    assert post(server, "/api/sync", b"{}", {**json_ct, "Sec-Fetch-Site": "cross-site"})[0] == 403
    assert post(server, "/api/sync", b"token=x", {"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    code, body = post(server, "/api/sync", b"{}", {**json_ct, "Origin": server.url})
    assert code == 200 and body["newRequests"] == 1
    code, body = post(server, "/api/sync", b"{}", json_ct)
    assert code == 200 and body["newRequests"] == 0, "a second pass adds nothing"
    code, log = get(server, "/api/sync/log")
    assert [p["trigger"] for p in log["passes"][:2]] == ["http", "http"]
    assert [p["newRequests"] for p in log["passes"][:2]] == [0, 1]


def test_binding_beyond_loopback_requires_a_token(history):
    settings = config.load(env={k: v for k, v in history.items() if k != "TOKENBRIDGE_HTTP_TOKEN"})
    with pytest.raises(ConfigError, match="TOKENBRIDGE_HTTP_TOKEN"):
        WebServer(settings, "0.0.0.0", 0)
    token = "tb-http-t0ken"
    srv = WebServer(config.load(env={**history, "TOKENBRIDGE_HTTP_TOKEN": token}), "0.0.0.0", 0)
    srv.start()
    try:
        local = WebServer.__new__(WebServer)
        local.host, local.port = "127.0.0.1", srv.port
        assert get(local, "/api/usage/summary")[0] == 401
        assert get(local, "/api/usage/summary", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(local, "/api/usage/summary", {"Authorization": f"Bearer {token}"})[0] == 200
        page = get(local, "/")
        assert page[0] == 200 and "Sign in" in page[1], "the page redirects to the login form"
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(local.url + "/login", data=f"token={token}".encode(), timeout=10) as resp:
            assert resp.status == 200 and "tokenbridge" in resp.read().decode()
        with opener.open(local.url + "/api/usage/summary", timeout=10) as resp:
            assert resp.status == 200
    finally:
        srv.stop()


def test_openapi_and_docs_list_every_endpoint(server):
    code, spec = get(server, "/openapi.json")
    assert code == 200 and spec["openapi"].startswith("3.1")
    want = {
        "/api/usage/summary", "/api/usage/by-model", "/api/usage/timeline", "/api/usage/by-provider",
        "/api/providers", "/api/sync", "/api/sync/log", "/healthz",
    }  # fmt: skip
    assert set(spec["paths"]) == want
    code, docs = get(server, "/docs")
    assert all(p in docs for p in want)


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CI") == "true":
        pytest.fail("chromium is missing: .ci/run installs Debian's chromium")
    return found


def test_page_in_headless_chromium_shows_the_report_totals(server, history, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (CI installs it)")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip
    url = server.url + "/?since=2026-03-27&until=2026-04-01"
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rep = report(history, "daily", "--since", "2026-03-27", "--until", "2026-04-01")
    card = re.search(r"id=\"card-allTime\".*?data-value=\"([^\"]+)\".*?data-value=\"(\d+)\"", dom.stdout, re.S)
    assert card is not None, dom.stdout[:2000]
    assert (card.group(1), int(card.group(2))) == (rep["totals"]["totalCost"], rep["totals"]["totalTokens"])
    models = report(history, "models", "--since", "2026-03-27", "--until", "2026-04-01")["models"]
    for m in models[:3]:
        assert f'data-model="{m["model"]}"' in dom.stdout
    artifacts = Path(os.environ.get("TOKENBRIDGE_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "web-view.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1280,1600", f"--screenshot={shot}", url],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.stat().st_size > 10_000


def test_run_with_http_port_serves_beside_the_daemon(history):
    port = free_port()
    env = {**history, "TOKENBRIDGE_EXPORT_INTERVAL": "3600", "TOKENBRIDGE_EVENTS_PORT": "0"}
    daemon = Daemon({**env, "TOKENBRIDGE_PRICES_REFRESH": "0"}, "--no-otlp", "--http-port", str(port))
    try:
        daemon.wait_ready()
        local = WebServer.__new__(WebServer)
        local.host, local.port = "127.0.0.1", port

        def healthy() -> bool:
            try:
                return get(local, "/healthz")[1]["status"] == "ok"
            except OSError:
                return False

        wait_for(healthy, what="the daemon's /healthz")
        assert daemon.stop() == 0, daemon.stderr()
    finally:
        daemon.close()


def test_a_provider_filter_keeps_rows_without_requests_or_tokens(ledger, pricer):
    # Billed cost lines carry no tokens and no request count (a day of its own here); usage buckets
    # carry no request count.
    from datetime import UTC, datetime, timedelta

    from bridge import _api
    from bridge.record import CostOrigin, Tokens, UsageRecord

    at = datetime(2026, 3, 2, 10, tzinfo=UTC)
    cost = UsageRecord(
        source="anthropic_cost_api", provider="anthropic", model="claude-m", timestamp=at - timedelta(days=1),
        dedup_key="cost",
        tokens=Tokens(), cost=Decimal("1.25"), cost_origin=CostOrigin.REPORTED, requests=0,
    )  # fmt: skip
    usage = UsageRecord(
        source="anthropic_usage_api", provider="anthropic", model="unknown-m", timestamp=at, dedup_key="usage",
        tokens=Tokens(input=10), requests=0,
    )  # fmt: skip
    ledger.commit([cost, usage], pricer)
    q = _api.parse_query({"timezone": ["UTC"], "provider": ["anthropic"], "since": ["2026-03-01"]})
    total = _api.summary(ledger, q)["allTime"]
    assert (total["totalCost"], total["unpricedRequests"], total["requests"]) == ("1.25", 1, 0)
