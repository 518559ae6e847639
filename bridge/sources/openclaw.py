"""OpenClaw agent session transcripts (``<root>/agents/<agentId>/sessions/*.jsonl*``) and gateway logs.

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

The gateway log (``_openclaw_log``) is a fallback: its run results count only for sessions
without a transcript; the ledger's fallback rule (``fallback_prefix``) retracts a session's log
rows in the transaction that adds its transcript rows. The gateway's usage RPC
(``_openclaw_gateway``, ``OPENCLAW_GATEWAY_URL`` with ``OPENCLAW_GATEWAY_TOKEN``) is a view:
``tokenbridge sources`` shows it reconciled against the transcripts (``_openclaw_view``); it is
never added.

What it yields: ``UsageRecord(source="openclaw")``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bridge.errors import SourceError
from bridge.record import CostOrigin, UsageRecord
from bridge.sources import _openclaw_log, _openclaw_view
from bridge.sources._base import SourceStatus, Watch, expand_dir_list, log
from bridge.sources._openclaw_log import LOG_PREFIX
from bridge.sources._openclaw_usage import cost_of, provider_for, tokens_of
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
    from bridge.ledger import Ledger

NAME = "openclaw"
UNKNOWN_MODEL = "unknown"
LEGACY_ROOTS = (".openclaw", ".clawdbot", ".moltbot", ".moldbot")
# A message counts only with a usage object, so its line holds ``"usage"``: user and tool-result
# lines (most of a transcript's bytes) are never parsed. The session header is looked for only
# until it was read (see ``_Parser.parse``).
_NEEDLES = (b'"usage"', b'"model_change"', b'"model-snapshot"')
_EARLY = (b'"session"',)


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
        cost = cost_of(usage)
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
    """The OpenClaw source: session transcripts, and gateway logs for sessions without one."""

    name = NAME
    fallback_prefix = LOG_PREFIX

    def __init__(
        self, roots: list[Path] | None = None, env: dict[str, str] | None = None, log_tmp: Path | None = None
    ) -> None:
        """``log_tmp``: the temp directory whose ``openclaw/`` holds the dated gateway logs
        (default with ``env``: ``TMPDIR``, else ``/tmp``)."""
        if roots is None:
            roots, explicit = default_roots(env)
        else:
            explicit = True
        self.roots, self.explicit = roots, explicit
        if log_tmp is None and env is not None:
            log_tmp = Path(env.get("TMPDIR") or "/tmp")  # noqa: S108 - where OpenClaw writes its log
        self.log_tmp = log_tmp
        env = env or {}
        token = env.get("OPENCLAW_GATEWAY_TOKEN", "").strip()
        self.gateway_url = env.get("OPENCLAW_GATEWAY_URL", "").strip() if token else ""
        self._gateway_token = token  # a secret: only ever sent to the gateway in its connect frame

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

    def log_files(self) -> tuple[list[Path], list[str]]:
        return _openclaw_log.log_files([r for r in self.roots if r.is_dir()], self.log_tmp)

    def files(self) -> list[Path]:
        # Transcripts first: in one batch their sessions are known before the log rows arrive
        # (the ledger's fallback rule holds in any order; this only spares work).
        transcripts = [f for d in self.session_dirs() for f in walk(d, False, is_transcript)]
        return transcripts + self.log_files()[0]

    def _is_transcript_path(self, path: Path) -> bool:
        return (
            is_transcript(path.name)
            and path.parent.name == "sessions"
            and path.parent.parent.parent.name == "agents"
            and any(path.is_relative_to(r) for r in self.roots)
        )

    def accepts(self, path: Path) -> bool:
        return self._is_transcript_path(path) or (path.suffix == ".log" and path in self.log_files()[0])

    def parser(self, path: Path, state: str | None) -> _Parser | _openclaw_log.LogParser:
        if self._is_transcript_path(path):
            return _Parser(path, state)
        return _openclaw_log.LogParser(path)

    def watches(self) -> list[Watch]:
        # Recursive on agents/: a new agent's sessions/ directory is seen without a restart.
        out = [Watch(r / "agents", True, (".jsonl",)) for r in self.existing_roots()]
        dirs = _openclaw_log.log_dirs([r for r in self.roots if r.is_dir()], self.log_tmp)
        return out + [Watch(d, False, (".log",)) for d in dict.fromkeys(dirs) if d.is_dir()]

    def status(self) -> SourceStatus:
        try:
            roots, notes = self.existing_roots(), []
            transcripts = len(self.files()) - len(self.log_files()[0])
        except SourceError as exc:
            roots, notes, transcripts = [], [str(exc)], 0
        logs, log_notes = self.log_files()
        notes += log_notes
        if logs:
            notes.append(f"{len(logs)} gateway log file(s): read only for sessions without a transcript")
        shown = [str(r) for r in (roots or self.roots)]
        return SourceStatus(NAME, bool(roots) or bool(logs), True, shown, transcripts + len(logs), notes)

    def view_info(self, ledger: Ledger) -> dict[str, Any]:
        """What ``tokenbridge sources`` shows beside the counts: the gateway-log fallback and the
        gateway usage RPC reconciled against the transcripts (read live, never stored)."""
        return _openclaw_view.view(ledger, self.gateway_url, self._gateway_token)


def _build(settings: Settings) -> OpenClaw:
    return OpenClaw(env=settings.env)


SPECS = (
    SourceSpec(
        NAME,
        "tailed",
        _build,
        "OpenClaw agent session transcripts (agents/*/sessions/*.jsonl, reset/deleted archives, copies) or "
        "gateway logs",
        group="openclaw",
        # Where transcripts are; the gateway settings (OPENCLAW_GATEWAY_URL/TOKEN) only add a view.
        settings=("OPENCLAW_DIR",),
        order=32,
    ),
)
