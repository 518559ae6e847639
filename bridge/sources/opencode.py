"""OpenCode messages: the SQLite ``opencode*.db`` message table and legacy per-message JSON.

Where: ``OPENCODE_DATA_DIR`` (comma list) replaces the default ``~/.local/share/opencode``.
Current: ``<root>/opencode.db`` or ``opencode-*.db``, table ``message(id, session_id, data)``.
Legacy: ``<root>/storage/message/<sessionID>/msg_<id>.json``, one document per message.

Odd semantics (local-formats.md §5.2):

* One record per message id (``opencode:<id>``), whatever holds it: a database row and a legacy
  document of the same message count once, and the row wins (a legacy document whose id is in
  a database is not read at all; one counted before its row existed merges with the row,
  field by field, so the pair still counts once).
* Rows and documents are mutable (a message's tokens fill in as it completes): a changed
  database (its ``-wal`` file included) or document is read again, and the ledger's per-message
  max-register adds only the increase. This is a ``files`` source.
* ``cost`` is the agent's own figure when > 0 (kept as reported); 0 means "not computed", so the
  cost is then estimated from tokens, or unknown for a model without a price, never $0.
* ``reasoning`` tokens are priced as output; ``cache.read`` / ``cache.write`` are cache reads
  and writes. Provider: ``providerID`` (``google-vertex`` → google, ...), else from the model.
* Project: the message's ``path.root`` (the git root), else ``path.cwd``, else the session's
  ``directory``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bridge.ledger import CostFunction, Ledger
from bridge.record import CostOrigin, Tokens, UsageRecord
from bridge.sources._agents import UNKNOWN_MODEL, count, epoch_ms_time, positive_cost, provider_for
from bridge.sources._base import ScanStats
from bridge.sources._files import Parsed, Stamp, WholeFileSource, roots_from_env, stat_stamp, walk
from bridge.sources._registry import SourceSpec

if TYPE_CHECKING:
    from collections.abc import Collection
    from datetime import datetime

    from bridge.config import Settings
    from bridge.sources._base import ProgressHook

NAME = "opencode"
ENV = "OPENCODE_DATA_DIR"


def _is_db(path: Path) -> bool:
    n = path.name
    return n == "opencode.db" or (n.startswith("opencode-") and n.endswith(".db"))


def _is_legacy(path: Path) -> bool:
    return path.suffix == ".json" and path.name.startswith("msg_") and "message" in path.parts


def record_of(
    data: dict[str, Any], msg_id: str | None = None, session: str | None = None, project: str | None = None
) -> UsageRecord | None:
    """One message → a record; None for a message without tokens (a user message, one still
    starting). ``ValueError`` names what is malformed."""
    if data.get("role", "assistant") != "assistant":
        return None
    tokens = data.get("tokens")
    if not isinstance(tokens, dict):
        return None
    mid = msg_id or data.get("id")
    if not isinstance(mid, str) or not mid:
        raise ValueError("message without an id")
    cache = tokens.get("cache")
    cache = cache if isinstance(cache, dict) else {}
    where = f"message {mid}: tokens"
    toks = Tokens(
        input=count(tokens, "input", where),
        output=count(tokens, "output", where) + count(tokens, "reasoning", where),
        cache_read=count(cache, "read", where + ".cache"),
        cache_creation=count(cache, "write", where + ".cache"),
    )
    cost = positive_cost(data.get("cost"))
    if toks.total == 0 and cost is None:
        return None
    model = data.get("modelID")
    model = model if isinstance(model, str) and model else UNKNOWN_MODEL
    declared = data.get("providerID")
    t = data.get("time")
    created = t.get("created") if isinstance(t, dict) else None
    sid = data.get("sessionID")
    return UsageRecord(
        source=NAME,
        provider=provider_for(model, declared if isinstance(declared, str) else None),
        model=model,
        timestamp=epoch_ms_time(created, f"message {mid}: time.created"),
        dedup_key=f"opencode:{mid}",
        tokens=toks,
        cost=cost,
        cost_origin=CostOrigin.REPORTED if cost is not None else CostOrigin.UNKNOWN,
        session_id=sid if isinstance(sid, str) and sid else session,
        project=_project(data) or project,
    )


def _project(data: dict[str, Any]) -> str | None:
    p = data.get("path")
    if isinstance(p, dict):
        for key in ("root", "cwd"):
            v = p.get(key)
            if isinstance(v, str) and v and v != "/":
                return v
    return None


def _connect(path: Path) -> sqlite3.Connection:
    # Read-only: OpenCode owns the file; a WAL reader still sees committed rows.
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def _parse_db(path: Path, known: dict[str, bytes], fresh: dict[str, bytes]) -> Parsed:
    """Records of the rows that changed since ``known`` (row id → digest of its data, as
    committed by this process); ``fresh`` receives the digests of the rows read now."""
    out = Parsed()
    try:
        db = _connect(path)
        try:
            dirs: dict[str, str] = {}
            with contextlib.suppress(sqlite3.Error):  # an older schema without session directories
                dirs = {str(r[0]): str(r[1]) for r in db.execute("SELECT id, directory FROM session") if r[1]}
            rows = db.execute("SELECT id, session_id, data FROM message").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        # Busy or corrupt: not stored as read, so the next pass tries again.
        raise OSError(f"cannot read the OpenCode database: {exc}") from exc
    import hashlib  # here: its OpenSSL start-up is 2 ms of every one-off sync

    for mid, sid, raw in rows:
        blob = raw.encode() if isinstance(raw, str) else bytes(raw)
        digest = hashlib.blake2b(blob + f"|{sid}".encode(), digest_size=16).digest()
        if known.get(str(mid)) == digest:
            continue  # unchanged since this process committed it: nothing to merge again
        fresh[str(mid)] = digest
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("data is not a JSON object")
            session = str(sid) if sid else None
            rec = record_of(data, str(mid), session, dirs.get(session or ""))
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            out.malformed += 1
            out.notes.append(f"row {mid} skipped: {exc}")
            continue
        if rec is not None:
            out.records.append(rec)
    return out


def _db_ids(path: Path) -> set[str]:
    try:
        db = _connect(path)
        try:
            return {str(r[0]) for r in db.execute("SELECT id FROM message")}
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise OSError(f"cannot read the OpenCode database {path}: {exc}") from exc


class OpenCode(WholeFileSource):
    """The OpenCode source."""

    name = NAME
    env_var = ENV
    suffixes = (".db", ".json", ".db-wal")

    def __init__(self, roots: list[Path], explicit: bool) -> None:
        super().__init__(roots, explicit)
        self._in_db: set[str] | None = None
        self._session_dirs: dict[str, str | None] = {}
        # A database holds every session: in a long-running daemon, rows already committed are
        # not parsed and merged again on each change (per database, in memory only).
        self._digests: dict[str, dict[str, bytes]] = {}
        self._fresh: dict[str, dict[str, bytes]] = {}

    def files(self) -> list[Path]:
        out: list[Path] = []
        for root in self.existing_roots():
            try:
                out.extend(sorted(p for p in root.iterdir() if _is_db(p)))
            except OSError:
                continue
        legacy = [r / "storage" / "message" for r in self.existing_roots()]
        return out + [p for p in walk(legacy, (".json",)) if _is_legacy(p)]

    def relevant(self, path: Path) -> bool:
        if path.name.endswith("-wal"):
            path = path.with_name(path.name[: -len("-wal")])  # a WAL write changes its database
        return (_is_db(path) or _is_legacy(path)) and any(path.is_relative_to(r) for r in self.roots)

    def order(self, files: list[Path]) -> list[Path]:
        files = [f.with_name(f.name[:-4]) if f.name.endswith("-wal") else f for f in files]
        return sorted(set(files), key=lambda p: (not _is_db(p), str(p)))  # databases first: rows win

    def stamp(self, path: Path) -> Stamp:
        st = stat_stamp(path)
        if not _is_db(path):
            return st
        try:  # rows committed to the WAL leave the main file untouched
            wal = stat_stamp(path.with_name(path.name + "-wal"))
        except FileNotFoundError:
            return st
        return Stamp(st.inode, st.size + wal.size, max(st.mtime_ns, wal.mtime_ns))

    def scan(
        self,
        ledger: Ledger,
        pricer: CostFunction,
        since: datetime | None = None,
        progress: ProgressHook | None = None,
        paths: Collection[Path] | None = None,
    ) -> ScanStats:
        self._in_db = None  # databases may have changed since the last pass
        return super().scan(ledger, pricer, since, progress, paths)

    def parse(self, path: Path) -> Parsed:
        if _is_db(path):
            fresh: dict[str, bytes] = {}
            parsed = _parse_db(path, self._digests.get(str(path), {}), fresh)
            self._fresh[str(path)] = fresh
            return parsed
        if self._in_db is None:
            self._in_db = set()
            for f in self.files():
                if _is_db(f):
                    self._in_db |= _db_ids(f)
        out = Parsed()
        try:
            data = orjson.loads(path.read_bytes())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            mid = data.get("id") or path.stem
            if str(mid) in self._in_db:
                return out  # the database's row is the message's record
            sid = data.get("sessionID")
            rec = record_of(data, str(mid), None, self._legacy_dir(path, sid if isinstance(sid, str) else None))
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            out.malformed += 1
            out.notes.append(f"skipped: {exc}")
            return out
        if rec is not None:
            out.records.append(rec)
        return out

    def committed(self, path: Path) -> None:
        fresh = self._fresh.pop(str(path), None)
        if fresh:
            self._digests.setdefault(str(path), {}).update(fresh)

    def _legacy_dir(self, path: Path, session: str | None) -> str | None:
        """The session's ``directory`` from ``storage/session/<projectHash>/<sessionID>.json``."""
        if not session:
            return None
        if session not in self._session_dirs:
            found: str | None = None
            storage = path.parent.parent.parent
            for doc in sorted((storage / "session").glob(f"*/{session}.json")):
                try:
                    d = orjson.loads(doc.read_bytes())
                except (OSError, orjson.JSONDecodeError):
                    continue
                if isinstance(d, dict) and isinstance(d.get("directory"), str):
                    found = d["directory"]
                    break
            self._session_dirs[session] = found
        return self._session_dirs[session]


def _build(settings: Settings) -> OpenCode:
    roots, explicit = roots_from_env(settings.env, ENV, ".local/share/opencode")
    return OpenCode(roots, explicit)


SPECS = (
    SourceSpec(
        NAME,
        "files",
        _build,
        "OpenCode messages (opencode*.db message table, legacy storage/message/**/*.json)",
        settings=(ENV,),
        order=40,
    ),
)
