"""Gemini CLI's and Codex's native telemetry through the real collector into the real Prometheus, and the
dashboards' token rule over them: their token metrics get `provider` and `source` like Claude Code's, and count
per model as the fallback beside the bridge's own `gemini_cli` and `codex` sources (never twice); Claude Code's
own metric likewise beside the bridge's `claude_code_events` rows.

Shapes (native-telemetry.md §3): Gemini CLI — resource service.name=gemini-cli, meter `gemini-cli`, counter
`gemini_cli.token.usage` {model, type = input/output/thought/cache/tool} (input includes the cached part),
cumulative. Codex — resource service.name=codex_cli_rs, histogram `codex.turn.token_usage` {model, token_type =
total/input/cached_input/output/reasoning_output} (input includes cached input, output includes reasoning), delta.
"""

from __future__ import annotations

import importlib.util
import time

import pytest

from tests._stack import REPO, running, start_collector, start_prometheus, wait_for_scrapes

PRO, FLASH = "gemini-2.5-pro", "gemini-2.5-flash"
GPT5, CODEX = "gpt-5", "gpt-5-codex"
SONNET, HAIKU = "claude-sonnet-4-6", "claude-haiku-4-5"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_dashboards", REPO / "grafana" / "generate_dashboards.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _provider(endpoint: str, service: str, temporality: str):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    t = AggregationTemporality.DELTA if temporality == "delta" else AggregationTemporality.CUMULATIVE
    exporter = OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", preferred_temporality={Counter: t, Histogram: t})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    return MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader])


def _send_gemini(endpoint: str) -> None:
    mp = _provider(endpoint, "gemini-cli", "cumulative")
    usage = mp.get_meter("gemini-cli").create_counter("gemini_cli.token.usage", description="Counts the tokens used")
    std = {"session.id": "g-1", "installation.id": "inst-1", "interactive": True}
    for model in (PRO, FLASH):  # PRO is also in the bridge's gemini_cli source; FLASH only here
        for typ, n in (("input", 1000), ("cache", 400), ("output", 200), ("thought", 50), ("tool", 30)):
            usage.add(n, {**std, "model": model, "type": typ})
    usage.add(500, {**std, "model": FLASH, "type": "input"})  # a second request without cache
    usage.add(10, {**std, "model": FLASH, "type": "output"})
    mp.force_flush()
    mp.shutdown()


def _send_codex(endpoint: str) -> None:
    mp = _provider(endpoint, "codex_cli_rs", "delta")
    hist = mp.get_meter("codex").create_histogram("codex.turn.token_usage", description="Token usage per turn")
    turns = [
        (GPT5, {"input": 9000, "cached_input": 8000, "output": 70, "reasoning_output": 20, "total": 9070}),
        (CODEX, {"input": 5000, "cached_input": 3000, "output": 300, "reasoning_output": 100, "total": 5300}),
        (CODEX, {"input": 2000, "cached_input": 1000, "output": 50, "reasoning_output": 0, "total": 2050}),
    ]
    for i, (model, usage) in enumerate(turns):
        for token_type, n in usage.items():
            hist.record(n, {"model": model, "token_type": token_type})
        if i == 1:
            mp.force_flush()  # two delta exports: the collector accumulates them
    mp.force_flush()
    mp.shutdown()


def _send_claude_code(endpoint: str) -> None:
    """Claude Code's own token metric for two models; the bridge has SONNET (from its events), not HAIKU."""
    mp = _provider(endpoint, "claude-code", "delta")
    tokens = mp.get_meter("com.anthropic.claude_code").create_counter("claude_code.token.usage", unit="tokens")
    for model in (SONNET, HAIKU):
        for typ, n in (("input", 7), ("output", 70), ("cacheRead", 700), ("cacheCreation", 7000)):
            tokens.add(n, {"session.id": "c-1", "model": model, "type": typ})
    mp.force_flush()
    mp.shutdown()


def _send_bridge(endpoint: str) -> None:
    """The bridge's own gemini_cli, codex and claude_code_events series (cumulative, as `tokenbridge run` exports
    them)."""
    mp = _provider(endpoint, "tokenbridge", "cumulative")
    tokens = mp.get_meter("tokenbridge").create_counter("claude_code.token.usage", unit="tokens")
    sources = (("gemini_cli", "google", PRO), ("codex", "openai", GPT5), ("claude_code_events", "anthropic", SONNET))
    for source, provider, model in sources:
        for typ, n in (("input", 10), ("output", 20), ("cacheRead", 30), ("cacheCreation", 0)):
            tokens.add(n, {"model": model, "provider": provider, "source": source, "type": typ})
    mp.force_flush()
    mp.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    w = tmp_path_factory.mktemp("agents")
    col = start_collector(w, {"TOKENBRIDGE_LOGS_EXPORTERS": "[debug, signal_to_metrics]"})
    prom = start_prometheus(
        w, {"otel-collector:8889": f"127.0.0.1:{col.prom}", "otel-collector:8888": f"127.0.0.1:{col.telemetry}"}
    )
    with running(prom.proc, col.proc):
        endpoint = f"http://127.0.0.1:{col.http}"
        _send_gemini(endpoint)
        _send_codex(endpoint)
        _send_claude_code(endpoint)
        _send_bridge(endpoint)
        prom.extra["t"] = wait_for_scrapes(prom, 2, after=time.time() + 1)
        yield prom


def test_native_token_series_get_provider_and_source(stack):
    t = stack.extra["t"]
    gem = stack.by("sum by (source) (gemini_cli_token_usage_total)", "source", t)
    assert gem == {"gemini_cli_otel": 2 * (1000 + 400 + 200 + 50 + 30) + 510}
    assert stack.by("sum by (provider) (gemini_cli_token_usage_total)", "provider", t) == {
        "google": gem["gemini_cli_otel"]
    }
    codex = stack.by('sum by (provider, source) (codex_turn_token_usage_sum{token_type="input"})', "source", t)
    assert codex == {"codex_otel": 9000 + 5000 + 2000}  # both delta exports, accumulated
    assert stack.scalar('sum(codex_turn_token_usage_count{token_type="total",provider="openai"})', t) == 3


def test_dashboard_tokens_count_native_agents_per_model_once(stack):
    gen = _generator()
    expr = gen.dedup(gen.TOKENS, ["model", "type"], "1h", filters="")
    got = {
        (r["metric"]["model"], r["metric"]["type"]): float(r["value"][1])
        for r in stack.query(expr, stack.extra["t"])
        if float(r["value"][1]) != 0
    }
    assert got == {
        # The bridge's own series win for the models it has: native PRO and GPT5 are not added.
        (PRO, "input"): 10, (PRO, "output"): 20, (PRO, "cacheRead"): 30,
        (GPT5, "input"): 10, (GPT5, "output"): 20, (GPT5, "cacheRead"): 30,
        # The bridge's events rows are its own view of Claude Code: native SONNET is not added, native HAIKU is.
        (SONNET, "input"): 10, (SONNET, "output"): 20, (SONNET, "cacheRead"): 30,
        (HAIKU, "input"): 7, (HAIKU, "output"): 70, (HAIKU, "cacheRead"): 700, (HAIKU, "cacheCreation"): 7000,
        # Native only: Gemini input = input + tool - cache, output = output + thoughts.
        (FLASH, "input"): 1500 + 30 - 400, (FLASH, "cacheRead"): 400, (FLASH, "output"): 210 + 50,
        # Codex input = input - cached input; its output already holds the reasoning tokens.
        (CODEX, "input"): 7000 - 4000, (CODEX, "cacheRead"): 4000, (CODEX, "output"): 350,
    }  # fmt: skip


def test_a_type_filtered_panel_maps_native_types_before_filtering(stack):
    gen = _generator()
    expr = gen.dedup(gen.TOKENS, ["model"], "1h", filters="", extra='type="cacheRead"')
    got = {r["metric"]["model"]: float(r["value"][1]) for r in stack.query(expr, stack.extra["t"])}
    assert got == {PRO: 30, GPT5: 30, SONNET: 30, HAIKU: 700, FLASH: 400, CODEX: 4000}
