"""Amp threads: ``<root>/threads/T-<uuid>.json``, one whole JSON document per thread.

Where: ``AMP_DATA_DIR`` (comma list) replaces the default ``~/.local/share/amp``.

Odd semantics (local-formats.md §5.3): Amp rewrites a thread's whole document on every turn,
so this is a ``files`` source (a changed thread is parsed again; the ledger's per-request
max-register makes the re-parse add only what is new). One request can be described twice:

* older threads: ``usageLedger.events[]`` (``tokens.input/output``, ``model``, ``credits``) with
  the cache split only on the assistant message it points to (``toMessageId``);
* current threads: the assistant ``messages[].usage`` itself (``inputTokens``, ``outputTokens``,
  ``cacheCreationInputTokens``, ``cacheReadInputTokens``).

Both views of one request share one key, ``amp:<threadId>:m<messageId>``, and merge field by
field: the event's input/output and the message's cache counts end up in one row, never added
twice. A ledger event that names no message is keyed by its own id (``amp:<threadId>:e<id>``).
Amp's ``credits`` are not dollars: costs are estimated from tokens (unknown for a model
without a price). Provider from the model name. Project: the thread's first workspace tree
(``env.initial.trees[0].uri``) when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import orjson

from bridge.record import Tokens, UsageRecord
from bridge.sources._agents import UNKNOWN_MODEL, count, iso_time, provider_for
from bridge.sources._files import Parsed, WholeFileSource, roots_from_env
from bridge.sources._registry import SourceSpec

if TYPE_CHECKING:
    from bridge.config import Settings

NAME = "amp"
ENV = "AMP_DATA_DIR"


def _project(doc: dict[str, Any]) -> str | None:
    env = doc.get("env")
    initial = env.get("initial") if isinstance(env, dict) else None
    trees = initial.get("trees") if isinstance(initial, dict) else None
    if isinstance(trees, list) and trees and isinstance(trees[0], dict):
        uri = trees[0].get("uri")
        if isinstance(uri, str) and uri:
            parsed = urlparse(uri)
            return unquote(parsed.path) if parsed.scheme == "file" else uri
    return None


def _model(value: Any) -> str:
    return value if isinstance(value, str) and value else UNKNOWN_MODEL


def parse_thread(path: Path, raw: bytes) -> Parsed:
    """Every request of one thread document (see the module docstring for the two views)."""
    out = Parsed()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        out.malformed += 1  # caught mid-rewrite: read again on the next change
        return out
    if not isinstance(doc, dict):
        out.malformed += 1
        return out
    tid = doc.get("id") if isinstance(doc.get("id"), str) and doc.get("id") else path.stem
    project = _project(doc)

    def rec(key: str, model: str, ts: Any, toks: Tokens, where: str) -> UsageRecord:
        return UsageRecord(
            source=NAME,
            provider=provider_for(model),
            model=model,
            timestamp=iso_time(ts, where),
            dedup_key=f"amp:{tid}:{key}",
            tokens=toks,
            session_id=str(tid),
            project=project,
        )

    messages = doc.get("messages") if isinstance(doc.get("messages"), list) else []
    for m in messages:  # type: ignore[union-attr]
        if not isinstance(m, dict) or m.get("role") != "assistant" or not isinstance(m.get("usage"), dict):
            continue
        u, mid = m["usage"], m.get("messageId")
        where = f"thread {tid} message {mid}"
        try:
            toks = Tokens(
                input=count(u, "inputTokens", where + " usage"),
                output=count(u, "outputTokens", where + " usage"),
                cache_read=count(u, "cacheReadInputTokens", where + " usage"),
                cache_creation=count(u, "cacheCreationInputTokens", where + " usage"),
            )
            if toks.total == 0:
                continue
            if mid is None:
                raise ValueError(f"{where}: usage without a messageId")
            ts = u.get("timestamp") or m.get("timestamp") or (m.get("meta") or {}).get("sentAt")
            out.records.append(rec(f"m{mid}", _model(u.get("model")), ts, toks, where))
        except (ValueError, TypeError, AttributeError) as exc:
            out.malformed += 1
            out.notes.append(f"skipped: {exc}")
    ledger = doc.get("usageLedger")
    events = ledger.get("events") if isinstance(ledger, dict) else None
    for e in events if isinstance(events, list) else []:
        if not isinstance(e, dict):
            out.malformed += 1
            continue
        eid, to = e.get("id"), e.get("toMessageId")
        where = f"thread {tid} ledger event {eid}"
        try:
            t = e.get("tokens")
            if not isinstance(t, dict):
                raise ValueError(f"{where}: no tokens object")
            toks = Tokens(input=count(t, "input", where + " tokens"), output=count(t, "output", where + " tokens"))
            if toks.total == 0:
                continue
            if to is not None:
                key = f"m{to}"  # the same request as the message's own usage
            elif eid is not None:
                key = f"e{eid}"
            else:
                raise ValueError(f"{where}: neither an id nor a toMessageId")
            out.records.append(rec(key, _model(e.get("model")), e.get("timestamp"), toks, where))
        except (ValueError, TypeError) as exc:
            out.malformed += 1
            out.notes.append(f"skipped: {exc}")
    return out


class Amp(WholeFileSource):
    """The Amp threads source."""

    name = NAME
    env_var = ENV
    suffixes = (".json",)

    def files(self) -> list[Path]:
        out: list[Path] = []
        for root in self.existing_roots():
            threads = root / "threads"
            if threads.is_dir():
                out.extend(sorted(p for p in threads.iterdir() if p.name.startswith("T-") and p.suffix == ".json"))
        return out

    def relevant(self, path: Path) -> bool:
        return path.name.startswith("T-") and super().relevant(path)

    def parse(self, path: Path) -> Parsed:
        return parse_thread(path, path.read_bytes())


def _build(settings: Settings) -> Amp:
    roots, explicit = roots_from_env(settings.env, ENV, ".local/share/amp")
    return Amp(roots, explicit)


SPECS = (SourceSpec(NAME, "files", _build, "Amp threads (threads/T-*.json)", settings=(ENV,), order=40),)
