"""OpenClaw agent session transcripts: ``<root>/agents/<agentId>/sessions/*.jsonl*``.

Where: ``OPENCLAW_DIR`` (comma list) replaces the defaults ``~/.openclaw`` and the legacy roots
``~/.clawdbot``, ``~/.moltbot``, ``~/.moldbot``. Every transcript form of a sessions directory is
read: ``<sessionId>.jsonl``, Telegram topics ``<sessionId>-topic-<threadId>.jsonl``, reset and
deleted archives ``<id>.jsonl.reset.<ts>`` / ``<id>.jsonl.deleted.<ts>``, and checkpoint or fork
copies; ``sessions.json`` (best-effort snapshots, not usage) is not.

How usage parses (local-formats.md §4.1). Odd semantics, all handled here:

* Files are append-only trees of entries (``id``, ``parentId``). Usage is on ``message``
  entries, at ``message.usage`` (or the entry's ``usage``), under any of the names OpenClaw's
  own ``normalizeUsage`` accepts; a negative input is clamped to 0.
* The same entry appears in several files (a reset archive is the renamed transcript, a
  checkpoint or fork copies entries): each entry counts once, keyed by its ``id`` and its own
  timestamp (ids are 8 hex digits, too short to be unique across sessions on their own). An
  entry without an id is keyed by its bytes.
* The model is the message's ``model``/``provider``, else the last ``model_change``
  (``provider``, ``modelId``) or ``model-snapshot`` custom entry before it. That state is stored
  with the file's cursor (see ``_stateful``), so a restart mid-file keeps it.
* ``usage.cost.total`` is the tool's own cost; a stored cost of 0 means unknown (some providers
  write 0), never free: the price table estimates it, and a model without a price stays unknown.
* The provider comes from the entry (aliases normalised: ``kimi``/``moonshotai`` → moonshot,
  ``google-*``/``gemini`` → google, …) or, without one, from the model name.

Known limits: the gateway log and the gateway's usage RPC are not read (``tokenbridge sources``
notes a configured gateway, ``OPENCLAW_GATEWAY_URL`` with ``OPENCLAW_GATEWAY_TOKEN``, without the token).

What it yields: ``UsageRecord(source="openclaw")``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bridge.errors import SourceError
from bridge.record import CostOrigin, Tokens, UsageRecord
from bridge.sources._base import SourceStatus, Watch, expand_dir_list, log
from bridge.sources._registry import SourceSpec
from bridge.sources._stateful import (
    StatefulTailSource,
    candidate_lines_while,
    count_cut_lines,
    note_malformed,
    walk,
)
from bridge.sources._tail import ChunkResult

if TYPE_CHECKING:
    from bridge.config import Settings

NAME = "openclaw"
UNKNOWN_MODEL = "unknown"
LEGACY_ROOTS = (".openclaw", ".clawdbot", ".moltbot", ".moldbot")
# A message counts only with a usage object, so its line holds ``"usage"``: user and tool-result
# lines (most of a transcript's bytes) are never parsed. The session header is looked for only
# until it was read (see ``_Parser.parse``).
_NEEDLES = (b'"usage"', b'"model_change"', b'"model-snapshot"')
_EARLY = (b'"session"',)
# normalizeUsage's accepted names, first match wins (local-formats.md §4.1).
_INPUT = ("input", "inputTokens", "input_tokens", "promptTokens", "prompt_tokens")
_OUTPUT = ("output", "outputTokens", "output_tokens", "completionTokens", "completion_tokens")
_CACHE_READ = ("cacheRead", "cache_read", "cache_read_input_tokens", "cached_tokens")
_CACHE_WRITE = ("cacheWrite", "cache_write", "cache_creation_input_tokens")
_PROVIDER_ALIASES = {
    "kimi": "moonshot",
    "kimi-coding": "moonshot",
    "moonshotai": "moonshot",
    "google-gemini": "google",
    "google-gemini-cli": "google",
    "google-vertex": "google",
    "gemini": "google",
    "vertex": "google",
    "openai-codex": "openai",
    "x-ai": "xai",
    "grok": "xai",
    "anthropic-vertex": "anthropic",
    "claude": "anthropic",
}


def default_roots(env: dict[str, str] | None = None) -> tuple[list[Path], bool]:
    """OpenClaw state roots to read, and whether ``OPENCLAW_DIR`` set them explicitly."""
    env = dict(os.environ) if env is None else env
    explicit = env.get("OPENCLAW_DIR", "").strip()
    if explicit:
        return expand_dir_list(explicit), True
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    return [home / name for name in LEGACY_ROOTS], False


def is_transcript(name: str) -> bool:
    """A transcript or one of its archives and copies (not ``sessions.json``, locks, temp files)."""
    return ".jsonl" in name and not name.endswith((".lock", ".tmp"))


def provider_for(provider: Any, model: str) -> str:
    if isinstance(provider, str) and provider.strip():
        p = provider.strip().lower()
        return _PROVIDER_ALIASES.get(p, p)
    m = model.lower()
    if m.startswith("claude"):
        return "anthropic"
    if m.startswith(("gpt-", "o1", "o3", "o4", "codex")):
        return "openai"
    if m.startswith(("gemini", "gemma")):
        return "google"
    if m.startswith(("kimi", "moonshot")):
        return "moonshot"
    if m.startswith("deepseek"):
        return "deepseek"
    if m.startswith("grok"):
        return "xai"
    if "/" in m:
        return "openrouter"
    return "unknown"


def _first_count(usage: dict[str, Any], names: tuple[str, ...], clamp: bool = False) -> int:
    for name in names:
        if name in usage and usage[name] is not None:
            v = usage[name]
            if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
                raise ValueError(f"usage.{name} is not a number: {v!r}")
            if v < 0:
                if clamp:
                    return 0
                raise ValueError(f"usage.{name} is negative: {v!r}")
            return int(v)
    return 0


def tokens_of(usage: dict[str, Any]) -> Tokens:
    """Token counts of one usage object; input and cache are separate counts in OpenClaw."""
    cache_read = _first_count(usage, _CACHE_READ)
    details = usage.get("prompt_tokens_details")
    if not cache_read and isinstance(details, dict):
        cache_read = _first_count(details, ("cached_tokens",))
    return Tokens(
        _first_count(usage, _INPUT, clamp=True),
        _first_count(usage, _OUTPUT),
        cache_read,
        _first_count(usage, _CACHE_WRITE),
        0,
    )


def _cost(usage: dict[str, Any]) -> Decimal | None:
    """The stored cost when positive; 0, absent or odd means unknown (estimated later)."""
    cost = usage.get("cost")
    total = cost.get("total") if isinstance(cost, dict) else cost
    if isinstance(total, bool) or not isinstance(total, int | float) or not total > 0:
        return None
    try:
        return Decimal(str(total))
    except InvalidOperation:
        return None


def _timestamp(obj: dict[str, Any], message: dict[str, Any]) -> tuple[datetime, str]:
    raw = obj.get("timestamp")
    if isinstance(raw, str):
        ts = datetime.fromisoformat(raw)
        if ts.tzinfo is None:
            raise ValueError(f"timestamp without timezone: {raw!r}")
        return ts, raw
    epoch = message.get("timestamp")
    if isinstance(epoch, int | float) and not isinstance(epoch, bool) and epoch > 0:
        return datetime.fromtimestamp(epoch / 1000, UTC), str(epoch)
    raise ValueError("message entry with usage has no timestamp")


@dataclass(slots=True)
class _State:
    session: str | None = None
    cwd: str | None = None
    provider: str | None = None
    model: str | None = None


class _Parser:
    def __init__(self, path: Path, state: str | None) -> None:
        self.path = path
        self.st = _State(**json.loads(state)) if state else _State()
        self.fallback_session = path.name.split(".jsonl", 1)[0].split("-topic-", 1)[0]

    def state(self) -> str:
        return json.dumps(asdict(self.st), separators=(",", ":"))

    def parse(self, buf: bytes) -> ChunkResult:
        out = ChunkResult(records=[])
        for start, end in candidate_lines_while(buf, _NEEDLES, _EARLY, lambda: self.st.session is None):
            line = buf[start:end]
            try:
                rec = self._line(orjson.loads(line), line)
            except (orjson.JSONDecodeError, ValueError, TypeError, OverflowError) as exc:
                log.debug("%s: malformed transcript entry at chunk byte %d: %s", self.path, start, exc)
                if line.rstrip().endswith(b"}"):  # cut lines are counted by count_cut_lines
                    note_malformed(out, start)
                continue
            if rec is not None:
                out.records.append(rec)
        count_cut_lines(buf, out)
        return out

    def _line(self, obj: Any, line: bytes) -> UsageRecord | None:
        if not isinstance(obj, dict):
            raise ValueError("entry is not a JSON object")
        kind = obj.get("type")
        st = self.st
        if kind == "session":
            if st.session is None:
                sid, cwd = obj.get("id"), obj.get("cwd")
                st.session = sid if isinstance(sid, str) and sid else None
                st.cwd = cwd if isinstance(cwd, str) and cwd else None
            return None
        if kind == "model_change" or (kind == "custom" and obj.get("customType") == "model-snapshot"):
            nested = obj.get("data")
            data: dict[str, Any] = nested if isinstance(nested, dict) else obj
            model = data.get("modelId") or data.get("model")
            if isinstance(model, str) and model:
                st.model = model
                provider = data.get("provider")
                st.provider = provider if isinstance(provider, str) and provider else None
            return None
        if kind != "message":
            return None
        message = obj.get("message")
        if not isinstance(message, dict):
            return None
        usage = message.get("usage")
        if usage is None:
            usage = obj.get("usage")
        if usage is None:
            return None
        if not isinstance(usage, dict):
            raise ValueError("usage is not an object")
        tokens = tokens_of(usage)
        if tokens.total == 0:
            return None
        ts, ts_raw = _timestamp(obj, message)
        model = message.get("model") if isinstance(message.get("model"), str) and message.get("model") else None
        provider = message.get("provider") if model else None
        if model is None:
            model, provider = st.model or UNKNOWN_MODEL, st.provider
        entry_id = obj.get("id")
        if isinstance(entry_id, str) and entry_id:
            key = f"openclaw:{entry_id}:{ts_raw}"
        else:
            import hashlib  # here: its OpenSSL start-up is 2 ms of every one-off sync

            key = "openclaw-line:" + hashlib.sha1(line.strip(), usedforsecurity=False).hexdigest()
        cost = _cost(usage)
        return UsageRecord(
            NAME,
            provider_for(provider, str(model)),
            str(model),
            ts,
            key,
            tokens,
            cost,
            CostOrigin.UNKNOWN if cost is None else CostOrigin.REPORTED,
            st.session or self.fallback_session,
            st.cwd,
        )


class OpenClaw(StatefulTailSource):
    """The OpenClaw session transcripts source."""

    name = NAME

    def __init__(self, roots: list[Path] | None = None, env: dict[str, str] | None = None) -> None:
        if roots is None:
            roots, explicit = default_roots(env)
        else:
            explicit = True
        self.roots, self.explicit = roots, explicit
        env = env or {}
        # Only whether a gateway is configured is kept: its token is a secret, never shown.
        self.gateway_url = env.get("OPENCLAW_GATEWAY_URL", "").strip() if env.get("OPENCLAW_GATEWAY_TOKEN") else ""

    def existing_roots(self) -> list[Path]:
        found, seen = [], set()
        for r in self.roots:
            real = os.path.realpath(r)
            if real not in seen and (r / "agents").is_dir():
                seen.add(real)
                found.append(r)
        if self.explicit and not found and not any(r.is_dir() for r in self.roots):
            names = ", ".join(str(r) for r in self.roots)
            raise SourceError(NAME, f"OPENCLAW_DIR names no existing directory: {names}")
        return found

    def session_dirs(self) -> list[Path]:
        out: list[Path] = []
        for root in self.existing_roots():
            try:
                agents = sorted(p for p in (root / "agents").iterdir() if p.is_dir())
            except OSError:
                continue
            out.extend(a / "sessions" for a in agents if (a / "sessions").is_dir())
        return out

    def files(self) -> list[Path]:
        return [f for d in self.session_dirs() for f in walk(d, False, is_transcript)]

    def accepts(self, path: Path) -> bool:
        return (
            is_transcript(path.name)
            and path.parent.name == "sessions"
            and path.parent.parent.parent.name == "agents"
            and any(path.is_relative_to(r) for r in self.roots)
        )

    def parser(self, path: Path, state: str | None) -> _Parser:
        return _Parser(path, state)

    def watches(self) -> list[Watch]:
        # Recursive on agents/: a new agent's sessions/ directory is seen without a restart.
        return [Watch(r / "agents", True, (".jsonl",)) for r in self.existing_roots()]

    def status(self) -> SourceStatus:
        try:
            roots, notes = self.existing_roots(), []
            files = len(self.files())
        except SourceError as exc:
            roots, notes, files = [], [str(exc)], 0
        if self.gateway_url:
            notes.append(
                f"gateway {_without_credentials(self.gateway_url)} is configured; its usage RPC is another view of "
                "these transcripts and is not read (never added on top)"
            )
        return SourceStatus(NAME, bool(roots), True, [str(r) for r in (roots or self.roots)], files, notes)


def _without_credentials(url: str) -> str:
    """The URL without a ``user:password@`` part or a query (either may carry a token)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _build(settings: Settings) -> OpenClaw:
    return OpenClaw(env=settings.env)


SPECS = (
    SourceSpec(
        NAME,
        "tailed",
        _build,
        "OpenClaw agent session transcripts (agents/*/sessions/*.jsonl, reset/deleted archives, copies)",
        group="openclaw",
        settings=("OPENCLAW_DIR",),  # where transcripts are; the gateway settings only add a note
        order=32,
    ),
)
