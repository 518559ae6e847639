"""Which session and project a Claude Code transcript file belongs to.

The session comes from the path: ``projects/<slug>/<session>.jsonl``, or
``projects/<slug>/<session>/subagents/agent-*.jsonl`` for the session's subagents. The project is
the session's starting working directory: the first ``cwd`` written in the session's own file.
It stays the same when the user changes directory later (later lines carry the new ``cwd``), and
a subagent file shares it with its session. A subagent whose session file is gone falls back to
its own first ``cwd``; the folder slug (lossy: ``/``, ``.`` and spaces all become ``-``) is the
last resort.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import orjson

# A raw ``"cwd":"`` is always an object key: inside a JSON string every quote is escaped.
_CWD = re.compile(rb'"cwd":("(?:[^"\\]|\\.)*")')
_FIRST_READ = 16 * 1024  # the first cwd is nearly always within the first lines
_MAX_READ = 256 * 1024  # a huge first line (a pasted file) before it: look a little further
_MAX_KNOWN = 10_000
_known: dict[str, str] = {}  # file → its first cwd (only found ones: a new file may lack it yet)


@dataclass(frozen=True, slots=True)
class FileContext:
    session_id: str | None
    slug: str | None  # the project folder's name: the last resort for the project
    session_file: str | None = None  # the session's own file (itself for a top-level file)
    start_cwd: str | None = None  # the session's starting cwd, once looked up


def file_context(path: Path) -> FileContext:
    """Session, folder and session file from the path alone (no I/O)."""
    parts = path.parts
    try:
        i = len(parts) - 1 - parts[::-1].index("projects")
    except ValueError:
        return FileContext(None, None)
    rel = parts[i + 1 :]
    if len(rel) < 2:
        return FileContext(None, None)
    if len(rel) == 2:
        return FileContext(Path(rel[1]).stem, rel[0], str(path))
    return FileContext(rel[1], rel[0], str(Path(*parts[: i + 2]) / f"{rel[1]}.jsonl"))


def with_start_cwd(ctx: FileContext, path: str) -> FileContext:
    """``ctx`` with the session's starting cwd (from the session file, else from ``path``)."""
    candidates = [c for c in (ctx.session_file, path) if c]
    for candidate in dict.fromkeys(candidates):
        cwd = _known.get(candidate)
        if cwd is None:
            cwd = _first_cwd(candidate)
            if cwd is None:
                continue
            if len(_known) >= _MAX_KNOWN:
                _known.clear()
            _known[candidate] = cwd
        return FileContext(ctx.session_id, ctx.slug, ctx.session_file, cwd)
    return ctx


def _first_cwd(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:  # noqa: PTH123 - plain open: also runs in worker processes
            buf = fh.read(_FIRST_READ)
            found = _CWD.search(buf)
            if found is None and len(buf) == _FIRST_READ:
                buf += fh.read(_MAX_READ - _FIRST_READ)
                found = _CWD.search(buf)
    except OSError:
        return None  # gone or unreadable: the caller falls back
    if found is None:
        return None
    try:
        value = orjson.loads(found.group(1))
    except orjson.JSONDecodeError:
        return None
    return value if type(value) is str and value else None
