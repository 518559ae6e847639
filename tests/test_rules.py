"""Prometheus recording and alerting rules: generated output committed, `promtool check rules`, the promtool unit
tests in prometheus/tests/ (synthetic series, a counter reset, a missing source), every rule covered by them, and
alert thresholds generated from the environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests._stack import REPO, promtool_bin

RULES = REPO / "prometheus" / "rules"
UNIT_TESTS = sorted((REPO / "prometheus" / "tests").glob("*_test.yml"))
GENERATOR = REPO / "prometheus" / "generate_rules.py"


def _rules(path: Path) -> list[dict]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def _committed_rule_files() -> list[Path]:
    return sorted(p for p in RULES.glob("*.yml") if p.name != "thresholds.yml")


def _promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    # The shipped Prometheus' feature flags: the rules use `anchored` ranges (exact increase()).
    flags = ["--enable-feature=promql-extended-range-selectors"] if args[0] in ("check", "test") else []
    cmd = [promtool_bin(), args[0], args[1], *flags, *args[2:]] if flags else [promtool_bin(), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=str(cwd), timeout=1800)


def _generate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBRIDGE_")}
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args], capture_output=True, text=True, env={**base, **(env or {})}
    )


def test_generated_rules_are_committed():
    proc = _generate("--check")
    assert proc.returncode == 0, proc.stderr


def test_prometheus_loads_every_rule_file():
    cfg = yaml.safe_load((REPO / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["prometheus/rules/*.yml"]
    assert {p.name for p in _committed_rule_files()} == {"spend.yml", "tokenbridge.yml"}


def test_rule_files_pass_promtool_check():
    proc = _promtool("check", "rules", *map(str, _committed_rule_files()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    total = sum(len(_rules(p)) for p in _committed_rule_files())
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", proc.stdout))
    assert found == total


def test_rule_unit_tests_pass():
    proc = _promtool("test", "rules", *map(str, UNIT_TESTS))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.stdout.count("SUCCESS") == len(UNIT_TESTS)


def _unit_test_cases() -> tuple[list[str], dict[str, list[bool]]]:
    exprs: list[str] = []
    alerts: dict[str, list[bool]] = {}
    for path in UNIT_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            exprs += [t["expr"] for t in group.get("promql_expr_test", [])]
            for t in group.get("alert_rule_test", []):
                alerts.setdefault(t["alertname"], []).append(bool(t.get("exp_alerts")))
    return exprs, alerts


def test_every_recording_rule_is_checked_by_a_unit_test():
    exprs, _ = _unit_test_cases()
    name_regexes = [re.compile(m) for e in exprs for m in re.findall(r'__name__=~"([^"]+)"', e)]
    for path in _committed_rule_files():
        for rule in _rules(path):
            if "record" not in rule:
                continue
            name = rule["record"]
            literal = any(re.search(re.escape(name) + r"(?![\w:])", e) for e in exprs)
            assert literal or any(r.fullmatch(name) for r in name_regexes), f"{path.name}: {name} has no unit test"


def test_every_alert_is_tested_firing_and_not_firing():
    _, alerts = _unit_test_cases()
    for path in _committed_rule_files():
        for rule in _rules(path):
            if "alert" not in rule:
                continue
            cases = alerts.get(rule["alert"], [])
            assert True in cases, f"{rule['alert']}: no unit test where it fires"
            assert False in cases or rule["alert"] == "TokenbridgeUnpricedRequests", (
                f"{rule['alert']}: never tested quiet"
            )


def test_every_alert_has_a_summary_and_a_description_with_numbers():
    for path in _committed_rule_files():
        for rule in _rules(path):
            if "alert" in rule:
                ann = rule["annotations"]
                assert ann["summary"] and ann["description"], rule["alert"]
                if rule["alert"] != "TokenbridgeCollectorDown":  # up == 0 has no number worth showing
                    assert "$value" in ann["description"], rule["alert"]
                assert rule["labels"]["severity"] in ("info", "warning", "critical")


def test_alerts_have_the_names_the_issue_asks_for():
    names = {r["alert"] for p in _committed_rule_files() for r in _rules(p) if "alert" in r}
    assert {
        "ProviderBalanceLow",
        "MonthlyBudgetProjectedOver",
        "DailyBudgetExceeded",
        "BurnRateSpike",
        "PlanQuotaHigh",
        "SourceSilent",
        "SourceFailing",
        "TokenbridgeCollectorDown",
    } <= names


# ------------------------------------------------------------------ thresholds from the environment

_CONFIGURED = {
    "TOKENBRIDGE_BUDGET_DAILY_USD": "12.5",
    "TOKENBRIDGE_BUDGET_MONTHLY_USD": "300",
    "TOKENBRIDGE_BALANCE_LOW_OPENROUTER": "10",
    "TOKENBRIDGE_SOURCE_SILENT_HOURS": "2",
    "TOKENBRIDGE_QUOTA_ALERT_PERCENT": "95",
}


def test_thresholds_from_the_environment_override_the_defaults(tmp_path):
    out = tmp_path / "thresholds.yml"
    env_file = tmp_path / ".env"
    # The .env file is read; the process environment wins over it.
    env_file.write_text("# budgets\nTOKENBRIDGE_BUDGET_DAILY_USD=1\nexport TOKENBRIDGE_BURN_SPIKE_FACTOR='4'\n")
    proc = _generate("--thresholds", "--env-file", str(env_file), "--out", str(out), env=_CONFIGURED)
    assert proc.returncode == 0, proc.stderr
    check = _promtool("check", "rules", str(out))
    assert check.returncode == 0, check.stdout + check.stderr
    test = {
        "rule_files": [str(RULES / "spend.yml"), str(out)],
        "evaluation_interval": "1m",
        "group_eval_order": ["tokenbridge-threshold-config", "tokenbridge-thresholds"],
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'tokenbridge_balance{provider="openrouter",currency="USD"}', "values": "12+0x5"},
                    {"series": 'tokenbridge_balance{provider="moonshot",currency="CNY"}', "values": "12+0x5"},
                ],
                "promql_expr_test": [
                    {
                        "expr": '{__name__=~"tokenbridge:threshold:.*"}',
                        "eval_time": "3m",
                        "exp_samples": [
                            {"labels": "tokenbridge:threshold:budget_daily_usd", "value": 12.5},
                            {"labels": "tokenbridge:threshold:budget_monthly_usd", "value": 300},
                            {"labels": "tokenbridge:threshold:quota_used_percent", "value": 95},
                            {"labels": "tokenbridge:threshold:burn_rate_spike_factor", "value": 4},
                            {"labels": "tokenbridge:threshold:burn_rate_spike_min_usd_per_hour", "value": 1},
                            {"labels": "tokenbridge:threshold:source_silent_seconds", "value": 7200},
                            {"labels": "tokenbridge:threshold:source_failures", "value": 3},
                            {"labels": 'tokenbridge:threshold:balance_low{provider="openrouter"}', "value": 10},
                            {"labels": 'tokenbridge:threshold:balance_low{provider="moonshot"}', "value": 5},
                        ],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "thresholds_test.yml"
    test_file.write_text(yaml.safe_dump(test))
    run = _promtool("test", "rules", str(test_file))
    assert run.returncode == 0, run.stdout + run.stderr


def test_no_configuration_records_no_thresholds(tmp_path):
    out = tmp_path / "thresholds.yml"
    proc = _generate("--thresholds", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    (group,) = yaml.safe_load(out.read_text())["groups"]
    assert group["rules"] == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TOKENBRIDGE_BUDGET_DAILY_USD", "ten"),
        ("TOKENBRIDGE_BUDGET_MONTHLY_USD", "-5"),
        ("TOKENBRIDGE_QUOTA_ALERT_PERCENT", "nan"),
        ("TOKENBRIDGE_BALANCE_LOW_OPEN-ROUTER", "5"),
    ],
)
def test_bad_threshold_is_one_error_naming_the_key(tmp_path, key, value):
    out = tmp_path / "thresholds.yml"
    proc = _generate("--thresholds", "--out", str(out), env={key: value})
    assert proc.returncode == 2
    assert key in proc.stderr and proc.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ("or on (model) sum by (provider, model, source)", "native telemetry added on top of transcripts"),
        ("and on () (floor((vector(time()) - 1) / 86400)", "yesterday's steps counted as today's"),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(tmp_path, broken, why):
    """The promtool tests are not vacuous: breaking the single-counting rule or the day filter fails them."""
    rules = tmp_path / "rules"
    rules.mkdir()
    text = (RULES / "spend.yml").read_text()
    assert broken in text
    if broken.startswith("or on (model)"):
        mutated = text.replace(broken, "or sum by (provider, model, source)")  # no fallback filter: double counting
    else:
        mutated = text.replace(broken, "and on () (floor((vector(time()) - 86401) / 86400)")
    (rules / "spend.yml").write_text(mutated)
    suite = yaml.safe_load((REPO / "prometheus/tests/spend_test.yml").read_text())
    suite["rule_files"] = [str(rules / "spend.yml")]
    suite["tests"] = suite["tests"][:1]  # the single-counting and calendar case
    (tmp_path / "mutant_test.yml").write_text(yaml.safe_dump(suite, sort_keys=False))
    proc = _promtool("test", "rules", str(tmp_path / "mutant_test.yml"))
    assert proc.returncode != 0, why
    assert "FAILED" in proc.stdout + proc.stderr
