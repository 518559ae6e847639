"""Gemini CLI chats: ``<root>/<projectHash>/chats/**/*.jsonl`` and legacy ``session-*.json``.

Where: ``GEMINI_DATA_DIR`` (comma list) replaces the default ``~/.gemini/tmp``; every ``*.json``
and ``*.jsonl`` below a root is read (subagent chats live in ``chats/<parentSessionId>/``).

Odd semantics (local-formats.md §5.1), all settled by one rule: a message counts once, by its
``id``, whatever file or line restates it (the ledger keeps the field-wise max per id):

* A message is re-appended whenever it changes (its tokens arrive later, tool calls are
  added): the last (most complete) record per id wins, earlier ones add nothing.
* ``{"$set": {"messages": [...]}}`` restates history after a sync: already-seen ids add nothing.
* ``{"$rewindTo": id}`` removes later messages from the chat, but their tokens were spent: rows
  already counted stay.
* A legacy ``session-X.json`` migrated on resume into ``session-X.jsonl`` keeps its ``.json``:
  the same ids in both files count once.
* The JSONL file is append-only but restates whole messages, so this is a ``files`` source: a
  changed file is re-parsed from the start (a partial last line is left for the next change).

Tokens: ``input`` (promptTokenCount) includes cached tokens when ``total == input + output +
thoughts + tool``; cached tokens are then taken out of input and counted as ``cacheRead``.
Thoughts are priced as output; tool-use prompt tokens are input. Provider ``google`` (or the
provider the model name points to). A message without a model is recorded as model
``unknown`` with an unknown cost. Project: the session's first directory when the metadata
lists one, else its project hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bridge.record import Tokens, UsageRecord
from bridge.sources._agents import UNKNOWN_MODEL, count, iso_time, provider_for
from bridge.sources._files import Parsed, WholeFileSource, roots_from_env, walk
from bridge.sources._registry import SourceSpec

if TYPE_CHECKING:
    from bridge.config import Settings

NAME = "gemini_cli"
ENV = "GEMINI_DATA_DIR"


def tokens_of(t: dict[str, Any]) -> Tokens:
    """Gemini's ``tokens`` object → bridge token types (see the module docstring)."""
    where = "tokens"
    inp, out = count(t, "input", where), count(t, "output", where)
    cached, thoughts, tool = count(t, "cached", where), count(t, "thoughts", where), count(t, "tool", where)
    total = count(t, "total", where)
    if total == inp + out + thoughts + tool and cached <= inp:
        inp -= cached  # promptTokenCount included the cached part
    return Tokens(input=inp + tool, output=out + thoughts, cache_read=cached)


class _Session:
    """What a chat file says about its session (from the metadata line or the document)."""

    def __init__(self, path: Path) -> None:
        self.session_id: str | None = None
        self.project: str | None = path.parent.parent.name if path.parent.name == "chats" else None

    def update(self, meta: dict[str, Any]) -> None:
        sid, proj, dirs = meta.get("sessionId"), meta.get("projectHash"), meta.get("directories")
        if isinstance(sid, str) and sid:
            self.session_id = sid
        if isinstance(dirs, list) and dirs and isinstance(dirs[0], str) and dirs[0]:
            self.project = dirs[0]
        elif isinstance(proj, str) and proj and self.project is None:
            self.project = proj


def _record(msg: dict[str, Any], session: _Session) -> UsageRecord | None:
    """One message → a record, None when it carries no tokens; ``ValueError`` when malformed."""
    tokens = msg.get("tokens")
    if tokens is None:
        return None
    if not isinstance(tokens, dict):
        raise ValueError(f"tokens is not an object: {tokens!r}")
    toks = tokens_of(tokens)
    if toks.total == 0:
        return None
    mid = msg.get("id")
    if not isinstance(mid, str) or not mid:
        raise ValueError("message with tokens has no id")
    model = msg.get("model")
    model = model if isinstance(model, str) and model else UNKNOWN_MODEL
    return UsageRecord(
        source=NAME,
        provider=provider_for(model, "google" if model == UNKNOWN_MODEL else None),
        model=model,
        timestamp=iso_time(msg.get("timestamp"), f"message {mid}"),
        dedup_key=f"gemini:{mid}",
        tokens=toks,
        session_id=session.session_id,
        project=session.project,
    )


def _messages(obj: dict[str, Any]) -> list[Any]:
    """The messages one JSONL record holds: itself, or a ``$set``'s restated list."""
    patch = obj.get("$set")
    if isinstance(patch, dict):
        msgs = patch.get("messages")
        return msgs if isinstance(msgs, list) else []
    if "id" in obj and ("tokens" in obj or "type" in obj):
        return [obj]
    return []


def parse_chat(path: Path, raw: bytes) -> Parsed:
    """Every message with tokens in one chat file (JSONL or a legacy JSON document)."""
    out = Parsed()
    session = _Session(path)
    entries: list[Any] = []
    if path.suffix == ".json":
        # Other JSON files live under the root too (logs, checkpoints): only a document with a
        # messages list is a chat; only a session-* file that does not parse is reported.
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if path.name.startswith("session-"):
                out.malformed += 1  # a rewrite caught half-written: read again on its next change
            return out
        if not isinstance(doc, dict):
            return out
        session.update(doc)
        entries = doc.get("messages") if isinstance(doc.get("messages"), list) else []  # type: ignore[assignment]
    else:
        complete = raw[: raw.rfind(b"\n") + 1]  # a partial last line waits for the next change
        for line in complete.splitlines():
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                out.malformed += 1
                continue
            if not isinstance(obj, dict):
                out.malformed += 1
                continue
            if "sessionId" in obj and "id" not in obj:
                session.update(obj)
                continue
            patch = obj.get("$set")
            if isinstance(patch, dict):
                session.update(patch)
            entries.extend(_messages(obj))
    for msg in entries:
        if not isinstance(msg, dict):
            out.malformed += 1
            continue
        try:
            rec = _record(msg, session)
        except ValueError as exc:
            out.malformed += 1
            out.notes.append(f"message skipped: {exc}")
            continue
        if rec is not None:
            out.records.append(rec)
    return out


class GeminiCli(WholeFileSource):
    """The Gemini CLI chats source."""

    name = NAME
    env_var = ENV
    suffixes = (".jsonl", ".json")

    def files(self) -> list[Path]:
        return walk(self.existing_roots(), self.suffixes)

    def order(self, files: list[Path]) -> list[Path]:
        # Legacy documents first: a migrated .jsonl then restates their messages (adds nothing)
        # and keeps the first-seen identity of each message.
        return sorted(files, key=lambda p: (p.suffix != ".json", str(p)))

    def parse(self, path: Path) -> Parsed:
        return parse_chat(path, path.read_bytes())


def _build(settings: Settings) -> GeminiCli:
    roots, explicit = roots_from_env(settings.env, ENV, ".gemini/tmp")
    return GeminiCli(roots, explicit)


SPECS = (
    SourceSpec(
        NAME,
        "files",
        _build,
        "Gemini CLI chats (~/.gemini/tmp/*/chats/*.jsonl, legacy session-*.json)",
        settings=(ENV,),
        order=40,
        provider="google",
    ),
)
