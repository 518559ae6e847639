"""OpenAI Codex CLI rollouts: ``<home>/sessions/YYYY/MM/DD/rollout-*.jsonl`` and the flat
``<home>/archived_sessions/``.

Where: ``CODEX_HOME`` (comma list) replaces the default ``~/.codex``.

How usage parses (local-formats.md §3). Only three line kinds matter: ``session_meta`` (the
session id, its parent, provider and starting ``cwd``), ``turn_context`` (the model of the
following turns) and ``event_msg`` ``token_count`` events. Odd semantics, all handled here:

* ``token_count`` carries the session's running total and the last call's usage, and is
  re-emitted with an unchanged total (UI and rate-limit refreshes). A turn counts only when the
  running total advanced: then its usage is ``last_token_usage`` (or, without it, the advance of
  the total). No advance counts nothing; a total that drops (after a resume or compaction) is a
  reset, not negative usage: the event's own usage counts and a new epoch of totals begins.
  Events whose four counts are all 0 (``fill_to_context_window``'s synthetic total) are ignored.
* ``cached_input_tokens`` is part of ``input_tokens``: input = input − cached, cacheRead =
  cached (clamped to input). ``reasoning_output_tokens`` is part of ``output_tokens`` and is
  billed as output: it is not added again.
* Identity is the session id: a turn's key is ``codex:<session>:<epoch>:<running total>``, a
  pure function of the file's content up to that line. Archiving (a move to
  ``archived_sessions/``), copying, or re-reading a rollout yields the same keys: counted once.
* A forked or subagent rollout (``forked_from_id``, or ``source.subagent.thread_spawn
  .parent_thread_id``) starts by replaying the parent's history: a burst of ``token_count``
  lines written within a second of the child's first line. Those events belong to the parent
  (counted from the parent's own file): they only move the running total, never count. The
  first event later than one second after the child's first line ends the replay.
* The running total, epoch, model, and replay state are stored with the file's cursor (see
  ``_stateful``), so reading on after a restart or ``kill -9`` mid-file is exact.
* A turn with no model (September 2025 builds wrote no ``turn_context``) is recorded under the
  model ``unknown``: its cost is unknown, never $0.

* A ``CODEX_HOME`` entry with neither ``sessions/`` nor ``archived_sessions/`` is read as saved
  ``codex exec --json`` output (``*.jsonl`` below it): each ``turn.completed`` carries that
  turn's usage but no time and no model, so it is dated by the file's modification time and its
  model is ``unknown`` (cost unknown). It is keyed by the ``thread.started`` thread id, the
  turn's place after it and its counts, so a copy adds nothing.

Known limits: Codex's state SQLite databases are not read. A file is read either as a rollout or
as exec output: once a session_meta (or token_count) line named the session, the exec-output
line kinds are no longer looked for in that file (Codex never writes them into a rollout).

What it yields: ``UsageRecord(source="codex", provider=the rollout's model_provider or openai)``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
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

NAME = "codex"
UNKNOWN_MODEL = "unknown"
# Replayed parent history is written at once when the child starts; a child's own first turn
# needs a model call, which takes longer than this.
REPLAY_WINDOW_MS = 1000
_UUID_TAIL = re.compile(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.jsonl$", re.IGNORECASE)
_NEEDLES = (b'"token_count"', b'"turn_context"')
# Looked for only until the session is known (see ``_Parser.parse``): a rollout's session_meta
# is its first line, and exec output has neither session_meta nor token_count lines.
_EARLY = (b'"session_meta"', b'"turn.completed"', b'"thread.started"')
_USAGE_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")


def default_homes(env: dict[str, str] | None = None) -> tuple[list[Path], bool]:
    """Codex homes to read, and whether ``CODEX_HOME`` set them explicitly."""
    env = dict(os.environ) if env is None else env
    explicit = env.get("CODEX_HOME", "").strip()
    if explicit:
        return expand_dir_list(explicit), True
    home = env.get("HOME") or os.path.expanduser("~")
    return [Path(home) / ".codex"], False


def _is_rollout(name: str) -> bool:
    return name.startswith("rollout-") and name.endswith(".jsonl")


def _is_exec_output(name: str) -> bool:
    return name.endswith(".jsonl") and name != "history.jsonl"  # Codex's prompt history, no usage


@dataclass(slots=True)
class _State:
    """What later lines of a rollout need from earlier ones (stored with the cursor)."""

    session: str | None = None
    parent: str | None = None
    anchor_ms: int | None = None  # the child's first line: the replay burst follows it
    replaying: bool = False
    model: str | None = None
    provider: str = "openai"
    cwd: str | None = None
    prev: list[int] | None = None  # running total: input, cached, output, reasoning
    epoch: int = 0
    exec_thread: str | None = None  # `codex exec --json` output: the current thread
    exec_turns: int = 0  # turns completed since that thread started (in this file)


def _count(usage: dict[str, Any], key: str) -> int:
    v = usage.get(key, 0)
    if type(v) is int and v >= 0:  # the common case: one type check
        return v
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"token_count {key} is not a non-negative integer: {v!r}")
    return v


def _usage(raw: Any) -> list[int] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("token usage is not an object")
    return [_count(raw, k) for k in _USAGE_FIELDS]


def _ms(raw: Any) -> int | None:
    if not isinstance(raw, str):
        return None
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return None if ts.tzinfo is None else int(ts.timestamp() * 1000)


def _parent_of(payload: dict[str, Any]) -> str | None:
    parent = payload.get("forked_from_id")
    if isinstance(parent, str) and parent:
        return parent
    source = payload.get("source")
    if isinstance(source, dict):
        spawn = (source.get("subagent") or {}).get("thread_spawn") if isinstance(source.get("subagent"), dict) else None
        if isinstance(spawn, dict):
            parent = spawn.get("parent_thread_id")
            if isinstance(parent, str) and parent:
                return parent
    return None


def _model_of(payload: dict[str, Any]) -> str | None:
    for key in ("model", "model_name"):
        m = payload.get(key)
        if isinstance(m, str) and m:
            return m
    meta = payload.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("model"), str) and meta["model"]:
        return str(meta["model"])
    return None


class _Parser:
    """Parses one rollout's complete lines, chunk by chunk, carrying ``_State``."""

    def __init__(self, path: Path, state: str | None) -> None:
        self.path = path
        self.st = _State(**json.loads(state)) if state else _State()
        m = _UUID_TAIL.search(path.name)
        import hashlib  # here: its OpenSSL start-up is 2 ms of every one-off sync

        # Without a session_meta line the rollout's uuid (kept when archived) names the session.
        self.fallback_session = (
            m.group(1) if m else "path-" + hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:16]
        )
        self._mtime: datetime | None = None

    def state(self) -> str:
        return json.dumps(asdict(self.st), separators=(",", ":"))

    def parse(self, buf: bytes) -> ChunkResult:
        out = ChunkResult(records=[])
        # Only the first session_meta counts (later ones are a replayed parent's), and a file
        # whose session is known is a rollout, not exec output: once the session is set, a
        # chunk is searched for two needles, not five (two thirds of the byte searches saved).
        for start, end in candidate_lines_while(buf, _NEEDLES, _EARLY, lambda: self.st.session is None):
            line = buf[start:end]
            try:
                rec = self._line(orjson.loads(line))
            except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
                log.debug("%s: malformed rollout line at chunk byte %d: %s", self.path, start, exc)
                if line.rstrip().endswith(b"}"):  # cut lines are counted by count_cut_lines
                    note_malformed(out, start)
                continue
            if rec is not None:
                out.records.append(rec)
        count_cut_lines(buf, out)
        return out

    def _line(self, obj: Any) -> UsageRecord | None:
        if not isinstance(obj, dict):
            raise ValueError("line is not a JSON object")
        kind, payload = obj.get("type"), obj.get("payload")
        st = self.st
        if kind == "thread.started":
            thread = obj.get("thread_id")
            st.exec_thread, st.exec_turns = (thread if isinstance(thread, str) and thread else None), 0
            return None
        if kind == "turn.completed":
            return self._exec_turn(obj)
        if not isinstance(payload, dict):
            return None
        if kind == "session_meta":
            if st.session is None:  # later session_meta lines are the replayed parent's
                sid = payload.get("id")
                st.session = sid if isinstance(sid, str) and sid else self.fallback_session
                st.parent = _parent_of(payload)
                st.replaying = st.parent is not None
                st.anchor_ms = _ms(obj.get("timestamp")) or _ms(payload.get("timestamp"))
                provider = payload.get("model_provider")
                if isinstance(provider, str) and provider:
                    st.provider = provider.lower()
                cwd = payload.get("cwd")
                st.cwd = cwd if isinstance(cwd, str) and cwd else None
            return None
        if kind == "turn_context":
            st.model = _model_of(payload) or st.model
            return None
        if kind != "event_msg" or payload.get("type") != "token_count":
            return None
        info = payload.get("info")
        if info is None:
            return None  # a rate-limit refresh
        if not isinstance(info, dict):
            raise ValueError("token_count info is not an object")
        total, last = _usage(info.get("total_token_usage")), _usage(info.get("last_token_usage"))
        ts_raw = obj.get("timestamp")
        ts_ms = _ms(ts_raw)
        if ts_ms is None:
            raise ValueError(f"token_count without a timezone-aware timestamp: {ts_raw!r}")
        if st.session is None:
            st.session = self.fallback_session
        if st.replaying:
            if st.anchor_ms is None:
                st.anchor_ms = ts_ms  # no time on the meta line: the burst starts here
            if ts_ms - st.anchor_ms <= REPLAY_WINDOW_MS:
                self._advance(total, last)  # the parent's turn: moves the total, counts nothing
                return None
            st.replaying = False
        usage = self._advance(total, last)
        if usage is None:
            return None
        inp, cached, output, _reasoning = usage
        cached = min(cached, inp)
        if total is not None:
            key = f"codex:{st.session}:{st.epoch}:{':'.join(map(str, total))}"
        else:  # no running total to key on: this exact event's content and time
            key = f"codex:{st.session}:{st.epoch}:last:{ts_raw}:{':'.join(map(str, usage))}"
        model = _model_of(payload) or _model_of(info) or st.model or UNKNOWN_MODEL
        return UsageRecord(
            NAME,
            st.provider,
            model,
            datetime.fromisoformat(str(ts_raw)),
            key,
            Tokens(inp - cached, output, cached, 0, 0),
            None,
            CostOrigin.UNKNOWN,
            st.session,
            st.cwd,
        )

    def _exec_turn(self, obj: dict[str, Any]) -> UsageRecord | None:
        """A ``codex exec --json`` turn: its own usage, no time and no model on the line."""
        raw = obj.get("usage")
        if raw is None:
            return None
        inp, cached, output, _reasoning = _usage(raw) or [0, 0, 0, 0]
        st = self.st
        st.exec_turns += 1
        if not (inp or cached or output):
            return None
        cached = min(cached, inp)
        thread = st.exec_thread or self.fallback_session
        # The thread, the turn's place after its thread.started and its counts: the same in a
        # copy of the file, different for a resumed thread's later turns.
        key = f"codex-exec:{thread}:{st.exec_turns}:{inp}:{cached}:{output}"
        if self._mtime is None:  # no timestamps in exec output: the file's time, as ccusage does
            self._mtime = datetime.fromtimestamp(self.path.stat().st_mtime, UTC)
        model = _model_of(obj) or st.model or UNKNOWN_MODEL
        return UsageRecord(
            NAME, st.provider, model, self._mtime, key, Tokens(inp - cached, output, cached, 0, 0),
            None, CostOrigin.UNKNOWN, thread, None,
        )  # fmt: skip

    def _advance(self, total: list[int] | None, last: list[int] | None) -> list[int] | None:
        """The usage one event adds, moving the running total (local-formats.md §3.3)."""
        st = self.st
        if total is None:
            usage = last
        elif not any(total):
            return None  # a synthetic total (fill_to_context_window) or an empty one
        elif st.prev is None:
            usage = last if last is not None else total
            st.prev = total
        elif total == st.prev:
            return None  # re-emitted: no advance, nothing new
        elif all(t >= p for t, p in zip(total, st.prev, strict=True)):
            usage = last if last is not None else [t - p for t, p in zip(total, st.prev, strict=True)]
            st.prev = total
        else:
            st.epoch += 1  # the total dropped: a reset, the counting restarts from zero
            usage = last if last is not None else total
            st.prev = total
        if usage is None or not any(usage):
            return None
        return usage


class Codex(StatefulTailSource):
    """The Codex CLI rollouts source."""

    name = NAME

    def __init__(self, homes: list[Path] | None = None, env: dict[str, str] | None = None) -> None:
        if homes is None:
            homes, explicit = default_homes(env)
        else:
            explicit = True
        self.homes, self.explicit = homes, explicit

    def _dirs(self) -> tuple[list[Path], list[Path]]:
        """Homes with rollouts, and directories of saved ``codex exec --json`` output (a
        ``CODEX_HOME`` entry with neither ``sessions/`` nor ``archived_sessions/``)."""
        homes: list[Path] = []
        execs: list[Path] = []
        seen: set[str] = set()
        for h in self.homes:
            real = os.path.realpath(h)
            if real in seen:
                continue
            seen.add(real)
            if (h / "sessions").is_dir() or (h / "archived_sessions").is_dir():
                homes.append(h)
            elif self.explicit and h.is_dir():
                execs.append(h)
        if self.explicit and not homes and not execs:
            names = ", ".join(str(h) for h in self.homes)
            raise SourceError(NAME, f"CODEX_HOME names no existing directory: {names}")
        return homes, execs

    def existing_homes(self) -> list[Path]:
        return self._dirs()[0]

    def files(self) -> list[Path]:
        homes, execs = self._dirs()
        out: list[Path] = []
        for h in homes:
            out.extend(walk(h / "sessions", True, _is_rollout))
            out.extend(walk(h / "archived_sessions", False, _is_rollout))
        for d in execs:
            out.extend(walk(d, True, _is_exec_output))
        return out

    def accepts(self, path: Path) -> bool:
        if _is_rollout(path.name) and any(
            path.is_relative_to(h / "sessions") or path.parent == h / "archived_sessions" for h in self.homes
        ):
            return True
        return _is_exec_output(path.name) and any(path.is_relative_to(d) for d in self._dirs()[1])

    def parser(self, path: Path, state: str | None) -> _Parser:
        return _Parser(path, state)

    def watches(self) -> list[Watch]:
        homes, execs = self._dirs()
        out = [Watch(d, True, (".jsonl",)) for d in execs]
        for h in homes:
            if (h / "sessions").is_dir():
                out.append(Watch(h / "sessions", True, (".jsonl",)))
            if (h / "archived_sessions").is_dir():
                out.append(Watch(h / "archived_sessions", False, (".jsonl",)))
        return out

    def status(self) -> SourceStatus:
        try:
            homes_execs = self._dirs()
            homes, notes = homes_execs[0] + homes_execs[1], []
            files = len(self.files())
        except SourceError as exc:
            homes, notes, files = [], [str(exc)], 0
        return SourceStatus(NAME, bool(homes), True, [str(h) for h in (homes or self.homes)], files, notes)


def _build(settings: Settings) -> Codex:
    return Codex(env=settings.env)


SPECS = (
    SourceSpec(
        NAME,
        "tailed",
        _build,
        "Codex CLI rollouts (sessions/**/rollout-*.jsonl, archived_sessions/)",
        group="codex",
        settings=("CODEX_HOME",),
        order=30,
        provider="openai",
    ),
)
