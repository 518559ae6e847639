"""OpenClaw's gateway log: run results with usage, a fallback for sessions without transcripts.

Where (local-formats.md §4.2): ``<tmp>/openclaw/openclaw-YYYY-MM-DD.log`` and its numbered
rotations ``openclaw-YYYY-MM-DD.<n>.log`` (``<tmp>`` is ``TMPDIR``, else ``/tmp``), the file
``logging.file`` of ``<root>/openclaw.json`` names instead (and its numbered rotations), and
``<root>/logs/gateway.log`` (macOS launchd stdout) and ``<root>/logs/openclaw.log``.

What counts: JSON lines whose record carries a run result with ``meta.agentMeta.usage``
(early-2026 builds), at the top level or as a tslog positional argument (``"0"``, ``"1"``, …,
an object or a JSON string, possibly after a text prefix). The record's time is tslog's
``_meta.date`` (else ``time``/``timestamp``). Newer builds write no usage to the log at all
(the ``model.usage`` diagnostic goes only to the OTel plugin): their logs add nothing.

Identity: ``openclaw-log:<sessionId>:<digest>`` with the digest of the run id (else the record's
time) and the usage object, so a rotated or copied log line is the same row (a max-register
merge adds nothing). A run result without a session id cannot be matched to a transcript and is
skipped (counted as a skipped line), never added on top. The ledger applies the fallback rule
(``Ledger.commit(fallback=LOG_PREFIX)``): a session with transcript rows keeps no log rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bridge.record import CostOrigin, UsageRecord
from bridge.sources._base import log
from bridge.sources._openclaw_usage import cost_of, provider_for, tokens_of
from bridge.sources._stateful import candidate_lines, note_malformed
from bridge.sources._tail import ChunkResult

LOG_PREFIX = "openclaw-log:"
_NEEDLE = (b"agentMeta",)
_DATED = re.compile(r"^openclaw-\d{4}-\d{2}-\d{2}(\.\d+)?\.log$")
_POSITIONAL = tuple(str(i) for i in range(10))


def _rotations(path: Path) -> list[Path]:
    """``path`` and its numbered rotations (``name.<n>.ext``) that exist, sorted."""
    stem, suffix = path.stem, path.suffix
    pattern = re.compile(rf"^{re.escape(stem)}(\.\d+)?{re.escape(suffix)}$")
    try:
        return sorted(p for p in path.parent.iterdir() if pattern.match(p.name) and p.is_file())
    except OSError:
        return []


def configured_log(root: Path) -> tuple[Path | None, str | None]:
    """``logging.file`` of ``<root>/openclaw.json``; a note when the file cannot be read."""
    conf = root / "openclaw.json"
    try:
        data = json.loads(conf.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        # JSON5 (comments, trailing commas) is valid for OpenClaw: only the default places are read.
        return None, f"{conf}: logging.file not read ({type(exc).__name__}); default log places only"
    logging_ = data.get("logging") if isinstance(data, dict) else None
    file = logging_.get("file") if isinstance(logging_, dict) else None
    if not isinstance(file, str) or not file.strip():
        return None, None
    path = Path(file.strip()).expanduser()
    return (path if path.is_absolute() else root / path), None


def log_dirs(roots: list[Path], tmp: Path | None) -> list[Path]:
    """Directories that may hold gateway logs (for file events)."""
    out = [r / "logs" for r in roots]
    out += [p.parent for r in roots if (p := configured_log(r)[0]) is not None]
    if tmp is not None:
        out.append(tmp / "openclaw")
    return out


def log_files(roots: list[Path], tmp: Path | None) -> tuple[list[Path], list[str]]:
    """Every gateway log file to read, and notes on configuration that could not be read."""
    found: list[Path] = []
    notes: list[str] = []
    for root in roots:
        found += _rotations(root / "logs" / "gateway.log") + _rotations(root / "logs" / "openclaw.log")
        path, note = configured_log(root)
        if note:
            notes.append(note)
        if path is not None:
            found += _rotations(path)
    if tmp is not None:
        with contextlib.suppress(OSError):  # no log directory yet
            found += sorted(p for p in (tmp / "openclaw").iterdir() if _DATED.match(p.name) and p.is_file())
    unique: dict[str, Path] = {}
    for p in found:
        unique.setdefault(str(p.resolve()), p)
    return sorted(unique.values()), notes


def _run_meta(value: Any) -> dict[str, Any] | None:
    """The ``agentMeta`` object of a run result (``{meta: {agentMeta: …}}`` or ``{agentMeta: …}``)."""
    if isinstance(value, str):
        brace = value.find("{")
        if brace < 0:
            return None
        try:
            value = orjson.loads(value[brace:])
        except orjson.JSONDecodeError:
            return None
    if not isinstance(value, dict):
        return None
    meta = value.get("meta")
    agent = meta.get("agentMeta") if isinstance(meta, dict) else value.get("agentMeta")
    return agent if isinstance(agent, dict) and isinstance(agent.get("usage"), dict) else None


def _find_run(obj: dict[str, Any]) -> dict[str, Any] | None:
    found = _run_meta(obj)
    for key in _POSITIONAL:
        if found is None and key in obj:
            found = _run_meta(obj[key])
    return found


def _time(obj: dict[str, Any]) -> tuple[datetime, str]:
    meta = obj.get("_meta")
    raw = meta.get("date") if isinstance(meta, dict) else None
    for key in ("time", "timestamp", "ts"):
        if raw is None:
            raw = obj.get(key)
    if isinstance(raw, str):
        ts = datetime.fromisoformat(raw)
        if ts.tzinfo is None:
            raise ValueError(f"log time without timezone: {raw!r}")
        return ts, raw
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0:
        return datetime.fromtimestamp(raw / 1000, UTC), str(raw)
    raise ValueError("run result without a time")


def record_of(obj: Any) -> UsageRecord | None:
    """The usage record of one log line's JSON, None when it holds no run result with usage."""
    if not isinstance(obj, dict):
        return None
    agent = _find_run(obj)
    if agent is None:
        return None
    usage: dict[str, Any] = agent["usage"]
    tokens = tokens_of(usage)
    if tokens.total == 0:
        return None
    session = agent.get("sessionId")
    if not isinstance(session, str) or not session.strip():
        raise ValueError("run result without a session id (cannot be matched to a transcript)")
    ts, ts_raw = _time(obj)
    run = agent.get("runId") or obj.get("runId") or ts_raw
    model = agent.get("model") if isinstance(agent.get("model"), str) and agent.get("model") else "unknown"
    identity = f"{run}|{json.dumps(usage, sort_keys=True, separators=(',', ':'))}"
    digest = hashlib.sha1(identity.encode(), usedforsecurity=False).hexdigest()[:20]
    cost = cost_of(usage)
    return UsageRecord(
        "openclaw",
        provider_for(agent.get("provider"), str(model)),
        str(model),
        ts,
        f"{LOG_PREFIX}{session.strip()}:{digest}",
        tokens,
        cost,
        CostOrigin.UNKNOWN if cost is None else CostOrigin.REPORTED,
        session.strip(),
    )


class LogParser:
    """Parses gateway log lines; keeps no state from line to line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def state(self) -> str:
        return "{}"

    def parse(self, buf: bytes) -> ChunkResult:
        out = ChunkResult(records=[])
        for start, end in candidate_lines(buf, _NEEDLE):
            line = buf[start:end].strip()
            if not line.startswith(b"{"):
                continue  # a plain-text console line (launchd stdout): nothing to parse
            try:
                rec = record_of(orjson.loads(line))
            except (orjson.JSONDecodeError, ValueError, TypeError, OverflowError) as exc:
                log.debug("%s: skipped gateway log line at chunk byte %d: %s", self.path, start, exc)
                if out.malformed_reason is None:
                    out.malformed_reason = str(exc)[:200]
                note_malformed(out, start)
                continue
            if rec is not None:
                out.records.append(rec)
        return out
