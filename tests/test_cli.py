"""The CLI: snapshots of its tables, one-line errors, exit codes.

Snapshots live in tests/snapshots/; regenerate with UPDATE_SNAPSHOTS=1 after checking the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ClaudeHome, assistant_line, synthetic_line, user_tool_result

SNAPSHOTS = Path(__file__).parent / "snapshots"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], env=env, capture_output=True, text=True)


def check_snapshot(name: str, text: str, home: Path) -> None:
    # Other sources' default roots live under the test's HOME, beside the Claude home.
    text = text.replace(str(home), "<CLAUDE_HOME>").replace(str(home.parent), "<TMP>")
    text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not path.exists():
        if os.environ.get("CI") == "true" and not path.exists():
            pytest.fail(f"snapshot {name} is missing: run the tests once locally and commit it")
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


def fill(home: ClaudeHome) -> None:
    main = home.session_file()
    home.append(
        main,
        user_tool_result("x" * 2000, ts="2026-03-02T10:14:00.000Z"),
        assistant_line("msg_A", "req_A", output=3, stop_reason=None, ts="2026-03-02T10:15:01.120Z"),
        assistant_line("msg_A", "req_A", output=187, ts="2026-03-02T10:15:04.010Z"),
        synthetic_line(),
        assistant_line("msg_B", "req_B", model="claude-haiku-4-5-20251001", ts="2026-03-03T09:00:00.000Z",
                       input=1200, output=350, cache_read=0, cache_5m=0, cache_1h=2000),
        assistant_line("msg_C", "req_C", model="claude-experimental-x", ts="2026-03-03T09:30:00.000Z", output=42),
    )  # fmt: skip
    home.append(main, '{"type":"assistant","message":{"usage":{"inp')  # cut by a crash
    home.append(main, assistant_line("msg_D", "req_D", ts="2026-03-04T23:59:00.000Z", output=10))


def test_report_daily_table_snapshot(cli_env, claude_home):
    fill(claude_home)
    assert cli(cli_env, "sync", "--no-export").returncode == 0
    out = cli(cli_env, "report", "daily", "--timezone", "UTC", "--breakdown")
    assert out.returncode == 0, out.stderr
    check_snapshot("report_daily.txt", out.stdout, claude_home.root)
    assert "1 request(s) or usage row(s) use a model without a known price" in out.stderr


def test_report_json_totals_and_unknown_cost(cli_env, claude_home):
    fill(claude_home)
    cli(cli_env, "sync", "--no-export")
    data = json.loads(cli(cli_env, "report", "models", "--json").stdout)
    by_model = {m["model"]: m for m in data["models"]}
    assert by_model["claude-experimental-x"]["totalCost"] is None
    assert by_model["claude-sonnet-4-5-20250929"]["outputTokens"] == 197
    # Sonnet 4.5 at $3 in, $15 out, $3.75 5m cache write, $0.30 cache read per MTok:
    # msg_A 4*3 + 187*15 + 1200*3.75 + 48000*0.3 = 21717; msg_D 4*3 + 10*15 + 4500 + 14400 = 19062 (µ$).
    assert by_model["claude-sonnet-4-5-20250929"]["totalCost"] == "0.040779"
    assert data["totals"]["requests"] == 4 and data["totals"]["unpricedRequests"] == 1


def test_sources_snapshot(cli_env, claude_home):
    fill(claude_home)
    cli(cli_env, "sync", "--no-export")
    # Wide enough that no path folds: a fold's place depends on the length of pytest's temp directory.
    out = cli({**cli_env, "COLUMNS": "1000"}, "sources")
    assert out.returncode == 0, out.stderr
    check_snapshot("sources.txt", out.stdout, claude_home.root)
    data = json.loads(cli(cli_env, "sources", "--json").stdout)["sources"][0]
    assert data["skippedLines"] == 1
    assert data["unknownModels"] == ["claude-experimental-x"]
    assert data["lastEvent"] == "2026-03-04T23:59:00+00:00"


def test_unknown_model_warning_names_the_model_once(cli_env, claude_home):
    fill(claude_home)
    out = cli(cli_env, "sync", "--no-export")
    lines = [ln for ln in out.stderr.splitlines() if "claude-experimental-x" in ln]
    assert len(lines) == 1 and lines[0].startswith("tokenbridge: warning:")


def test_bad_config_key_fails_fast_with_the_key(cli_env, tmp_path):
    cfg = tmp_path / "no-config.toml"
    cfg.write_text("[export]\ninterval_secnds = 5\n")
    out = cli(cli_env, "sync", "--no-export")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "tokenbridge: config error: no-config.toml: export.interval_secnds: unknown key "
        "(known: interval_seconds, include_session_id, prometheus_port, otlp, include_project)"
    ]


def test_bad_env_value_names_the_variable(cli_env):
    out = cli({**cli_env, "TOKENBRIDGE_EXPORT_INTERVAL": "soon"}, "sync", "--no-export")
    assert out.returncode == 2 and "TOKENBRIDGE_EXPORT_INTERVAL" in out.stderr
    out = cli({**cli_env, "OTEL_EXPORTER_OTLP_PROTOCOL": "http"}, "sync")
    assert out.returncode == 2
    assert "OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol 'http'" in out.stderr


def test_missing_claude_config_dir_is_one_line_without_traceback(cli_env, tmp_path):
    env = {**cli_env, "CLAUDE_CONFIG_DIR": str(tmp_path / "missing")}
    out = cli(env, "sync", "--no-export")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("tokenbridge: error:")]
    # The other sources still ran; the failed one is one line naming it and the setting.
    assert len(errors) == 1
    assert errors[0].startswith("tokenbridge: error: claude_transcripts: CLAUDE_CONFIG_DIR has no directory")
    debug = cli(env, "--debug", "sync", "--no-export")
    assert "Traceback" in debug.stderr


def test_bad_timezone_is_a_config_error(cli_env):
    out = cli(cli_env, "report", "daily", "--timezone", "Mars/Base")
    assert out.returncode == 2 and "--timezone: unknown IANA time zone 'Mars/Base'" in out.stderr


def test_long_first_scan_shows_a_progress_bar_on_a_terminal(cli_env, claude_home):
    import pty

    fill(claude_home)
    main, secondary = pty.openpty()
    env = {**cli_env, "TOKENBRIDGE_PROGRESS_MIN_BYTES": "1", "COLUMNS": "100"}
    proc = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "sync", "--no-export"],
        env=env, stdout=subprocess.PIPE, stderr=secondary, timeout=60,
    )  # fmt: skip
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert proc.returncode == 0
    assert b"scanning history" in seen
    env2 = {**cli_env, "TOKENBRIDGE_PROGRESS_MIN_BYTES": "1", "TOKENBRIDGE_STATE_DIR": str(claude_home.root / "s2")}
    piped = cli(env2, "sync", "--no-export")
    assert "scanning history" not in piped.stderr, "no bar when stderr is not a terminal"


def test_bad_interval_is_a_config_error_not_a_traceback(cli_env):
    for value in ("-1", "0", "nan", "inf", "1e-9", "86401"):
        out = cli(cli_env, "run", "--interval", value)
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip() == (
            f"tokenbridge: config error: --interval: must be a finite number from 0.1 to 86400 seconds, got {value}"
        )


def test_prometheus_port_belongs_to_run_not_sync(cli_env):
    out = cli(cli_env, "sync", "--prometheus-port", "9464")
    assert out.returncode == 2 and "unrecognized arguments: --prometheus-port" in out.stderr


def test_unwritable_state_dir_is_one_line(cli_env, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    out = cli({**cli_env, "TOKENBRIDGE_STATE_DIR": str(blocker / "state")}, "sync", "--no-export")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "not-a-dir" in out.stderr


def test_report_breakdown_shows_fast_mode_as_its_own_priced_line(cli_env, claude_home):
    f = claude_home.session_file()
    opus = {"model": "claude-opus-4-6", "input": 1000, "output": 2000, "cache_read": 10_000, "cache_5m": 0}
    claude_home.append(
        f,
        assistant_line("msg_F", "req_F", speed="fast", **opus),  # $0.06 x 6 = $0.36
        assistant_line("msg_S", "req_S", **opus),  # $0.06
    )
    assert cli(cli_env, "sync", "--no-export").returncode == 0
    out = cli(cli_env, "report", "daily", "--timezone", "UTC", "--breakdown")
    assert out.returncode == 0, out.stderr
    rows = [ln for ln in out.stdout.splitlines() if "└ claude-opus-4-6" in ln]
    assert len(rows) == 2, out.stdout
    fast = next(r for r in rows if "claude-opus-4-6 (fast)" in r)
    standard = next(r for r in rows if "(fast)" not in r)
    assert "$0.36" in fast and "$0.06" in standard, out.stdout
    data = json.loads(cli(cli_env, "report", "models", "--json").stdout)
    costs = {m["model"]: m["totalCost"] for m in data["models"]}
    assert costs == {"claude-opus-4-6 (fast)": "0.36", "claude-opus-4-6": "0.06"}


def test_report_default_zone_is_the_tz_variables_zone_with_its_dst_rules(cli_env, claude_home):
    main = claude_home.session_file()
    for i, ts in enumerate(("2026-03-28T22:30:00.000Z", "2026-03-29T22:30:00.000Z", "2026-10-25T22:30:00.000Z")):
        claude_home.append(main, assistant_line(f"msg_{i}", f"req_{i}", ts=ts))
    env = {**cli_env, "TZ": "Europe/Berlin"}
    assert cli(env, "sync", "--no-export").returncode == 0
    out = cli(env, "report", "daily", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["timezone"] == "Europe/Berlin"
    # 23:30 CET, 00:30 CEST the next night, 23:30 CET again after the autumn change.
    assert [d["date"] for d in data["daily"]] == ["2026-03-28", "2026-03-30", "2026-10-25"]


def test_report_dates_at_the_calendars_ends_and_an_inverted_range(cli_env, claude_home):
    fill(claude_home)
    assert cli(cli_env, "sync", "--no-export").returncode == 0
    ends = ("--since", "0001-01-01", "--until", "9999-12-31", "-z", "Asia/Tokyo")
    out = cli(cli_env, "report", "daily", "--json", *ends)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["totals"]["requests"] == 4
    out = cli(cli_env, "report", "daily", "--since", "2026-03-04", "--until", "2026-03-02")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "tokenbridge: config error: --since/--until: --since 2026-03-04 is after --until 2026-03-02"
    )


def test_sync_days_must_be_positive_and_a_huge_value_means_everything(cli_env, claude_home):
    fill(claude_home)
    for bad in ("0", "-3"):
        out = cli(cli_env, "sync", "--no-export", "--days", bad)
        assert out.returncode == 2
        assert out.stderr.strip() == f"tokenbridge: config error: --days: must be at least 1, got {bad}"
    out = cli(cli_env, "sync", "--no-export", "--days", "99999999")
    assert out.returncode == 0, out.stderr
    assert json.loads(cli(cli_env, "report", "daily", "--json").stdout)["totals"]["requests"] == 4


HOSTILE_MODEL = "[/oops]\x1b[31m"
HOSTILE_SESSION = "[bold]s1\x1b]0;pwned\x07"
HOSTILE_PROJECT = "/home/dev/[red]app\u202e\x1b[2J"


def test_names_from_transcripts_are_shown_literally_never_as_markup_or_terminal_codes(cli_env, claude_home):
    line = json.loads(assistant_line("msg_X", "req_X", model=HOSTILE_MODEL, session=HOSTILE_SESSION))
    line["cwd"] = HOSTILE_PROJECT
    claude_home.append(claude_home.session_file(), json.dumps(line))
    synced = cli(cli_env, "sync", "--no-export")
    assert synced.returncode == 0, synced.stderr
    runs = [
        cli(cli_env, "report", "daily", "--breakdown", "-z", "UTC"),
        cli(cli_env, "report", "session", "-z", "UTC"),
        cli(cli_env, "report", "models", "-z", "UTC"),
        cli(cli_env, "sources"),
        cli(cli_env, "report", "weekly", "--by", "project", "--breakdown", "-z", "UTC"),
    ]
    for out in [synced, *runs]:
        assert out.returncode == 0, out.stderr
        for text in (out.stdout, out.stderr):
            assert not any(ch in text for ch in "\x1b\x07\u202e"), repr(text)
    daily, session, models, sources, by_project = (out.stdout for out in runs)
    assert "/home/dev/[red]app\\u202e\\x1b[2J" in by_project and "[/oops]\\x1b[31m" in by_project
    assert "[/oops]\\x1b[31m" in daily and "[/oops]\\x1b[31m" in models and "[/oops]\\x1b[31m" in sources
    assert "[bold]s1\\x1b]0;pwned\\x07" in session
    assert "[/oops]\\x1b[31m" in synced.stderr  # the unknown-model warning
    # JSON keeps the exact value (escaped by JSON itself).
    data = json.loads(cli(cli_env, "report", "session", "--json").stdout)
    assert data["sessions"][0]["sessionId"] == HOSTILE_SESSION


OTHER_SESSION = "0a1b2c3d-0000-4000-8000-000000000002"


def fill_two_projects(home: ClaudeHome) -> None:
    """``fill`` plus a second session in a second project on 2026-03-03."""
    fill(home)
    lines = []
    for i, (model, out) in enumerate((("claude-sonnet-4-5-20250929", 900), ("claude-haiku-4-5-20251001", 40))):
        line = json.loads(
            assistant_line(f"msg_P{i}", f"req_P{i}", model=model, output=out, session=OTHER_SESSION,
                           ts=f"2026-03-03T1{i}:00:00.000Z")
        )  # fmt: skip
        line["cwd"] = "/home/dev/api"
        lines.append(json.dumps(line))
    home.append(home.session_file(OTHER_SESSION, project="-home-dev-api"), *lines)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("report_daily_by_project.txt", ("daily", "--by", "project")),
        ("report_daily_by_session_breakdown.txt", ("daily", "--by", "session", "--breakdown")),
        ("report_models_by_provider.txt", ("models", "--by", "provider")),
    ],
)
def test_report_by_table_snapshots(cli_env, claude_home, name, args):
    fill_two_projects(claude_home)
    assert cli(cli_env, "sync", "--no-export").returncode == 0
    out = cli(cli_env, "report", *args, "--timezone", "UTC")
    assert out.returncode == 0, out.stderr
    check_snapshot(name, out.stdout, claude_home.root)


def test_report_by_json_groups_carry_provider_and_source(cli_env, claude_home):
    fill_two_projects(claude_home)
    assert cli(cli_env, "sync", "--no-export").returncode == 0
    out = cli(cli_env, "report", "daily", "--by", "project", "--json", "-z", "UTC")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["by"] == "project"
    day = next(d for d in data["daily"] if d["date"] == "2026-03-03")
    groups = [(g["project"], g["outputTokens"]) for g in day["groups"]]
    assert groups == [("/home/dev/api", 940), ("/home/dev/app", 392)]
    for row in [day, *day["groups"], *day["modelBreakdowns"], data["totals"]]:
        assert (row["provider"], row["source"]) == ("anthropic", "claude_transcripts")
    assert sum(g["requests"] for g in day["groups"]) == day["requests"] == 4


def test_report_by_that_adds_nothing_is_a_config_error(cli_env):
    out = cli(cli_env, "report", "models", "--by", "model")
    assert out.returncode == 2
    assert out.stderr.strip() == "tokenbridge: config error: --by: report models already has a row per model"
    out = cli(cli_env, "report", "daily", "--by", "colour")
    assert out.returncode == 2 and "invalid choice: 'colour'" in out.stderr


def test_no_data_anywhere_says_where_each_source_looked_and_exits_zero(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOKENBRIDGE_", "CLAUDE_", "XDG_"))}
    env.update(
        HOME=str(tmp_path / "empty-home"),
        TOKENBRIDGE_STATE_DIR=str(tmp_path / "state"),
        TOKENBRIDGE_CONFIG=str(tmp_path / "none.toml"),
    )
    out = cli(env, "sync", "--no-export")
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert "tokenbridge: no usage found yet." in lines
    transcripts = next(line for line in lines if line.strip().startswith("claude_transcripts:"))
    assert str(tmp_path / "empty-home" / ".claude") in transcripts and "set CLAUDE_CONFIG_DIR" in transcripts
    rep = cli(env, "report", "daily", "--json")
    assert rep.returncode == 0 and json.loads(rep.stdout)["totals"]["requests"] == 0
    assert "is empty: run `tokenbridge sync` first" in rep.stderr


def test_report_by_source_with_the_stats_cache_filling_an_earlier_day(cli_env, claude_home):
    from tests.test_claude_stats_cache import stats_doc, write

    fill(claude_home)
    write(claude_home, stats_doc({"2026-03-01": {"claude-sonnet-4-5-20250929": 1000}}, last="2026-03-01"))
    assert cli(cli_env, "sync", "--no-export").returncode == 0
    data = json.loads(cli(cli_env, "report", "monthly", "--by", "source", "--json", "-z", "UTC").stdout)
    (march,) = data["monthly"]
    assert march["source"] == ["claude_stats_cache", "claude_transcripts"] and march["provider"] == "anthropic"
    assert [(g["source"], g["totalTokens"]) for g in march["groups"]] == [
        ("claude_transcripts", 151401),
        ("claude_stats_cache", 1000),
    ]
    assert data["totals"]["source"] == ["claude_stats_cache", "claude_transcripts"]


@pytest.mark.parametrize(
    "doc",
    [
        {"daily": [], "totals": {}, "timezone": "UTC"},
        {"a": [1, {"b": None, "c": "x\ty\n\u001b[31m"}, [], {}], "d": "2.50", "e": 10**15, "f": True},
        {"session": "caf\u00e9 \u2603", "g": ["/p/\u00fc"]},
        {"k": 'quote " backslash \\ slash / del \x7f'},
    ],
)
def test_json_text_is_json_dumps_with_indent_2(doc):
    import json

    from bridge.cli import json_text

    assert json_text(doc) == json.dumps(doc, indent=2)


def test_cli_report_choices_are_the_reports():
    from bridge import cli, plans, report

    assert (cli.KINDS, cli.BY) == (report.KINDS, report.BY)
    assert tuple(plans.PLANS) == cli.PLANS


def test_the_cli_module_imports_no_command_module_until_a_command_runs():
    """`tokenbridge sync` starts without the report, blocks, plans, backfill and status modules."""
    lazy = ["bridge.report", "bridge.blocks", "bridge.plans", "bridge.backfill", "bridge.status", "bridge.statusline"]
    code = f"import sys, bridge.cli; print([m for m in {lazy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
