"""``tokenbridge log``: manual entries with an idempotency key."""

from __future__ import annotations

import json

from tests.test_cli import cli

LOG = ("log", "--input", "1000", "--output", "200", "--model", "claude-sonnet-4-5", "--project", "shop",
       "--time", "2026-05-17T09:00:00+00:00")  # fmt: skip


def totals(env: dict[str, str]) -> dict[str, object]:
    out = cli(env, "report", "daily", "--json", "--source", "manual")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["totals"]


def test_running_the_same_log_command_twice_adds_once(cli_env):
    first = cli(cli_env, *LOG)
    assert first.returncode == 0 and "recorded 1200 token(s)" in first.stderr
    again = cli(cli_env, *LOG)
    assert again.returncode == 0 and "already recorded" in again.stderr
    t = totals(cli_env)
    assert (t["inputTokens"], t["outputTokens"], t["requests"]) == (1000, 200, 1)
    assert t["totalCost"] == "0.006"  # $3/MTok in, $15/MTok out: estimated from the price table


def test_same_key_with_new_values_is_a_correction_not_an_addition(cli_env):
    cli(cli_env, "log", "--input", "500", "--model", "gpt-5", "--key", "inv-7", "--cost", "0.10")
    cli(cli_env, "log", "--input", "800", "--model", "gpt-5", "--key", "inv-7", "--cost", "0.12")
    t = totals(cli_env)
    assert (t["inputTokens"], t["totalCost"], t["requests"]) == (800, "0.12", 1)


def test_unknown_model_without_cost_is_unknown_not_free(cli_env):
    cli(cli_env, "log", "--input", "10", "--model", "my-private-model")
    t = totals(cli_env)
    assert t["totalCost"] is None and t["unpricedRequests"] == 1


def test_bad_values_name_the_flag(cli_env):
    out = cli(cli_env, "log", "--input", "-5")
    assert out.returncode == 2 and "--input" in out.stderr
    out = cli(cli_env, "log", "--input", "5", "--cost", "lots")
    assert out.returncode == 2 and "--cost" in out.stderr
    out = cli(cli_env, "log", "--input", "5", "--time", "2026-05-17T09:00:00")
    assert out.returncode == 2 and "--time" in out.stderr
    assert cli(cli_env, "log").returncode == 2


def test_report_by_project_on_the_command_line(cli_env):
    day = "2026-05-17T09:00:00+00:00"
    cli(cli_env, "log", "--input", "10", "--model", "gpt-5", "--project", "shop", "--time", day)
    cli(cli_env, "log", "--input", "3", "--model", "gpt-5", "--project", "blog", "--time", day)
    out = cli(cli_env, "report", "daily", "--json", "--by", "project")
    [d] = json.loads(out.stdout)["daily"]
    assert [(g["project"], g["inputTokens"]) for g in d["groups"]] == [("shop", 10), ("blog", 3)]
    table = cli(cli_env, "report", "daily", "--by", "project", "--timezone", "UTC")
    assert "shop" in table.stdout and "blog" in table.stdout
