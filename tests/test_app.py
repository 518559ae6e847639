"""The application core: one pipeline for the CLI and the daemon; one failing source never
stops the others; a source counts as scanned only after a complete pass."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

from bridge import app
from bridge.errors import SourceError
from bridge.ledger import Ledger
from bridge.record import Tokens, UsageRecord
from bridge.sources._base import BaseSource, ScanStats, SourceStatus

BRIDGE = Path(app.__file__).parent


class Scripted(BaseSource):
    """A source whose passes are scripted: a ScanStats to return or an exception to raise."""

    def __init__(self, name: str, *outcomes: object) -> None:
        self.name = name
        self.outcomes = list(outcomes)

    def status(self) -> SourceStatus:
        return SourceStatus(self.name, True, True, [], 0)

    def scan(self, ledger, pricer, since=None, progress=None, paths=None):  # type: ignore[no-untyped-def]
        out = self.outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        rec = UsageRecord(
            self.name, "anthropic", "m", datetime(2026, 3, 2, tzinfo=UTC), f"{self.name}:1", Tokens(output=3)
        )
        ledger.commit([rec], pricer)
        assert isinstance(out, ScanStats)
        return out


def test_no_module_imports_the_cli():
    offenders = []
    for path in BRIDGE.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "bridge.cli" or n.startswith("bridge.cli.") for n in names):
                offenders.append(str(path.relative_to(BRIDGE)))
    assert offenders == []


def test_one_failing_source_is_recorded_in_health_and_the_others_still_run(ledger, pricer):
    bad = Scripted("bad", SourceError("bad", "root /nowhere is missing"))
    good = Scripted("good", ScanStats("good"))
    stats = app.ingest(ledger, [bad, good], pricer)
    assert [type(s.failure).__name__ if s.failure else None for s in stats] == ["SourceError", None]
    assert ledger.request_count() == 1
    health = ledger.health()
    assert (health["bad"].last_error_kind, health["bad"].consecutive_failures) == ("SourceError", 1)
    assert "root /nowhere is missing" in (health["bad"].last_error or "")
    assert health["good"].last_success_ms is not None and health["good"].last_error is None


def test_a_partial_or_failed_pass_is_never_the_first_complete_scan(ledger, pricer):
    src = Scripted(
        "s",
        ScanStats("s", errors=["projects/x: Permission denied"], complete=False),
        OSError("Input/output error"),
        ScanStats("s"),  # limited to the files an event named
        ScanStats("s"),
    )
    app.scan_one(ledger, src, pricer)
    assert ledger.state("s", "scanned") is None
    app.scan_one(ledger, src, pricer)
    assert ledger.state("s", "scanned") is None
    app.scan_one(ledger, src, pricer, paths={Path("/x.jsonl")})
    assert ledger.state("s", "scanned") is None
    app.scan_one(ledger, src, pricer)
    assert ledger.state("s", "scanned") == "1"


def test_sync_opens_the_ledger_and_reports_each_sources_stats(tmp_path, claude_home, cli_env):
    from bridge import config
    from tests.conftest import assistant_line

    claude_home.append(claude_home.session_file(), assistant_line("msg_1", "req_1"))
    settings = config.load(env=cli_env)
    result = app.sync(settings, ["claude_transcripts"], export=False)
    assert result.new_requests == 1 and result.exported_to is None
    with Ledger.open(settings.state_dir) as led:
        assert led.state("claude_transcripts", "scanned") == "1"
