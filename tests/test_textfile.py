"""``tokenbridge export --textfile``: the same series as the Prometheus view, written atomically."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from bridge.ledger import Ledger
from bridge.record import CostOrigin, Tokens, UsageRecord
from bridge.series import TOKEN_METRIC, Point
from bridge.textfile import render, write_atomically
from tests.test_cli import cli

TS = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_render_names_labels_and_escaping():
    p = Point(TOKEN_METRIC, (("model", 'we"ird\\'), ("session.id", "s1"), ("type", "input")), Decimal("1.50"), 0)
    text = render([p])
    assert text.splitlines() == [
        "# HELP claude_code_token_usage_tokens_total Number of tokens used",
        "# TYPE claude_code_token_usage_tokens_total counter",
        'claude_code_token_usage_tokens_total{model="we\\"ird\\\\",session_id="s1",type="input"} 1.5',
    ]
    assert render([]) == ""


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "tokenbridge.prom"
    target.write_text("old\n")
    write_atomically(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenbridge.prom"]


def test_cli_export_textfile_has_the_ledger_totals(cli_env, tmp_path, pricer):
    with Ledger.open(Path(cli_env["TOKENBRIDGE_STATE_DIR"])) as led:
        led.commit(
            [
                UsageRecord("manual", "anthropic", "claude-sonnet-4-5", TS, "k1", Tokens(100, 20),
                            Decimal("0.25"), CostOrigin.REPORTED),
                UsageRecord("manual", "acme", "unknown-mystery", TS, "k2", Tokens(7, 1)),
            ],
            pricer,
        )  # fmt: skip
    target = tmp_path / "out" / "tokenbridge.prom"
    target.parent.mkdir()
    out = cli(cli_env, "export", "--textfile", str(target))
    assert out.returncode == 0, out.stderr
    lines = target.read_text().splitlines()
    base = 'model="claude-sonnet-4-5",provider="anthropic",source="manual"'
    assert f'claude_code_token_usage_tokens_total{{{base},type="input"}} 100' in lines
    assert f"claude_code_cost_usage_USD_total{{{base}}} 0.25" in lines
    assert 'tokenbridge_unpriced_requests_total{model="unknown-mystery",provider="acme",source="manual"} 1' in lines
    cached = sorted((Path.home() / ".cache" / "tokenbridge" / "bin").glob("prometheus-*/promtool"))
    for promtool in cached[-1:]:  # when a Prometheus build is at hand, its parser agrees with the format
        check = subprocess.run([str(promtool), "check", "metrics"], input=target.read_text(), capture_output=True,
                               text=True)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


def test_unwritable_target_is_one_line(cli_env, tmp_path):
    out = cli(cli_env, "export", "--textfile", str(tmp_path / "missing-dir" / "x.prom"))
    assert out.returncode == 1 and "cannot write" in out.stderr and "Traceback" not in out.stderr
