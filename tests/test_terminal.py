"""Terminal output: cumulative prints never summed, per-request lines once each, ANSI codes,
interleaved sessions, user patterns; the wrapped command's bytes and exit code preserved."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.ledger import Ledger
from bridge.terminal import DEFAULT_PATTERNS, LineSplitter, Tracker, load_patterns, match_line, number
from tests.conftest import ledger_sums
from tests.test_cli import cli

# The spec's /cost block (local-formats.md §6), as Claude Code prints it.
COST_BLOCK = """\
  ⎿  Total cost:            $1.27
     Total duration (API):  3m 05s
     Total duration (wall): 14m 40s
     Total code changes:    212 lines added, 9 lines removed
     Usage by model:
         claude-haiku-4-5:  9.8k input, 402 output, 0 cache read, 0 cache write ($0.0118)
        claude-sonnet-4-5:  187 input, 7.9k output, 1.1m cache read, 58.0k cache write ($1.26)
"""
CODEX = "Token usage: total=7,400 input=6,500 (+ 20,000 cached) output=900 (reasoning 512)"
T0 = datetime(2026, 5, 17, 12, 0, tzinfo=UTC)


def tracker(session: str = "s1", patterns=None) -> Tracker:
    return Tracker(session, "/home/dev/app", list(patterns or DEFAULT_PATTERNS), clock=lambda: T0)


def run(t: Tracker, text: str) -> list:
    return [r for line in text.splitlines() for r in t.feed(line)] + t.finish()


def commit(ledger: Ledger, pricer, records) -> dict[str, int]:
    ledger.commit(records, pricer)
    return ledger_sums(ledger)


def test_numbers_with_suffixes_and_separators():
    assert [number(x) for x in ("7,400", "9.8k", "1.1m", "58.0k", "402")] == [7400, 9800, 1100000, 58000, 402]


def test_cost_block_per_model_lines_replace_the_total(ledger, pricer):
    recs = run(tracker(), COST_BLOCK)
    assert [(r.model, r.tokens.input, r.tokens.output, r.tokens.cache_read, r.tokens.cache_creation, r.cost)
            for r in recs] == [
        ("claude-haiku-4-5", 9800, 402, 0, 0, Decimal("0.0118")),
        ("claude-sonnet-4-5", 187, 7900, 1100000, 58000, Decimal("1.26")),
    ]  # fmt: skip
    assert all(r.provider == "anthropic" and r.project == "/home/dev/app" for r in recs)


def test_cost_block_printed_twice_counts_once_and_a_later_print_adds_the_difference(ledger, pricer):
    t = tracker()
    commit(ledger, pricer, run(t, COST_BLOCK))
    once = commit(ledger, pricer, run(t, COST_BLOCK))
    assert once == {"input": 9987, "output": 8302, "cacheRead": 1100000, "cacheCreation": 58000, "requests": 2}
    later = COST_BLOCK.replace("7.9k output", "8.5k output").replace("($1.26)", "($1.31)")
    got = commit(ledger, pricer, run(t, later))
    assert got["output"] == 8302 + 600 and got["requests"] == 2
    assert sum(x.cost for x in ledger.totals()) == Decimal("1.3218")


def test_lone_total_cost_line_is_a_cost_only_record():
    [r] = run(tracker(), "  ⎿  Total cost: $0.55\n     Total duration (API): 6m 19.7s\n> next prompt\n")
    assert (r.model, r.cost, r.tokens.total, r.requests) == ("unknown", Decimal("0.55"), 0, 0)


def test_codex_exit_line_reasoning_is_part_of_output_and_model_unknown(ledger):
    from bridge.pricing import Pricer

    [r] = run(tracker(), CODEX)
    assert (r.provider, r.model, r.tokens.input, r.tokens.cache_read, r.tokens.output) == (
        "openai", "unknown", 6500, 20000, 900,
    )  # fmt: skip
    commit(ledger, Pricer(None), [r])  # the real price table
    assert ledger.totals()[0].unpriced == 1  # no model: the cost is unknown, never $0


def test_ansi_colour_codes_are_ignored():
    coloured = f"\x1b[1m\x1b[32m{CODEX}\x1b[0m"
    assert match_line(coloured, DEFAULT_PATTERNS).tokens == match_line(CODEX, DEFAULT_PATTERNS).tokens


def test_reset_counter_starts_a_new_epoch_not_a_loss(ledger, pricer):
    t = tracker()
    commit(ledger, pricer, run(t, "Tokens: 500 input, 20 output"))
    got = commit(ledger, pricer, run(t, "Tokens: 100 input, 5 output"))  # the tool started over
    assert (got["input"], got["output"]) == (600, 25)


def test_interleaved_sessions_are_kept_apart(ledger, pricer):
    a, b = tracker("a"), tracker("b")
    recs = []
    for ta, tb in (("Tokens: 100 input, 10 output", "Tokens: 7 input, 1 output"),
                   ("Tokens: 150 input, 12 output", "Tokens: 9 input, 2 output")):  # fmt: skip
        recs += a.feed(ta) + b.feed(tb)
    got = commit(ledger, pricer, recs)
    assert (got["input"], got["output"]) == (159, 14)


def test_per_request_lines_add_each_reply_and_a_recapture_adds_nothing(ledger, pricer):
    text = (
        "Tokens: 12k sent, 2.1k cache write, 8.4k cache hit, 567 received. Cost: $0.05 message, $0.31 session.\n"
        "Tokens: 3.0k sent, 500 received. Cost: $0.01 message, $0.32 session.\n"
    )
    got = commit(ledger, pricer, run(tracker(), text))
    assert got == {"input": 1500 + 3000, "output": 1067, "cacheRead": 8400, "cacheCreation": 2100, "requests": 2}
    assert commit(ledger, pricer, run(tracker(), text)) == got  # the same scrollback captured again


def test_user_pattern_with_session_group_and_bad_patterns_named():
    pats = load_patterns([{"name": "x", "regex": r"\[(?P<session>\w+)\] spent (?P<input>\d+)", "model": "gpt-5"}])
    t = tracker("default", pats)
    [r1] = t.feed("[s9] spent 40")
    assert (r1.session_id, r1.model, r1.provider, r1.tokens.input) == ("s9", "gpt-5", "openai", 40)
    with pytest.raises(ConfigError, match=r"terminal.patterns\[0\].regex"):
        load_patterns([{"name": "x", "regex": "(?P<bogus>\\d+)"}])
    with pytest.raises(ConfigError, match=r"terminal.patterns\[0\].mode"):
        load_patterns([{"name": "x", "regex": "(?P<input>\\d+)", "mode": "sum"}])


def test_line_splitter_handles_split_utf8_and_carriage_returns():
    s = LineSplitter()
    data = "  ⎿  Total cost: $1\r\nnext\rredraw\n".encode()
    lines = s.feed(data[:4]) + s.feed(data[4:]) + s.finish()
    assert lines == ["  ⎿  Total cost: $1", "next", "redraw"]


def test_parse_prints_and_records_nothing(cli_env, tmp_path):
    out = cli(cli_env, "parse", CODEX)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["match"]["cacheRead"] == 20000
    data = json.loads(cli(cli_env, "report", "daily", "--json").stdout)
    assert data["totals"]["requests"] == 0
    assert cli(cli_env, "parse", "hello").returncode == 1


SCRIPT = (
    "import sys\n"
    "sys.stdout.write('\\x1b[32mhello\\x1b[0m\\n')\n"
    "sys.stdout.write('Tokens: 1200 input, 80 output\\n')\n"
    "sys.stdout.write('Tokens: 1200 input, 80 output\\n')\n"  # printed twice
    "sys.stdout.write('Tokens: 1500 input, 90 output\\n')\n"
    "sys.stdout.flush()\n"
    "sys.exit(7)\n"
)


def test_wrap_passes_output_byte_for_byte_keeps_exit_code_and_records_the_max(cli_env, tmp_path):
    out = cli(cli_env, "wrap", "--project", "shop", "--", sys.executable, "-c", SCRIPT)
    assert out.returncode == 7, out.stderr
    assert out.stdout == (
        "\x1b[32mhello\x1b[0m\nTokens: 1200 input, 80 output\nTokens: 1200 input, 80 output\n"
        "Tokens: 1500 input, 90 output\n"
    )
    data = json.loads(cli(cli_env, "report", "daily", "--json", "--source", "terminal").stdout)
    assert (data["totals"]["inputTokens"], data["totals"]["outputTokens"], data["totals"]["requests"]) == (1500, 90, 1)


def test_wrap_of_a_missing_command_fails_with_its_name(cli_env):
    out = cli(cli_env, "wrap", "--", "no-such-command-xyz")
    assert out.returncode == 127 and "no-such-command-xyz" in out.stdout + out.stderr


def test_capture_file_twice_adds_nothing(cli_env, tmp_path):
    log = tmp_path / "pane.txt"
    log.write_text("$ codex\n" + CODEX + "\n")
    for _ in range(2):
        assert cli(cli_env, "capture", "--file", str(log)).returncode == 0
    data = json.loads(cli(cli_env, "report", "daily", "--json", "--source", "terminal").stdout)
    assert data["totals"]["inputTokens"] == 6500 and data["totals"]["requests"] == 1


def test_shell_integration_wraps_the_named_commands(tmp_path):
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    fake = tmp_path / "bin" / "tokenbridge"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s|" "$@"\n')
    fake.chmod(0o755)
    script = (
        f'. "{repo}/shell/tokenbridge.sh"; claude --resume "a b"; echo; type aider >/dev/null && echo aider-wrapped'
    )
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["wrap|--|command|claude|--resume|a b|", "aider-wrapped"]
    out = subprocess.run(["bash", "-c", script], env={**env, "TOKENBRIDGE_WRAP": "codex"}, capture_output=True,
                         text=True).stdout  # fmt: skip
    assert "wrap|" not in out  # claude is not wrapped when not listed


def _interactive_wrap(cli_env, script: str):
    """Run ``tokenbridge wrap -- sh -c script`` on a terminal of its own (as a user would)."""
    import os
    import pty

    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(sys.executable, [sys.executable, "-m", "bridge.cli", "wrap", "--", "sh", "-c", script], cli_env)
    return pid, fd


def _read_until(fd: int, needle: bytes, timeout: float = 20.0) -> bytes:
    import os
    import select
    import time

    buf, end = b"", time.monotonic() + timeout
    while needle not in buf and time.monotonic() < end:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                buf += os.read(fd, 4096)
            except OSError:
                break
    return buf


def test_interactive_wrap_passes_ctrl_c_and_window_size(cli_env):
    import fcntl
    import os
    import signal
    import struct
    import termios
    import time

    pid, fd = _interactive_wrap(cli_env, "echo ready; read x; stty size; sleep 30")
    assert b"ready" in _read_until(fd, b"ready")
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))  # the user resizes
    time.sleep(0.2)
    os.kill(pid, signal.SIGWINCH)
    time.sleep(0.3)
    os.write(fd, b"go\r")
    assert b"33 101" in _read_until(fd, b"33 101")
    os.write(fd, b"\x03")  # Ctrl-C reaches the wrapped command through its terminal
    _read_until(fd, b"\0", timeout=3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 130


def test_two_codex_sessions_in_one_stream_both_count(ledger, pricer):
    second = "Token usage: total=1,000 input=800 output=200"
    got = commit(ledger, pricer, run(tracker(), f"$ codex\n{CODEX}\n$ codex\n{second}\n"))
    assert (got["input"], got["output"], got["requests"]) == (7300, 1100, 2)


def test_wrap_keeps_working_when_the_ledger_cannot_be_opened(cli_env, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    env = {**cli_env, "TOKENBRIDGE_STATE_DIR": str(blocker / "state")}
    out = cli(env, "wrap", "--", sys.executable, "-c", "print('Tokens: 5 input, 1 output'); raise SystemExit(4)")
    assert out.returncode == 4
    assert out.stdout == "Tokens: 5 input, 1 output\n"
    assert "was not recorded" in out.stderr


def test_bad_user_pattern_in_the_config_file_is_named(cli_env):
    Path(cli_env["TOKENBRIDGE_CONFIG"]).write_text('[terminal]\npatterns = [{ name = "x", regex = "(unclosed" }]\n')
    out = cli(cli_env, "parse", "Tokens: 5 input, 1 output")
    assert out.returncode == 2
    assert "no-config.toml: terminal.patterns[0].regex: not a valid regular expression" in out.stderr
    Path(cli_env["TOKENBRIDGE_CONFIG"]).write_text(
        '[terminal]\npatterns = [{ name = "mine", regex = \'spent (?P<input>[\\d,]+) tokens\', model = "gpt-5" }]\n'
    )
    out = cli(cli_env, "parse", "spent 1,200 tokens")
    assert json.loads(out.stdout)["match"]["input"] == 1200


def test_wrap_keeps_a_double_dash_that_belongs_to_the_command(cli_env):
    out = cli(cli_env, "wrap", "--", sys.executable, "-c", "import sys; print(sys.argv[1:])", "--", "x")
    assert out.returncode == 0 and out.stdout == "['--', 'x']\n"


def test_wrap_returns_when_the_command_exits_even_if_a_background_job_holds_the_terminal(cli_env):
    import time

    started = time.monotonic()
    out = cli(
        cli_env, "wrap", "--", "sh", "-c", "(trap '' HUP; exec sleep 30) & echo 'Tokens: 3 input, 1 output'; exit 5"
    )
    assert out.returncode == 5 and out.stdout == "Tokens: 3 input, 1 output\n"
    assert time.monotonic() - started < 20


def test_wrap_without_any_stdin(cli_env):
    import os
    import subprocess

    cmd = [sys.executable, "-m", "bridge.cli", "wrap", "--", "sh", "-c", "echo ok"]
    close_stdin = lambda: os.close(0)  # noqa: E731 - runs in the child before exec
    out = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, preexec_fn=close_stdin)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
