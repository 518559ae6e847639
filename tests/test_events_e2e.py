"""Claude Code's events (OTLP logs) through the real collector into the real Prometheus: the signal_to_metrics
connector turns api_request / api_error / tool_result events into exact counters and latency histograms.

Events are shaped like Claude Code's (native-telemetry.md §1.5), sent over HTTP and gRPC, with numeric fields as
numbers (v2.1.122+) and as strings (older versions), from two sessions and two Claude Code versions at once.
"""

from __future__ import annotations

import time

import pytest

from tests._events import api_request, event, logs_request, send_grpc, send_http
from tests._stack import (
    ClaudeCodeSim,
    dashboards,
    expand,
    iter_panels,
    running,
    start_collector,
    start_prometheus,
    wait_for_scrapes,
)

SONNET = "claude-sonnet-4-6"
OPUS = "claude-opus-4-6"


def _tool(session: str, tool: str, success: str, duration_ms: int, *, strings: bool = False) -> dict:
    return event(
        "tool_result",
        session,
        {"tool_name": tool, "tool_use_id": f"tu_{tool}{duration_ms}", "success": success, "duration_ms": duration_ms},
        numbers_as_strings=strings,
    )


def _error(session: str, model: str, status: int, *, strings: bool = False) -> dict:
    return event(
        "api_error",
        session,
        {"model": model, "error": "Overloaded", "status_code": status, "duration_ms": 1200, "attempt": 11},
        numbers_as_strings=strings,
    )


@pytest.fixture(scope="module")
def events_stack(tmp_path_factory: pytest.TempPathFactory):
    w = tmp_path_factory.mktemp("events")
    col = start_collector(w)
    prom = start_prometheus(
        w, {"otel-collector:8889": f"127.0.0.1:{col.prom}", "otel-collector:8888": f"127.0.0.1:{col.telemetry}"}
    )
    with running(prom.proc, col.proc):
        # Session A, current version, numbers as numbers, over HTTP, in two export batches.
        a1 = [
            event("user_prompt", "sess-A", {"prompt_length": 42, "prompt": "<REDACTED>"}),
            api_request("sess-A", "req_A1", SONNET, duration_ms=800, input_tokens=10, output_tokens=200),
            api_request("sess-A", "req_A2", SONNET, duration_ms=1500, input_tokens=12, output_tokens=90),
            _tool("sess-A", "Bash", "true", 40),
            _tool("sess-A", "Bash", "true", 300),
            _error("sess-A", SONNET, 529),
        ]
        a2 = [
            api_request("sess-A", "req_A3", SONNET, duration_ms=3000, output_tokens=5),
            api_request("sess-A", "req_A4", OPUS, duration_ms=12000, output_tokens=700, speed="fast"),
            _tool("sess-A", "Edit", "false", 7),
        ]
        assert send_http(f"http://127.0.0.1:{col.http}/v1/logs", logs_request(a1)) == 200
        time.sleep(0.5)  # a later connector batch: the counters must add up across batches
        assert send_http(f"http://127.0.0.1:{col.http}/v1/logs", logs_request(a2)) == 200
        # Session B, an older version sending numbers as strings, over gRPC.
        b = [
            api_request("sess-B", "req_B1", SONNET, duration_ms=450, numbers_as_strings=True),
            api_request("sess-B", "req_B2", SONNET, duration_ms=2200, numbers_as_strings=True, query_source="compact"),
            _error("sess-B", SONNET, 529, strings=True),
            _tool("sess-B", "Read", "true", 12, strings=True),
            # success as a boolean: normalised to the same "true" series.
            event(
                "tool_result",
                "sess-B",
                {"tool_name": "Read", "tool_use_id": "tu_R5", "success": True, "duration_ms": 5},
            ),
        ]
        b += [
            event("user_prompt", "sess-B", {"prompt_length": 7}),
            event("user_prompt", "sess-B", {"prompt_length": 9}),
        ]
        send_grpc(f"127.0.0.1:{col.grpc}", logs_request(b, version="2.1.100"))
        # The same two sessions' native metrics: sessions started and Claude Code's own cost ($1.20 in all).
        for session, model, cost in (("sess-A", SONNET, 0.30), ("sess-B", OPUS, 0.90)):
            sim = ClaudeCodeSim(f"http://127.0.0.1:{col.http}", "http/protobuf", session)
            sim.start_session("fresh")
            sim.request(model, cost, 10, 100, 0, 0)
            sim.export()
            sim.shutdown()
        prom.extra["t"] = wait_for_scrapes(prom, 2, after=time.time() + 1)
        yield prom


def test_api_requests_are_counted_exactly_by_model_and_speed(events_stack):
    prom = events_stack
    assert prom.by("sum by (model) (claude_code_api_request_count_total)", "model") == {SONNET: 5, OPUS: 1}
    assert prom.by('sum by (speed) (claude_code_api_request_count_total{speed!=""})', "speed") == {"fast": 1}
    assert prom.by("sum by (query_source) (claude_code_api_request_count_total)", "query_source") == {
        "repl_main_thread": 5,
        "compact": 1,
    }
    # Claude Code's series name: job = service.name, as for its native metrics.
    assert prom.by("sum by (job) (claude_code_api_request_count_total)", "job") == {"claude-code": 6}


def test_request_latency_histogram_has_exact_counts_and_buckets(events_stack):
    prom = events_stack
    name = "claude_code_api_request_duration_milliseconds"
    assert prom.by(f"sum by (model) ({name}_count)", "model") == {SONNET: 5, OPUS: 1}
    assert prom.scalar(f'sum({name}_sum{{model="{SONNET}"}})') == 800 + 1500 + 3000 + 450 + 2200
    # Prometheus 3 writes le as a float ("500.0"); compare numerically.
    buckets = {float(le): n for le, n in prom.by(f'sum by (le) ({name}_bucket{{model="{SONNET}"}})', "le").items()}
    assert [buckets[le] for le in (250, 500, 1000, 2000, 4000, float("inf"))] == [0, 1, 2, 3, 5, 5]


def test_api_errors_by_status_code_numbers_and_strings_in_one_series(events_stack):
    prom = events_stack
    res = prom.query("claude_code_api_error_count_total")
    assert len(res) == 1, res  # 529 (number) and "529" (string) are one stream
    assert res[0]["metric"]["status_code"] == "529"
    assert res[0]["metric"]["model"] == SONNET
    assert float(res[0]["value"][1]) == 2


def test_tool_results_by_tool_and_success(events_stack):
    prom = events_stack
    got = {
        (r["metric"]["tool_name"], r["metric"]["success"]): float(r["value"][1])
        for r in prom.query("sum by (tool_name, success) (claude_code_tool_result_count_total)")
    }
    assert got == {("Bash", "true"): 2, ("Edit", "false"): 1, ("Read", "true"): 2}
    assert prom.by("sum by (tool_name) (claude_code_tool_result_duration_milliseconds_count)", "tool_name") == {
        "Bash": 2,
        "Edit": 1,
        "Read": 2,
    }
    assert prom.scalar("sum(claude_code_tool_result_duration_milliseconds_sum)") == 40 + 300 + 7 + 12 + 5


def test_prompts_are_counted_and_other_events_make_no_metrics(events_stack):
    prom = events_stack
    assert prom.scalar("sum(claude_code_user_prompt_count_total)") == 3
    names = {r["metric"]["__name__"] for r in prom.query('{__name__=~"claude_code_(api|tool|user).*"}')}
    assert names == {
        "claude_code_user_prompt_count_total",
        "claude_code_api_request_count_total",
        "claude_code_api_request_duration_milliseconds_bucket",
        "claude_code_api_request_duration_milliseconds_sum",
        "claude_code_api_request_duration_milliseconds_count",
        "claude_code_api_error_count_total",
        "claude_code_tool_result_count_total",
        "claude_code_tool_result_duration_milliseconds_bucket",
        "claude_code_tool_result_duration_milliseconds_sum",
        "claude_code_tool_result_duration_milliseconds_count",
    }


# ------------------------------------------------------------------ the activity dashboard on these events

ACTIVITY = dashboards()["claude-code-activity.json"]
ALL = {v["name"]: ".*" for v in ACTIVITY["templating"]["list"]}


def _panel_result(prom, title: str, variables: dict[str, str] | None = None) -> list[dict]:
    panel = next(p for p in iter_panels(ACTIVITY["panels"]) if p.get("title") == title)
    expr = expand(panel["targets"][0]["expr"], variables or ALL, 3600, 60, 60)
    return prom.query(expr, prom.extra["t"])


def _panel_value(prom, title: str, **variables: str) -> float:
    (res,) = _panel_result(prom, title, {**ALL, **variables})
    return float(res["value"][1])


def _panel_by(prom, title: str, label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in _panel_result(prom, title)}


def test_every_activity_panel_query_runs_and_has_data(events_stack):
    prom, t = events_stack, events_stack.extra["t"]
    for panel in iter_panels(ACTIVITY["panels"]):
        for target in panel.get("targets", []):
            expr = expand(target["expr"], ALL, 3600, 60, 60)
            res = prom.query_range(expr, t - 600, t, 60) if panel["type"] == "timeseries" else prom.query(expr, t)
            assert res, f"{panel['title']}: no data"


def test_activity_stats_are_exact(events_stack):
    prom = events_stack
    assert _panel_value(prom, "API requests") == 6
    assert _panel_value(prom, "API errors") == 2
    assert _panel_value(prom, "Error rate") == 2 / 8
    assert _panel_value(prom, "Fast-mode share") == 1 / 6
    assert _panel_value(prom, "Cost per request") == pytest.approx(1.20 / 6, abs=1e-12)
    assert _panel_value(prom, "Prompts per session") == 3 / 2
    # A variable narrows the request panels: speed=fast is the one Opus request.
    assert _panel_value(prom, "API requests", speed="fast") == 1
    assert _panel_value(prom, "API requests", query_source="compact") == 1


def test_activity_breakdowns(events_stack):
    prom = events_stack
    assert _panel_by(prom, "Requests by model", "model") == {SONNET: 5, OPUS: 1}
    assert _panel_by(prom, "Errors by status code", "status_code") == {"529": 2}
    assert _panel_by(prom, "Tool calls by tool", "tool_name") == {"Bash": 2, "Edit": 1, "Read": 2}
    assert _panel_by(prom, "Tool failures by tool", "tool_name") == {"Edit": 1}
    # p90 by linear interpolation in the buckets: Sonnet's 5 requests (450..3000 ms) put rank 4.5 in (2000, 4000]
    # holding ranks 4-5: 2000 + 1.5/2 * 2000; Opus' one request in (8000, 15000]: 8000 + 0.9 * 7000.
    assert _panel_by(prom, "p90 request latency by model", "model") == {SONNET: 3500, OPUS: 14300}


def test_activity_variables_list_the_values_that_occur(events_stack):
    prom = events_stack
    got = {}
    for var in ACTIVITY["templating"]["list"]:
        metric, label = var["definition"][len("label_values(") : -1].split(", ")
        got[label] = set(prom.api(f"/api/v1/label/{label}/values", {"match[]": [metric]}))
    assert got == {
        "model": {SONNET, OPUS},
        "speed": {"fast"},
        "query_source": {"repl_main_thread", "compact"},
        "effort": set(),  # not sent by these events: the variable offers only "All"
        "agent_name": set(),
        "skill_name": set(),
    }
