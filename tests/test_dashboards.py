"""Static checks of the Grafana provisioning and dashboards. Every query is also executed against a real
Prometheus with known data in tests/test_stack_e2e.py; here: structure, references, PromQL syntax (promtool)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tests._stack import NATIVE_SERIES, REPO, compose, dashboards, expand, iter_panels, promtool_bin

DS_UID = "tokenbridge-prometheus"
# Token and cost dashboards (provider/model/source variables, the no-double-counting rule). The activity dashboard
# reads the metrics made from Claude Code's events (docs/events.md) and has its own variables.
USAGE_DASHBOARDS = ["ai-usage-overview.json", "claude-code.json"]
ACTIVITY = "claude-code-activity.json"
SPEND = "spend-control.json"  # reads the recording rules (test_spend_dashboard_reads_the_rules_and_gauges)
TOKEN_OR_COST = re.compile(r"claude_code_(token_usage_tokens|cost_usage_USD)_total")
BILLING = "openai_usage_api|openai_cost_api|anthropic_usage_api|anthropic_cost_api|openrouter_credits_api"
BILLED_COST = "openai_cost_api|anthropic_cost_api|openrouter_credits_api"


def _provisioned_datasource() -> dict:
    data = yaml.safe_load((REPO / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (ds,) = data["datasources"]
    return ds


def test_generator_output_is_committed():
    proc = subprocess.run(
        [sys.executable, str(REPO / "grafana/generate_dashboards.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_datasource_has_fixed_uid_and_points_at_prometheus():
    ds = _provisioned_datasource()
    assert ds["uid"] == DS_UID and ds["type"] == "prometheus" and ds["access"] == "proxy"
    assert ds["url"] == "${TOKENBRIDGE_GRAFANA_PROMETHEUS_URL}"
    env = compose()["services"]["grafana"]["environment"]
    assert env["TOKENBRIDGE_GRAFANA_PROMETHEUS_URL"] == "http://prometheus:9090"


def test_dashboard_provider_path_is_the_compose_mount():
    prov = yaml.safe_load((REPO / "grafana/provisioning/dashboards/tokenbridge.yml").read_text())
    (p,) = prov["providers"]
    assert p["type"] == "file"
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{p['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    home = compose()["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(p["options"]["path"] + "/")
    assert (REPO / "grafana/dashboards" / home.rsplit("/", 1)[1]).is_file()


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_is_raw_provisionable_json(name):
    d = dashboards()[name]
    text = (REPO / "grafana/dashboards" / name).read_text()
    assert "__inputs" not in d and "${DS_" not in text and "__requires" not in d
    assert d["id"] is None and d["uid"].startswith("tokenbridge-") and d["schemaVersion"] == 42
    ids = [p["id"] for p in iter_panels(d["panels"])]
    assert len(ids) == len(set(ids))
    for p in iter_panels(d["panels"]):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] in ("text", "row"):
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": DS_UID}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": DS_UID}
            assert "job=" not in t["expr"], f"{p['title']}: dashboards must not depend on job names"
        assert p["fieldConfig"]["defaults"].get("unit") or p["type"] == "table", p["title"]


def test_dashboard_uids_are_unique():
    uids = [d["uid"] for d in dashboards().values()]
    assert len(uids) == len(set(uids)) == 4
    assert sorted(dashboards()) == sorted([*USAGE_DASHBOARDS, ACTIVITY, SPEND])


@pytest.mark.parametrize("name", USAGE_DASHBOARDS)
def test_variables_provider_model_source(name):
    vars_ = {v["name"]: v for v in dashboards()[name]["templating"]["list"]}
    assert set(vars_) == {"provider", "model", "source"}
    for n, v in vars_.items():
        assert v["type"] == "query" and v["includeAll"] and v["multi"] and v["allValue"] == ".*"
        assert v["datasource"]["uid"] == DS_UID
        assert v["definition"] == f"label_values(claude_code_token_usage_tokens_total, {n})"
        assert v["current"]["value"] == ["$__all"]


BRIDGE = "claude_transcripts|claude_code_events|claude_stats_cache|codex|gemini_cli"  # the bridge's agent sources


@pytest.mark.parametrize("name", USAGE_DASHBOARDS)
def test_token_and_cost_panels_use_the_no_double_counting_rule(name):
    d = dashboards()[name]
    texts = [p["options"]["content"] for p in iter_panels(d["panels"]) if p["type"] == "text"]
    assert any("counted once" in t and "claude_code_otel" in t and "claude_transcripts" in t for t in texts)
    checked = 0
    for p in iter_panels(d["panels"]):
        for t in p.get("targets", []):
            if not TOKEN_OR_COST.search(t["expr"]):
                continue
            if "per source" in p["title"].lower():
                assert "not add" in p["description"].lower(), p["title"]
                continue
            if p["title"] == "Billed cost by provider and model":  # the cost APIs alone: one view, no overlap
                assert f'source=~"{BILLED_COST}"' in t["expr"]
                continue
            # Per provider its billing APIs first; else the bridge's local sources, native telemetry per model as a
            # fallback, other sources added.
            assert t["expr"].count(f'source=~"{BILLING}"') >= 1 and "or on (provider) (" in t["expr"], p["title"]
            assert 'source=~"claude_transcripts|claude_code_events|claude_stats_cache|codex|gemini_cli"' in t["expr"], (
                p["title"]
            )
            assert "or on (model)" in t["expr"] and 'source="claude_code_otel"' in t["expr"], p["title"]
            others = f'source!~"{BRIDGE}|claude_code_otel|{BILLING}"'
            assert others in t["expr"], p["title"]
            for var in ("$provider", "$model", "$source"):
                assert var in t["expr"], (p["title"], var)
            checked += 1
    assert checked >= 10


def test_claude_code_dashboard_covers_all_eight_native_metrics():
    exprs = " ".join(
        t["expr"] for p in iter_panels(dashboards()["claude-code.json"]["panels"]) for t in p.get("targets", [])
    )
    for m in NATIVE_SERIES:
        assert m in exprs, m


def test_overview_dashboard_panels_exist():
    titles = {p["title"] for p in iter_panels(dashboards()["ai-usage-overview.json"]["panels"])}
    assert {
        "Total cost",
        "Total tokens",
        "Cost by provider",
        "Cost by model",
        "Top models",
        "Estimated cache savings (Anthropic)",
        "Tokens and cost per source",
        "Balances",
        "Key limits left",
        "Billed cost by provider and model",
        "Provider API health",
    } <= titles


def test_activity_dashboard_variables_and_panels():
    d = dashboards()[ACTIVITY]
    vars_ = {v["name"]: v for v in d["templating"]["list"]}
    assert list(vars_) == ["model", "speed", "query_source", "effort", "agent_name", "skill_name"]
    for n, v in vars_.items():
        assert v["includeAll"] and v["multi"] and v["allValue"] == ".*"
        assert v["definition"] == f"label_values(claude_code_api_request_count_total, {n})"
    titles = {p["title"] for p in iter_panels(d["panels"])}
    assert {
        "Request latency percentiles by model",
        "Error rate",
        "Errors by status code",
        "Tool calls by tool",
        "Tool failures by tool",
        "Prompts per session",
        "Cost per request",
        "Fast-mode share",
    } <= titles
    # Cost per request pairs native cost with native request events: never a bridge source.
    for p in iter_panels(d["panels"]):
        for t in p.get("targets", []):
            if TOKEN_OR_COST.search(t["expr"]):
                assert 'source="claude_code_otel"' in t["expr"], p["title"]


def test_every_query_is_valid_promql(tmp_path):
    """All expressions, macros and variables expanded, go through promtool's parser as recording rules."""
    rules = []
    for d in dashboards().values():
        for p in iter_panels(d["panels"]):
            for t in p.get("targets", []):
                variables = {v["name"]: ".*" for v in d["templating"]["list"]}
                expr = expand(t["expr"], variables, 3600, 60, 60)
                rules.append({"record": f"tokenbridge:check:{len(rules)}", "expr": expr})
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    # The same feature flags as the shipped Prometheus (`anchored` ranges need promql-extended-range-selectors).
    features = [a for a in compose()["services"]["prometheus"]["command"] if a.startswith("--enable-feature=")]
    proc = subprocess.run([promtool_bin(), "check", "rules", *features, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(rules)} rules found" in proc.stdout


def test_totals_are_exact_and_counts_whole():
    """increase() without extrapolation (`anchored`), so a dashboard total equals the ledger's; counts without
    decimals (no "1.26 sessions")."""
    checked = 0
    for d in dashboards().values():
        for p in iter_panels(d["panels"]):
            for t in p.get("targets", []):
                for m in re.finditer(r"increase\([^()]*\[([^\]]+)\]( anchored)?\)", t["expr"]):
                    assert m.group(2), (p["title"], m.group(0))
                    checked += 1
            ratio = any(" / " in t["expr"] for t in p.get("targets", []))  # e.g. prompts per session
            if p["type"] in ("stat", "bargauge") and p["fieldConfig"]["defaults"]["unit"] == "short" and not ratio:
                assert p["fieldConfig"]["defaults"]["decimals"] == 0, p["title"]
    assert checked >= 30


def test_spend_dashboard_reads_the_rules_and_gauges():
    """No raw counters (the single-counting rule lives in the rules); every recorded series it shows exists."""
    rules = yaml.safe_load((REPO / "prometheus/rules/spend.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    exprs = [t["expr"] for p in iter_panels(dashboards()["spend-control.json"]["panels"]) for t in p.get("targets", [])]
    assert exprs and not any(TOKEN_OR_COST.search(e) for e in exprs)
    used = {m for e in exprs for m in re.findall(r"[a-z_]+:[a-z_0-9]+:[a-z_0-9]+", e)}
    assert used and used <= recorded, used - recorded
    joined = " ".join(exprs)
    for gauge in ("tokenbridge_balance", "tokenbridge_quota_used_percent", 'ALERTS{alertstate="firing"}'):
        assert gauge in joined


def test_the_dashboards_prefer_the_same_bridge_sources_over_native_telemetry_as_the_central_report():
    import importlib.util

    from bridge import central, views

    spec = importlib.util.spec_from_file_location("_gen", REPO / "grafana/generate_dashboards.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.PREFERRED == central.PREFERRED == "|".join(views.NATIVE_PREFERRED)
