"""OTLP and Prometheus export, end to end: ``tokenbridge sync``/``run`` as real processes, a real
loopback OTLP receiver (gRPC and HTTP/protobuf), and a real HTTP scrape. Nothing is mocked.

Fixture transcripts are shaped like local-formats.md §1.3 (Example A's streamed lines, a 1-hour
cache write, a tool result, a ``<synthetic>`` line). Expected costs are worked out by hand from
the list prices (USD per million tokens):

* claude-sonnet-4-5: input 3, output 15, cache read 0.30, 5-minute cache write 3.75;
* claude-haiku-4-5: input 1, output 5, cache read 0.10, 1-hour cache write 2.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests._otlp_sink import (
    CUMULATIVE,
    Daemon,
    Point,
    free_port,
    running_sink,
    tokenbridge,
    wait_for,
)
from tests.conftest import SESSION, ClaudeHome, assistant_line, synthetic_line, user_tool_result

SONNET = "claude-sonnet-4-5-20250929"
HAIKU = "claude-haiku-4-5-20251001"
UNKNOWN = "claude-mystery-9-20990101"  # no price anywhere
OTHER_SESSION = "0a1b2c3d-0000-4000-8000-000000000002"
PROTOCOLS = ["grpc", "http/protobuf"]
SECRET = "tb-s3cr3t-9f2c7e"  # must never be printed or logged
TOKEN = "claude_code.token.usage"
COST = "claude_code.cost.usage"
UNPRICED = "tokenbridge.unpriced.requests"
BASE = {"provider": "anthropic", "source": "claude_transcripts"}


def mtok(*parts: tuple[int, str]) -> float:
    """Exact USD of count x rate-per-million parts, as the float the exporter sends."""
    return float(sum((n * Decimal(rate) for n, rate in parts), Decimal(0)) / Decimal(1_000_000))


SONNET_A = {"input": 4, "output": 187, "cacheRead": 48000, "cacheCreation": 1200}
SONNET_A_COST = mtok((4, "3"), (187, "15"), (48000, "0.30"), (1200, "3.75"))  # 0.021717
HAIKU_B = {"input": 10, "output": 20, "cacheRead": 3000, "cacheCreation": 500}
HAIKU_B_COST = mtok((10, "1"), (20, "5"), (3000, "0.10"), (500, "2"))  # 0.00141
SONNET_C = {"input": 6, "output": 90, "cacheRead": 50000, "cacheCreation": 0}
SONNET_C_COST = mtok((6, "3"), (90, "15"), (50000, "0.30"))  # 0.016368


def write_history(home: ClaudeHome) -> None:
    """Request A (sonnet, streamed as three lines), request B (haiku, 1-hour cache write), noise."""
    f = home.session_file()
    home.append(
        f,
        assistant_line("msg_A", "req_A", output=3, stop_reason=None, ts="2026-03-02T10:15:01.120Z"),
        assistant_line("msg_A", "req_A", output=3, stop_reason=None, ts="2026-03-02T10:15:01.480Z"),
        assistant_line("msg_A", "req_A", output=187, ts="2026-03-02T10:15:04.010Z"),
        user_tool_result("x" * 5000),
        assistant_line(
            "msg_B",
            "req_B",
            model=HAIKU,
            ts="2026-03-02T10:20:00.000Z",
            input=10,
            output=20,
            cache_read=3000,
            cache_5m=0,
            cache_1h=500,
            stop_reason="end_turn",
        ),
        synthetic_line(),
    )


def append_request_c(home: ClaudeHome, session: str = SESSION) -> None:
    f = home.session_file(session)
    home.append(
        f,
        assistant_line(
            "msg_C", "req_C", ts="2026-03-02T11:00:00.000Z", input=6, output=90, cache_read=50000, cache_5m=0,
            session=session,
        ),
    )  # fmt: skip


def series(
    points: dict[tuple[str, tuple[tuple[str, str], ...]], Point], metric: str
) -> dict[frozenset[tuple[str, str]], Point]:
    return {frozenset(k[1]): p for k, p in points.items() if k[0] == metric}


def token_values(
    latest: dict[tuple[str, tuple[tuple[str, str], ...]], Point], model: str, **extra: str
) -> dict[str, float]:
    out = {}
    for attrs, p in series(latest, TOKEN).items():
        a = dict(attrs)
        if a["model"] == model and all(a.get(k) == v for k, v in extra.items()):
            out[a["type"]] = p.value
    return out


def cost_value(latest: dict[tuple[str, tuple[tuple[str, str], ...]], Point], model: str) -> float | None:
    hits = [p.value for attrs, p in series(latest, COST).items() if dict(attrs)["model"] == model]
    assert len(hits) <= 1
    return hits[0] if hits else None


def sync(env: dict[str, str], *pre: str) -> tuple[int, str, str]:
    r = tokenbridge(env, *pre, "sync", "--no-progress")
    return r.returncode, r.stdout, r.stderr


# ------------------------------------------------------------------------------------ OTLP


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sync_exports_claude_code_metrics_with_exact_totals_and_env_headers(protocol, claude_home, cli_env):
    write_history(claude_home)
    with running_sink(protocol) as sink:
        env = {
            **cli_env,
            **sink.env(),
            # A W3C-baggage-style list; the value is URL-encoded as the spec asks.
            "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{SECRET},x-scope-orgid=team-7",
        }
        code, out, err = sync(env, "--debug")
        assert code == 0, err
        reqs = sink.requests()
        assert len(reqs) == 1, "one sync is one export request"
        received = reqs[0]

    # Headers from OTEL_EXPORTER_OTLP_HEADERS arrive (names lower-cased, value decoded) ...
    assert received.headers["authorization"] == f"Bearer {SECRET}"
    assert received.headers["x-scope-orgid"] == "team-7"
    if protocol == "http/protobuf":
        assert received.content_type == "application/x-protobuf"
    # ... and the secret is never printed, even with --debug.
    assert SECRET not in out + err
    assert "exported totals to" in err

    pts = sink.points()
    assert {p.metric for p in pts} == {TOKEN, COST}
    for p in pts:
        assert p.resource["service.name"] == "tokenbridge"
        assert p.temporality == CUMULATIVE
        assert p.monotonic is True
        assert p.unit == {TOKEN: "tokens", COST: "USD"}[p.metric]
        assert 0 < p.start_ns <= p.time_ns
    latest = sink.latest()
    tokens = series(latest, TOKEN)
    assert {frozenset(a) for a in tokens} == {
        frozenset({**BASE, "model": m, "type": t}.items())
        for m in (SONNET, HAIKU)
        for t in ("input", "output", "cacheRead", "cacheCreation")
    }
    assert token_values(latest, SONNET) == SONNET_A  # streamed lines counted once, final output
    assert token_values(latest, HAIKU) == HAIKU_B
    assert {frozenset(a) for a in series(latest, COST)} == {
        frozenset({**BASE, "model": m}.items()) for m in (SONNET, HAIKU)
    }
    assert cost_value(latest, SONNET) == SONNET_A_COST
    assert cost_value(latest, HAIKU) == HAIKU_B_COST
    assert all("session.id" not in p.attrs for p in pts), "no session id unless enabled"


def test_signal_specific_otlp_variables_win_over_the_general_ones(claude_home, cli_env):
    write_history(claude_home)
    with running_sink("http/protobuf") as sink:
        env = {
            **cli_env,
            # The general variables point at nothing and name the other protocol ...
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-which=general",
            # ... the metrics-specific ones (endpoint used verbatim, with its path) win.
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{sink.endpoint}/v1/metrics",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-which=metrics",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
        }
        code, _out, err = sync(env)
        assert code == 0, err
        assert "warning" not in err
        assert sink.count() == 1
        assert sink.requests()[0].headers["x-which"] == "metrics"
        assert token_values(sink.latest(), SONNET) == SONNET_A


@pytest.mark.parametrize("debug", [False, True])
def test_malformed_headers_variable_is_a_config_error_that_never_echoes_the_secret(debug, claude_home, cli_env):
    """The OTel SDK would log a malformed entry verbatim (secret included) and drop it."""
    write_history(claude_home)
    with running_sink("grpc") as sink:
        env = {**cli_env, **sink.env(), "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization: Bearer {SECRET}"}
        code, out, err = sync(env, *(["--debug"] if debug else []))
        assert sink.count() == 0, "nothing is sent without the header the user asked for"
    assert code != 0
    assert "OTEL_EXPORTER_OTLP_HEADERS" in err
    assert SECRET not in out + err
    if not debug:
        assert "Traceback" not in err
        assert [line for line in err.splitlines() if "error" in line] == [
            line
            for line in err.splitlines()
            if line.startswith("tokenbridge: config error: OTEL_EXPORTER_OTLP_HEADERS")
        ]


def test_unsupported_otlp_protocol_is_a_config_error_naming_the_variable(claude_home, cli_env):
    write_history(claude_home)
    r = tokenbridge({**cli_env, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "sync", "--no-progress")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "tokenbridge: config error: OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol 'http/json'" in r.stderr


def test_restart_continues_each_series_from_the_ledger_with_the_same_start_time(claude_home, cli_env):
    write_history(claude_home)
    with running_sink("grpc") as sink:
        env = {**cli_env, **sink.env()}
        assert sync(env)[0] == 0
        first = sink.latest()
        append_request_c(claude_home)  # new usage while the bridge is not running
        # A streamed duplicate of A re-appended (as a resumed session would copy it) adds nothing.
        claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A", output=187))
        assert sync(env)[0] == 0
        assert sink.count() == 2
        second = {k: p for k, p in sink.latest().items() if p.time_ns > max(q.time_ns for q in first.values())}

    assert set(second) == set(first), "the same series, no new ones"
    # service.instance.id becomes Prometheus' `instance` label: a new one per process would
    # start a second copy of every series (and count the totals twice in increase()).
    instances = {p.resource["service.instance.id"] for p in [*first.values(), *second.values()]}
    assert len(instances) == 1
    for key, p in second.items():
        assert p.start_ns == first[key].start_ns, f"{key}: start time moved across processes"
        assert p.value >= first[key].value
    assert token_values(first, SONNET) == SONNET_A
    assert token_values(second, SONNET) == {t: SONNET_A[t] + SONNET_C[t] for t in SONNET_A}
    assert token_values(second, HAIKU) == HAIKU_B
    assert cost_value(second, SONNET) == mtok((4 + 6, "3"), (187 + 90, "15"), (98000, "0.30"), (1200, "3.75"))
    assert cost_value(second, SONNET) == pytest.approx(SONNET_A_COST + SONNET_C_COST, rel=1e-12)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_collector_down_is_one_warning_and_the_next_sync_carries_the_full_totals(protocol, claude_home, cli_env):
    write_history(claude_home)
    down = {
        **cli_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{SECRET}",
    }
    started = time.monotonic()
    code, out, err = sync(down)
    elapsed = time.monotonic() - started
    assert code == 0, err
    assert elapsed < 15, f"an unreachable collector took {elapsed:.1f}s"
    warnings = [line for line in err.splitlines() if line.startswith("tokenbridge: warning:")]
    assert len(warnings) == 1, err
    assert "did not accept the export" in warnings[0]
    assert "Traceback" not in err
    assert SECRET not in out + err
    assert "exported totals" not in err

    append_request_c(claude_home)  # more usage while the collector is still away
    with running_sink(protocol) as sink:
        code, _out, err = sync({**down, **sink.env()})
        assert code == 0, err
        latest = sink.latest()
    assert token_values(latest, SONNET) == {t: SONNET_A[t] + SONNET_C[t] for t in SONNET_A}
    assert token_values(latest, HAIKU) == HAIKU_B
    assert cost_value(latest, HAIKU) == HAIKU_B_COST


def test_session_id_attribute_only_when_enabled(claude_home, cli_env, tmp_path: Path):
    write_history(claude_home)
    append_request_c(claude_home, session=OTHER_SESSION)
    with running_sink("grpc") as sink:
        off = {**cli_env, **sink.env(), "TOKENBRIDGE_STATE_DIR": str(tmp_path / "state-off")}
        assert sync(off)[0] == 0
        default = sink.points()
        on = {**off, "TOKENBRIDGE_STATE_DIR": str(tmp_path / "state-on"), "TOKENBRIDGE_INCLUDE_SESSION_ID": "1"}
        assert sync(on)[0] == 0
        with_session = sink.points()[len(default) :]

    assert default and all("session.id" not in p.attrs for p in default)
    assert token_values({p.key(): p for p in default}, SONNET) == {t: SONNET_A[t] + SONNET_C[t] for t in SONNET_A}

    assert with_session and all("session.id" in p.attrs for p in with_session)
    latest = {p.key(): p for p in with_session}
    assert token_values(latest, SONNET, **{"session.id": SESSION}) == SONNET_A
    assert token_values(latest, SONNET, **{"session.id": OTHER_SESSION}) == SONNET_C
    costs = {(p.attrs["model"], p.attrs["session.id"]): p.value for p in with_session if p.metric == COST}
    assert costs == {
        (SONNET, SESSION): SONNET_A_COST,
        (HAIKU, SESSION): HAIKU_B_COST,
        (SONNET, OTHER_SESSION): SONNET_C_COST,
    }


def test_unknown_model_has_no_cost_series_and_counts_as_unpriced_with_its_tokens(claude_home, cli_env):
    write_history(claude_home)
    f = claude_home.session_file()
    claude_home.append(
        f,
        assistant_line("msg_U1", "req_U1", model=UNKNOWN, ts="2026-03-02T12:00:00.000Z", input=7, output=11,
                       cache_read=0, cache_5m=100),
        assistant_line("msg_U2", "req_U2", model=UNKNOWN, ts="2026-03-02T12:05:00.000Z", input=3, output=5,
                       cache_read=200, cache_5m=0),
    )  # fmt: skip
    with running_sink("http/protobuf") as sink:
        code, _out, err = sync({**cli_env, **sink.env()})
        assert code == 0, err
        latest = sink.latest()
    assert token_values(latest, UNKNOWN) == {"input": 10, "output": 16, "cacheRead": 200, "cacheCreation": 100}
    assert cost_value(latest, UNKNOWN) is None, "an unknown price is never exported as $0"
    unpriced = series(latest, UNPRICED)
    assert {a: p.value for a, p in unpriced.items()} == {frozenset({**BASE, "model": UNKNOWN}.items()): 2.0}
    assert next(iter(unpriced.values())).temporality == CUMULATIVE
    assert cost_value(latest, SONNET) == SONNET_A_COST  # the others keep their cost
    assert [line for line in err.splitlines() if UNKNOWN in line and "price" in line], "the model is named"


# ------------------------------------------------------------------------------ Prometheus


def scrape(port: int) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """GET /metrics over HTTP: {sample name: {labels: value}}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = {k: v for k, v in s.labels.items() if not k.startswith("otel_scope_")}
            out.setdefault(s.name, {})[frozenset(labels.items())] = s.value
    return out


def test_prometheus_port_serves_claude_code_names_with_exact_values_and_sigterm_exits_clean(claude_home, cli_env):
    write_history(claude_home)
    claude_home.append(
        claude_home.session_file(),
        assistant_line("msg_U1", "req_U1", model=UNKNOWN, ts="2026-03-02T12:00:00.000Z", input=7, output=11),
    )
    port = free_port()
    daemon = Daemon(cli_env, "--no-otlp", "--prometheus-port", str(port))
    try:
        daemon.wait_ready()
        samples = scrape(port)
        names = {n for n in samples if n.startswith(("claude_code", "tokenbridge"))}
        assert names == {
            "claude_code_token_usage_tokens_total",
            "claude_code_cost_usage_USD_total",
            "tokenbridge_unpriced_requests_total",
            "tokenbridge_source_last_success_seconds",  # per-source health gauges
            "tokenbridge_source_consecutive_failures",
        }, names
        tokens = samples["claude_code_token_usage_tokens_total"]
        for model, want in ((SONNET, SONNET_A), (HAIKU, HAIKU_B)):
            for typ, n in want.items():
                assert tokens[frozenset({**BASE, "model": model, "type": typ}.items())] == n
        assert tokens[frozenset({**BASE, "model": UNKNOWN, "type": "output"}.items())] == 11
        assert samples["claude_code_cost_usage_USD_total"] == {
            frozenset({**BASE, "model": SONNET}.items()): SONNET_A_COST,
            frozenset({**BASE, "model": HAIKU}.items()): HAIKU_B_COST,
        }
        assert samples["tokenbridge_unpriced_requests_total"] == {frozenset({**BASE, "model": UNKNOWN}.items()): 1.0}
        assert ("service_name", "tokenbridge") in next(iter(samples["target_info"]))

        # New usage shows up on the next scrape (file events, no restart).
        append_request_c(claude_home)
        want_output = SONNET_A["output"] + SONNET_C["output"]
        wait_for(
            lambda: (
                scrape(port)["claude_code_token_usage_tokens_total"][
                    frozenset({**BASE, "model": SONNET, "type": "output"}.items())
                ]
                == want_output
            ),
            what="scrape shows the appended request",
        )

        assert daemon.stop() == 0, daemon.stderr()
        assert "Traceback" not in daemon.stderr()
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            scrape(port)
    finally:
        daemon.close()


def test_prometheus_port_already_taken_is_one_clear_error(claude_home, cli_env):
    write_history(claude_home)
    with running_sink("http/protobuf") as busy:  # anything listening on the port
        r = tokenbridge(cli_env, "run", "--no-otlp", "--no-progress", "--prometheus-port", str(busy.port))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"--prometheus-port: cannot serve on 127.0.0.1:{busy.port}" in r.stderr


def test_instance_id_is_the_ledgers_unless_the_user_sets_one(claude_home, cli_env):
    write_history(claude_home)
    with running_sink("http/protobuf") as sink:
        env = {**cli_env, **sink.env()}
        assert sync(env)[0] == 0
        ledger_id = {p.resource["service.instance.id"] for p in sink.latest().values()}
        assert len(ledger_id) == 1 and len(next(iter(ledger_id))) == 36  # a UUID kept in the ledger
        assert sync({**env, "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=devbox,team=eng"})[0] == 0
        ids = {p.resource["service.instance.id"] for p in sink.latest().values()}
        assert ids == {"devbox"}


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        ("http://user:hunter2@collector:4317", "http://collector:4317"),
        ("https://hunter2@collector:4318/v1/metrics", "https://collector:4318/v1/metrics"),
        ("user:hunter2@collector:4317", "collector:4317"),
        ("hunter2@collector:4317", "collector:4317"),
        ("collector:4317?token=hunter2", "collector:4317"),
        ("collector:4317/v1/metrics?token=hunter2&x=1", "collector:4317/v1/metrics"),
        ("collector:4317#hunter2", "collector:4317"),
        ("http://collector:4318/v1/metrics?api_key=hunter2#hunter2", "http://collector:4318/v1/metrics"),
        ("http://user:p@hunter2@collector:4317", "http://collector:4317"),  # an unencoded @ in the password
        ("http://[::1]:4317?token=hunter2", "http://[::1]:4317"),
        ("user:hunter2@[::1]:4317", "[::1]:4317"),
        ("localhost:4317", "localhost:4317"),
        ("unix:///run/otel.sock", "unix:///run/otel.sock"),
    ],
)
def test_redacted_endpoint_never_shows_userinfo_query_or_fragment(endpoint, shown):
    from bridge.export import _redact

    assert _redact(endpoint) == shown


@pytest.mark.parametrize(
    "endpoint",
    [
        "user:hunt/er2@collector:4317",  # unencoded delimiters in a password: the authority is ambiguous
        "user:hunt?er2@collector:4317",
        "http://user:hunt#er2@collector:4317",
        "collector:4317?token=hunter2@x",
    ],
)
def test_ambiguous_endpoint_is_redacted_whole_rather_than_guessed(endpoint):
    from bridge.export import _redact

    out = _redact(endpoint)
    assert "hunt" not in out and "er2" not in out and "user" not in out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_team_mode_sends_user_and_machine_on_the_resource_and_keeps_the_series(protocol, claude_home, cli_env):
    write_history(claude_home)
    with running_sink(protocol) as sink:
        env = {**cli_env, **sink.env()}
        assert sync(env)[0] == 0
        personal = sink.latest()
        team_env = {**env, "TOKENBRIDGE_TEAM": "1", "TOKENBRIDGE_USER": "ann", "TOKENBRIDGE_MACHINE": "box-1"}
        code, _out, err = sync(team_env)
        assert code == 0, err
        team = sink.latest()
    assert {(p.resource.get("user"), p.resource.get("machine")) for p in personal.values()} == {(None, None)}
    assert {(p.resource["user"], p.resource["machine"]) for p in team.values()} == {("ann", "box-1")}
    # Same series, same values, same start times: team mode only adds resource attributes.
    assert {k: (p.value, p.start_ns) for k, p in team.items()} == {
        k: (p.value, p.start_ns) for k, p in personal.items()
    }
