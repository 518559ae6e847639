"""OpenClaw session transcripts: model changes, reset/deleted archives, checkpoint and fork
copies, stored costs of 0 (local-formats.md §4.1), read incrementally and exactly once."""

from __future__ import annotations

import json
import os
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import SourceError
from bridge.ledger import Ledger
from bridge.pricing import Pricer
from bridge.sources import _tail
from bridge.sources._openclaw_gateway import without_credentials
from bridge.sources.openclaw import OpenClaw, default_roots, provider_for, tokens_of
from tests._otlp_sink import Daemon, daily_report, wait_for
from tests.conftest import ledger_sums as totals

SID = "b7300bff-0000-4c11-97ae-000000000001"
FORK = "b7300bff-0000-4c11-97ae-000000000002"


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def header(sid: str = SID, ts: str = "2026-04-08T01:03:43.107Z", parent: str | None = None) -> str:
    obj: dict[str, Any] = {"type": "session", "version": 3, "id": sid, "timestamp": ts,
                           "cwd": "/home/dev/.openclaw/workspace"}  # fmt: skip
    if parent:
        obj["parentSession"] = parent
    return _dump(obj)


def model_change(provider: str, model: str, entry: str = "7f59d586", ts: str = "2026-04-08T01:03:43.116Z") -> str:
    return _dump({"type": "model_change", "id": entry, "parentId": None, "timestamp": ts, "provider": provider,
                  "modelId": model})  # fmt: skip


def user(entry: str, ts: str, text: str = "Fix the build.") -> str:
    return _dump({"type": "message", "id": entry, "parentId": None, "timestamp": ts,
                  "message": {"role": "user", "content": [{"type": "text", "text": text}]}})  # fmt: skip


def assistant(
    entry: str,
    ts: str,
    *,
    inp: int = 12,
    out: int = 340,
    read: int = 41000,
    write: int = 1800,
    cost: float | None = 0.024186,
    model: str | None = "claude-sonnet-4-6",
    provider: str | None = "anthropic",
    parent: str = "a1b2c3d4",
) -> str:
    """local-formats.md §4.1 example (an assistant message with usage and its own cost)."""
    usage: dict[str, Any] = {"input": inp, "output": out, "cacheRead": read, "cacheWrite": write,
                             "totalTokens": inp + out + read + write}  # fmt: skip
    if cost is not None:
        usage["cost"] = {"input": 0.000036, "output": 0.0051, "cacheRead": 0.0123, "cacheWrite": 0.00675, "total": cost}
    message: dict[str, Any] = {"role": "assistant", "content": [{"type": "text", "text": "Done."}]}
    if provider is not None:
        message["provider"] = provider
    if model is not None:
        message["model"] = model
    message.update({"usage": usage, "stopReason": "stop", "timestamp": 1775610250500})
    return _dump({"type": "message", "id": entry, "parentId": parent, "timestamp": ts, "message": message})


LINES = [
    header(),
    model_change("anthropic", "claude-sonnet-4-6"),
    user("a1b2c3d4", "2026-04-08T01:04:00.000Z"),
    assistant("c3d4e5f6", "2026-04-08T01:04:10.500Z"),
    assistant("d4e5f6a7", "2026-04-08T01:05:10.500Z", inp=20, out=100, read=43000, write=0, cost=0.01449),
]
ONE = {"input": 12, "output": 340, "cacheRead": 41000, "cacheCreation": 1800, "requests": 1}
TWO = {"input": 32, "output": 440, "cacheRead": 84000, "cacheCreation": 1800, "requests": 2}


class ClawHome:
    def __init__(self, root: Path) -> None:
        self.root = root

    def sessions(self, agent: str = "main") -> Path:
        d = self.root / "agents" / agent / "sessions"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def transcript(self, name: str = f"{SID}.jsonl", agent: str = "main") -> Path:
        return self.sessions(agent) / name

    @staticmethod
    def append(path: Path, *lines: str, newline: bool = True) -> None:
        with path.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + ("\n" if newline else ""))


@pytest.fixture
def claw(tmp_path: Path) -> ClawHome:
    return ClawHome(tmp_path / ".openclaw")


def scan(home: ClawHome, ledger: Ledger, pricer: Any, *more: Path) -> int:
    return OpenClaw(roots=[home.root, *more]).scan(ledger, pricer).new_requests


def test_spec_example_counts_assistant_usage_with_its_stored_cost(claw, ledger, pricer):
    claw.append(claw.transcript(), *LINES)
    assert scan(claw, ledger, pricer) == 2
    assert totals(ledger) == TWO
    (series,) = ledger.totals()
    assert (series.source, series.provider, series.model, series.session_id) == (
        "openclaw", "anthropic", "claude-sonnet-4-6", SID,
    )  # fmt: skip
    assert series.cost == Decimal("0.038676")  # the stored costs, 0.024186 + 0.01449
    assert scan(claw, ledger, pricer) == 0 and totals(ledger) == TWO


def test_reset_archive_of_a_transcript_counts_once(claw, ledger, pricer):
    live = claw.transcript()
    claw.append(live, *LINES)
    scan(claw, ledger, pricer)
    # /reset renames the transcript; a new one starts under the same session key.
    shutil.move(live, live.with_name(f"{SID}.jsonl.reset.2026-04-08T02-00-00.000Z"))
    claw.append(claw.transcript(), header(ts="2026-04-08T02:00:01.000Z"),
                assistant("e5f6a7b8", "2026-04-08T02:01:00.000Z", cost=0.024186))  # fmt: skip
    scan(claw, ledger, pricer)
    assert totals(ledger) == {k: TWO[k] + ONE[k] for k in TWO}


def test_deleted_archive_and_checkpoint_and_fork_copies_count_each_entry_once(claw, ledger, pricer):
    claw.append(claw.transcript(), *LINES)
    d = claw.sessions()
    claw.append(d / f"{SID}.jsonl.deleted.2026-04-09T00-00-00.000Z", *LINES)
    claw.append(d / f"{SID}.checkpoint.1.jsonl", *LINES[:4])
    # A fork: a new session header, the parent's entries copied with their ids and times, then its own.
    own = assistant("f6a7b8c9", "2026-04-08T03:01:00.000Z", inp=5, out=50, read=0, write=0, cost=0.001)
    claw.append(d / f"{FORK}.jsonl", header(FORK, "2026-04-08T03:00:00.000Z", parent=SID), *LINES[1:], own)
    scan(claw, ledger, pricer)
    assert totals(ledger) == {"input": 37, "output": 490, "cacheRead": 84000, "cacheCreation": 1800, "requests": 3}


def test_same_entry_id_in_other_sessions_at_other_times_are_different_entries(claw, ledger, pricer):
    claw.append(claw.transcript(), header(), assistant("c3d4e5f6", "2026-04-08T01:04:10.500Z"))
    claw.append(claw.transcript(f"{FORK}.jsonl", agent="other"), header(FORK),
                assistant("c3d4e5f6", "2026-04-10T09:00:00.000Z"))  # fmt: skip
    scan(claw, ledger, pricer)
    assert totals(ledger)["requests"] == 2


def test_model_comes_from_the_last_model_change_and_survives_a_restart(claw, tmp_path, pricer):
    f = claw.transcript()
    claw.append(f, header(), model_change("moonshot", "kimi-k2"),
                assistant("00000001", "2026-04-08T01:04:00.000Z", model=None, provider=None))  # fmt: skip
    with Ledger.open(tmp_path / "s") as led:
        scan(claw, led, pricer)
    claw.append(
        f,
        model_change("google", "gemini-2.5-pro", entry="7f59d587", ts="2026-04-08T01:10:00.000Z"),
        assistant("00000002", "2026-04-08T01:11:00.000Z", model=None, provider=None, out=7),
    )
    with Ledger.open(tmp_path / "s") as led:
        scan(claw, led, pricer)
        claw.append(f, assistant("00000003", "2026-04-08T01:12:00.000Z", model=None, provider=None, out=9))
        scan(claw, led, pricer)  # a third pass, read on from the cursor with the stored model
        got = {(t.provider, t.model): t.tokens["output"] for t in led.totals()}
    assert got == {("moonshot", "kimi-k2"): 340, ("google", "gemini-2.5-pro"): 16}


def test_model_snapshot_custom_entry_sets_the_model(claw, ledger, pricer):
    snap = _dump({"type": "custom", "customType": "model-snapshot", "id": "9a9a9a9a", "timestamp":
                  "2026-04-08T01:03:44.000Z", "data": {"provider": "openai", "modelId": "gpt-5"}})  # fmt: skip
    claw.append(claw.transcript(), header(), snap,
                assistant("00000001", "2026-04-08T01:04:00.000Z", model=None, provider=None))  # fmt: skip
    scan(claw, ledger, pricer)
    assert [(t.provider, t.model) for t in ledger.totals()] == [("openai", "gpt-5")]


def test_stored_cost_of_zero_is_unknown_and_estimated_not_free(claw, ledger):
    claw.append(claw.transcript(), header(), model_change("anthropic", "claude-sonnet-4-6"),
                assistant("00000001", "2026-04-08T01:04:00.000Z", cost=0.0),
                assistant("00000002", "2026-04-08T01:05:00.000Z", cost=0.0, model="mystery-model",
                          provider="acme"))  # fmt: skip
    scan(claw, ledger, Pricer(None))
    by_model = {t.model: t for t in ledger.totals()}
    # Sonnet 4.6 at $3 in, $15 out, $0.30 cache read, $3.75 cache write per MTok:
    # 12*3 + 340*15 + 41000*0.3 + 1800*3.75 = 24186 µ$ (the cost the tool should have written).
    assert by_model["claude-sonnet-4-6"].cost == Decimal("0.024186")
    assert by_model["mystery-model"].unpriced == 1 and by_model["mystery-model"].cost == 0
    assert ledger.source_summary("openclaw")["unknown_models"] == ["mystery-model"]


def test_partial_and_malformed_entries_are_skipped_and_counted(claw, ledger, pricer):
    f = claw.transcript()
    claw.append(f, *LINES[:4])
    claw.append(f, '{"type":"message","id":"dead0001","message":{"role":"assistant","usage":{"inp')  # crash-cut
    claw.append(f, assistant("dead0002", "2026-04-08T01:04:30.000Z", out=-5))  # a negative output
    last = LINES[4]
    claw.append(f, last[:60], newline=False)
    scan(claw, ledger, pricer)
    assert totals(ledger) == ONE
    assert ledger.source_summary("openclaw")["skipped"] == 2
    claw.append(f, last[60:])
    scan(claw, ledger, pricer)
    assert totals(ledger) == TWO


def test_usage_field_aliases_and_negative_input_clamp():
    assert tokens_of({"prompt_tokens": 100, "completion_tokens": 20,
                      "prompt_tokens_details": {"cached_tokens": 30}}) == tokens_of(
        {"input": 100, "output": 20, "cacheRead": 30}
    )  # fmt: skip
    assert tokens_of({"inputTokens": -3, "outputTokens": 4, "cache_write": 5}).input == 0
    with pytest.raises(ValueError, match=r"usage\.output"):
        tokens_of({"input": 1, "output": "many"})


def test_provider_aliases_and_model_fallback():
    assert provider_for("kimi", "k2") == "moonshot"
    assert provider_for("Google-Gemini", "x") == "google"
    assert provider_for(None, "claude-opus-4-6") == "anthropic"
    assert provider_for(None, "gemini-2.5-flash") == "google"
    assert provider_for(None, "mystery") == "unknown"


def test_user_entries_without_usage_and_other_files_are_ignored(claw, ledger, pricer):
    d = claw.sessions()
    (d / "sessions.json").write_text(json.dumps({"agent:main:main": {"sessionId": SID, "inputTokens": 999}}))
    claw.append(claw.transcript(), *LINES[:3])
    scan(claw, ledger, pricer)
    assert totals(ledger)["requests"] == 0
    assert OpenClaw(roots=[claw.root]).files() == [claw.transcript()]


def test_topic_transcript_session_falls_back_to_the_file_name(claw, ledger, pricer):
    claw.append(claw.transcript(f"{SID}-topic-42.jsonl"), assistant("00000001", "2026-04-08T01:04:00.000Z"))
    scan(claw, ledger, pricer)
    assert [t.session_id for t in ledger.totals()] == [SID]


def test_roots_default_to_openclaw_and_legacy_dirs_and_explicit_missing_is_an_error(tmp_path, claw, ledger, pricer):
    roots, explicit = default_roots({"HOME": str(tmp_path)})
    assert [r.name for r in roots] == [".openclaw", ".clawdbot", ".moltbot", ".moldbot"] and not explicit
    legacy = ClawHome(tmp_path / ".clawdbot")
    legacy.append(legacy.transcript(), *LINES)
    claw.append(claw.transcript(), *LINES)  # the same session migrated to ~/.openclaw
    src = OpenClaw(env={"HOME": str(tmp_path)})
    assert src.status().detected and src.status().files == 2
    src.scan(ledger, pricer)
    assert totals(ledger) == TWO
    assert default_roots({"OPENCLAW_DIR": f"{tmp_path}/x,{tmp_path}/y"}) == ([tmp_path / "x", tmp_path / "y"], True)
    with pytest.raises(SourceError, match="OPENCLAW_DIR names no existing directory"):
        OpenClaw(env={"OPENCLAW_DIR": str(tmp_path / "nope")}).files()


def test_file_events_accept_only_transcripts_under_the_roots(claw, tmp_path):
    src = OpenClaw(roots=[claw.root])
    assert src.accepts(claw.transcript())
    assert src.accepts(claw.sessions() / f"{SID}.jsonl.reset.2026-04-08T02-00-00.000Z")
    assert not src.accepts(claw.sessions() / "sessions.json")
    assert not src.accepts(tmp_path / "x" / "agents" / "main" / "sessions" / f"{SID}.jsonl")


def test_configured_gateway_is_shown_without_its_secrets(claw, tmp_path):
    env = {"OPENCLAW_DIR": str(claw.root), "OPENCLAW_GATEWAY_TOKEN": "tok-s3cret", "TMPDIR": str(tmp_path),
           "OPENCLAW_GATEWAY_URL": "wss://me:pw@gw.example:18789/rpc?token=tok-s3cret"}  # fmt: skip
    claw.sessions()
    src = OpenClaw(env=env)
    assert src.status().notes == []  # the gateway is a view of its own in `sources` (test_openclaw_gateway)
    assert without_credentials(src.gateway_url) == "wss://gw.example:18789/rpc"


def test_crash_mid_file_resumes_with_the_model_of_the_last_commit(claw, ledger, pricer, monkeypatch):
    lines = [header()]
    for i in range(30):
        if i % 10 == 0:  # the model changes every ten messages; messages name no model themselves
            lines.append(model_change("anthropic", f"claude-model-{i // 10}", entry=f"7f59{i:04d}",
                                      ts=f"2026-04-08T02:{i:02d}:00.000Z"))  # fmt: skip
        lines.append(assistant(f"e{i:07d}", f"2026-04-08T02:{i:02d}:30.000Z", model=None, provider=None, out=i + 1))
    claw.append(claw.transcript(), *lines)
    monkeypatch.setattr(_tail.read_chunks, "__defaults__", (1024,))
    monkeypatch.setattr(_tail.Batch, "MAX_RECORDS", 2)
    real_commit = Ledger.commit
    calls = {"n": 0}

    def crashing_commit(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # the process dies mid-file
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "commit", crashing_commit)
    with pytest.raises(KeyboardInterrupt):
        scan(claw, ledger, pricer)
    assert 0 < totals(ledger)["requests"] < 30
    monkeypatch.setattr(Ledger, "commit", real_commit)
    scan(claw, ledger, pricer)
    got = {t.model: t.tokens["output"] for t in ledger.totals()}
    assert got == {f"claude-model-{m}": sum(range(10 * m + 1, 10 * m + 11)) for m in range(3)}


def test_run_follows_new_transcripts_and_a_reset_exactly_once(claw, tmp_path):
    live = claw.transcript()
    claw.append(live, *LINES[:4])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENBRIDGE_", "CLAUDE_", "OTEL_", "OPENCLAW_"))}
    env.update({"HOME": str(tmp_path / "home"), "OPENCLAW_DIR": str(claw.root), "TZ": "UTC",
                "TOKENBRIDGE_STATE_DIR": str(tmp_path / "state"),
                "TOKENBRIDGE_CONFIG": str(tmp_path / "none.toml")})  # fmt: skip

    def requests() -> int:
        return int(daily_report(env)["totals"]["requests"])

    daemon = Daemon(env, "--no-otlp")
    try:
        daemon.wait_ready()
        wait_for(lambda: requests() == 1, what="first message ingested")
        claw.append(live, LINES[4])
        wait_for(lambda: requests() == 2, what="appended message ingested")
        shutil.move(live, live.with_name(f"{SID}.jsonl.reset.2026-04-08T02-00-00.000Z"))
        # A new agent directory created while the daemon runs.
        claw.append(claw.transcript(f"{FORK}.jsonl", agent="helper"), header(FORK),
                    assistant("0f0f0f0f", "2026-04-08T03:00:00.000Z"))  # fmt: skip
        wait_for(lambda: requests() == 3, what="new agent's message ingested")
    finally:
        assert daemon.stop() == 0
    assert daily_report(env)["totals"]["outputTokens"] == 340 + 100 + 340
