"""Shared fixtures: a Claude Code home written with lines shaped like the real transcripts."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.ledger import Ledger
from bridge.record import Tokens
from tests._no_orphans import pytest_sessionfinish, pytest_sessionstart  # no process outlives the suite

__all__ = ["pytest_sessionfinish", "pytest_sessionstart"]  # hooks: pytest finds them by name

SESSION = "3b9e0c3a-1d2f-4c55-9a0e-7f1b2c3d4e5f"
PROVIDER_KEYS = (
    "OPENAI_ADMIN_KEY",
    "ANTHROPIC_ADMIN_KEY",
    "OPENROUTER_API_KEY",
    "OPENROUTER_MANAGEMENT_KEY",
    "MOONSHOT_API_KEY",
    "DEEPSEEK_API_KEY",
)


def assistant_line(
    msg_id: str,
    req_id: str | None,
    *,
    model: str = "claude-sonnet-4-5-20250929",
    ts: str = "2026-03-02T10:15:04.010Z",
    input: int = 4,
    output: int = 187,
    cache_read: int = 48000,
    cache_5m: int = 1200,
    cache_1h: int = 0,
    split: bool = True,
    session: str = SESSION,
    sidechain: bool = False,
    stop_reason: str | None = "tool_use",
    cost_usd: float | None = None,
    version: str = "2.1.40",
    uuid: str = "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
    server_tool_use: dict[str, Any] | None = None,
    speed: str | None = None,
    usage_extra: dict[str, Any] | None = None,
    cwd: str = "/home/dev/app",
) -> str:
    """An assistant line in Claude Code's own field order (local-formats.md §1.3, Example A)."""
    usage: dict[str, Any] = {
        "input_tokens": input,
        "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_read_input_tokens": cache_read,
    }
    if split:
        usage["cache_creation"] = {"ephemeral_5m_input_tokens": cache_5m, "ephemeral_1h_input_tokens": cache_1h}
    usage["output_tokens"] = output
    if server_tool_use is not None:
        usage["server_tool_use"] = server_tool_use
    usage["service_tier"] = "standard"
    if speed is not None:
        usage["speed"] = speed
    usage.update(usage_extra or {})
    line: dict[str, Any] = {
        "parentUuid": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "isSidechain": sidechain,
        "userType": "external",
        "cwd": cwd,
        "sessionId": session,
        "version": version,
        "gitBranch": "main",
        "message": {
            "model": model,
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "Let me look at the failing test."}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        },
    }
    if req_id is not None:
        line["requestId"] = req_id
    line.update({"type": "assistant", "uuid": uuid, "timestamp": ts})
    if cost_usd is not None:
        line["costUSD"] = cost_usd
    return json.dumps(line, separators=(",", ":"))


def user_tool_result(
    text: str, ts: str = "2026-03-02T10:15:05.000Z", session: str = SESSION, cwd: str = "/home/dev/app"
) -> str:
    """A user line carrying a tool result: most real transcript bytes look like this."""
    return json.dumps(
        {
            "parentUuid": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
            "isSidechain": False,
            "userType": "external",
            "cwd": cwd,
            "sessionId": session,
            "version": "2.1.40",
            "type": "user",
            "message": {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_01Example", "content": text}],
            },
            "uuid": "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
            "timestamp": ts,
        },
        separators=(",", ":"),
    )


def agent_progress_line(subagent_line: str, session: str = SESSION, agent_id: str = "a1b2c3") -> str:
    """A ``progress`` line of the parent session mirroring one line of a running subagent.

    Not in local-formats.md; this is Claude Code's own shape as observed in public transcripts
    and parsers: ``data.type == "agent_progress"``, the subagent's line under ``data.message``
    (``type``, ``message`` with ``id``/``model``/``usage``, ``requestId``, ``uuid``,
    ``timestamp``); the outer line carries the parent's ``sessionId`` and ``cwd``.
    """
    inner = json.loads(subagent_line)
    return json.dumps(
        {
            "parentUuid": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
            "isSidechain": False,
            "userType": "external",
            "cwd": "/home/dev/app",
            "sessionId": session,
            "version": "2.1.40",
            "gitBranch": "main",
            "type": "progress",
            "data": {
                "type": "agent_progress",
                "agentId": agent_id,
                "prompt": "Find the failing test",
                "message": {
                    "type": "assistant",
                    "message": inner["message"],
                    "requestId": inner.get("requestId"),
                    "uuid": inner["uuid"],
                    "timestamp": inner["timestamp"],
                },
                "normalizedMessages": [],
            },
            "toolUseID": f"agent_msg_{agent_id}",
            "parentToolUseID": "toolu_01Example",
            "uuid": "8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1e",
            "timestamp": "2026-03-02T10:15:06.000Z",
        },
        separators=(",", ":"),
    )


def synthetic_line(session: str = SESSION) -> str:
    """local-formats.md §1.3 Example C."""
    return json.dumps(
        {
            "parentUuid": "4d5e6f7a-8b9c-4d0e-9f1a-2b3c4d5e6f7a",
            "isSidechain": False,
            "userType": "external",
            "cwd": "/home/dev/app",
            "sessionId": session,
            "version": "2.1.40",
            "type": "assistant",
            "uuid": "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b",
            "timestamp": "2026-03-02T11:00:00.000Z",
            "message": {
                "id": "6f7a8b9c-0d1e-4f2a-9b3c-4d5e6f7a8b9c",
                "model": "<synthetic>",
                "role": "assistant",
                "stop_reason": "stop_sequence",
                "stop_sequence": "",
                "type": "message",
                "usage": {
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
                "content": [{"type": "text", "text": "API Error: Request was aborted."}],
            },
            "isApiErrorMessage": True,
        },
        separators=(",", ":"),
    )


@dataclass
class ClaudeHome:
    """A Claude Code config dir with ``projects/`` under a temp dir."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)

    def session_file(self, session: str = SESSION, project: str = "-home-dev-app", sub: str | None = None) -> Path:
        base = self.root / "projects" / project
        path = base / session / "subagents" / f"agent-{sub}.jsonl" if sub else base / f"{session}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def append(self, path: Path, *lines: str, newline: bool = True) -> None:
        with path.open("a", encoding="utf-8") as fh:
            for i, line in enumerate(lines):
                fh.write(line)
                if newline or i < len(lines) - 1:
                    fh.write("\n")


@pytest.fixture
def claude_home(tmp_path: Path) -> ClaudeHome:
    home = ClaudeHome(tmp_path / "claude")
    (home.root / "projects").mkdir(parents=True)
    return home


def ledger_sums(ledger: Ledger) -> dict[str, int]:
    """Token totals by type and the request count over every series; checks totals == rows."""
    out = {"input": 0, "output": 0, "cacheRead": 0, "cacheCreation": 0, "requests": 0}
    for t in ledger.totals():
        for k, v in t.tokens.items():
            out[k] += v
        out["requests"] += t.requests
    assert ledger.totals() == ledger.recomputed_totals()
    return out


class FlatPricer:
    """$1 per million tokens of any type; None for models named ``unknown-*``.

    Lets ledger tests check cost bookkeeping without depending on the price table.
    """

    def cost(self, provider: str, model: str, tokens: Tokens, at: Any = None, extras: Any = None) -> Decimal | None:
        if model.startswith("unknown-") or model == "<synthetic>":
            return None
        return Decimal(tokens.total) / Decimal(1_000_000)


@pytest.fixture
def pricer() -> FlatPricer:
    return FlatPricer()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / "state") as led:
        yield led


@pytest.fixture
def cli_env(tmp_path: Path, claude_home: ClaudeHome) -> dict[str, str]:
    """Environment for running the CLI against the fixture home only."""
    # Other agents' homes from the developer's environment must not leak into the fixtures.
    skip = ("OTEL_", "TOKENBRIDGE_", "CLAUDE_", "CODEX_", "OPENCLAW_", "GEMINI_", "OPENCODE_", "AMP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    for key in PROVIDER_KEYS:  # tests never reach a real provider with the developer's keys
        env.pop(key, None)
    env.pop("COLUMNS", None)  # the CLI's piped width (140) unless a test asks for another
    env.update(
        {
            "HOME": str(tmp_path / "home"),
            "CLAUDE_CONFIG_DIR": str(claude_home.root),
            "TOKENBRIDGE_STATE_DIR": str(tmp_path / "state"),
            "TOKENBRIDGE_CONFIG": str(tmp_path / "no-config.toml"),
            "TOKENBRIDGE_EVENTS_PORT": "0",  # the events receiver of `run` on a free port: daemons never collide
            "TOKENBRIDGE_PRICES_REFRESH": "0",  # no fetch from the internet (tests of the refresh serve their own)
            "TZ": "UTC",
        }
    )
    return env


@pytest.fixture
def tz_env(monkeypatch):
    """Set TZ for this process (and the C library) and restore both afterwards."""

    def set_tz(value: str) -> None:
        monkeypatch.setenv("TZ", value)
        time.tzset()

    yield set_tz
    monkeypatch.undo()
    time.tzset()
