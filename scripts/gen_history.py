#!/usr/bin/env python3
"""Generate a synthetic Claude Code history (``projects/**/*.jsonl``) and its exact ground truth.

Usage::

    python scripts/gen_history.py --out DIR --size 1GB [--seed 42] [--days 60] [--start 2026-01-01]
    python scripts/gen_history.py append --out DIR --lines 1000 [--to FILE] [--seed 7]
    python scripts/gen_history.py --out DIR --append-lines 1000 [--to FILE]      # same as ``append``

The files are shaped like real Claude Code transcripts (see shared/spec/local-formats.md §1): one JSON
object per line, ``user``/``assistant``/``system``/``summary``/``file-history-snapshot`` records, nested
``<sessionId>/subagents/agent-<id>.jsonl`` sidechain files. Most bytes are *not* usage: user lines carry
large ``tool_result`` payloads (file dumps, command output), as in real transcripts.

Traps, each counted in ``truth.json["traps"]``:

- streaming duplicates: 1-4 lines per API response sharing ``message.id`` + ``requestId``; earlier lines carry
  a partial ``output_tokens`` and ``stop_reason: null``, the last one the final count and a ``stop_reason``;
- resumed sessions: a new session file that starts with a verbatim copy (only ``sessionId`` changed) of the
  first lines of an earlier session of the same project;
- sidechain replays: a subagent-file line with the ``message.id`` of a parent message, a *new* ``requestId``
  and ``isSidechain: true`` (counts once, as the parent);
- ordinary sidechain requests (subagent work: billed usage, counted);
- ``<synthetic>`` zero-usage lines (no ``requestId``, UUID ``message.id``);
- malformed lines: JSON truncated mid-line, mid-file (some are assistant lines whose ``usage`` is complete
  in the truncated text — they must not count);
- old ``version: 1.0.x`` lines with ``costUSD`` (no ``cache_creation`` split);
- decoys: user lines whose ``toolUseResult`` holds a real ``"usage":{`` object (Task results) and tool
  output text that contains transcript-like ``{"usage":{`` snippets;
- an unknown model name (``claude-experimental-x``) in a tiny share.

``truth.json`` is computed from what the generator intended to write — every unique request once, with its
final usage — never by parsing the files back. Days are UTC. ``cacheCreation`` = 5m + 1h cache writes (equal to
``cache_creation_input_tokens`` on every line); ``cacheCreation1h`` is the 1-hour part.

Memory is constant in the corpus size: files are written as they are generated; only the per-(day, model)
totals and a bounded copy of the previous session's first lines (for the resume trap) are kept.
Sizes use decimal units (``1GB`` = 10**9 bytes); ``KiB``/``MiB``/``GiB`` are binary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO

GENERATOR_VERSION = 1

SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-1-20250805"
HAIKU = "claude-haiku-4-5-20251001"
UNKNOWN_MODEL = "claude-experimental-x"
OLD_MODELS = ("claude-sonnet-4-20250514", "claude-opus-4-20250514")
# Rough $/MTok (input, output) used only to write plausible ``costUSD`` values on old lines.
_OLD_PRICES = {"claude-sonnet-4-20250514": (3.0, 15.0), "claude-opus-4-20250514": (15.0, 75.0)}

VERSIONS = ("2.0.28", "2.0.37", "2.0.55", "2.1.12", "2.1.40")
OLD_VERSIONS = ("1.0.3", "1.0.6", "1.0.8")
PROJECT_DIRS = (
    "/home/dev/app",
    "/home/dev/work/api-server",
    "/home/dev/work/web.frontend",
    "/home/dev/src/data pipeline",
    "/home/dev/oss/tokenizer-rs",
    "/home/dev/work/infra",
    "/home/dev/notes",
    "/srv/projects/ml.training",
)
BRANCHES = ("main", "main", "main", "develop", "feature/login", "fix/flaky-tests", "")
TOOLS = ("Read", "Bash", "Grep", "Edit", "Glob", "Write", "WebFetch")

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_SLUG_RE = re.compile(r"[/. ~]")

TOKEN_FIELDS = ("input", "output", "cacheRead", "cacheCreation", "cacheCreation1h", "requests")
# Per UTC hour (``YYYY-MM-DDTHH``), so totals can be re-bucketed into any timezone with whole-hour offsets.
HOURLY_FIELDS = ("input", "output", "cacheRead", "cacheCreation", "requests")


def parse_size(text: str) -> int:
    """``50MB`` -> 50_000_000; ``1GiB`` -> 2**30; plain numbers are bytes."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?i?B?)\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (examples: 50MB, 1GB, 512KiB)")
    num = float(m.group(1))
    unit = m.group(2).upper().rstrip("B")
    scale = {
        "": 1,
        "K": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
        "KI": 2**10,
        "MI": 2**20,
        "GI": 2**30,
        "TI": 2**40,
    }[unit]
    return int(num * scale)


def slug_for(cwd: str) -> str:
    return _SLUG_RE.sub("-", cwd)


def iso_ms(ms: int) -> str:
    t = time.gmtime(ms // 1000)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ms % 1000:03d}Z"
    )


def day_of(ms: int) -> str:
    t = time.gmtime(ms // 1000)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"


def parse_iso_ms(ts: str) -> int:
    dt = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def dumps(obj: Any) -> bytes:
    # Claude Code writes compact JSON with raw UTF-8 (JSON.stringify).
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


# --------------------------------------------------------------------------------------------- truth


@dataclass
class Truth:
    """Exact totals of unique requests, per UTC day and model, plus trap counters."""

    days: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    hours: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    traps: dict[str, int] = field(default_factory=dict)
    malformed_by_file: dict[str, int] = field(default_factory=dict)
    reported_cost_micro: int = 0  # sum of costUSD on old lines, in 1e-9 USD (exact: values have 9 decimals)

    def add_request(self, ms: int, model: str, usage: dict[str, Any]) -> None:
        row = self.days.setdefault(day_of(ms), {}).setdefault(model, dict.fromkeys(TOKEN_FIELDS, 0))
        cc = usage.get("cache_creation")
        one_h = cc["ephemeral_1h_input_tokens"] if cc else 0
        creation = (cc["ephemeral_5m_input_tokens"] + one_h) if cc else usage["cache_creation_input_tokens"]
        row["input"] += usage["input_tokens"]
        row["output"] += usage["output_tokens"]
        row["cacheRead"] += usage["cache_read_input_tokens"]
        row["cacheCreation"] += creation
        row["cacheCreation1h"] += one_h
        row["requests"] += 1
        hour = self.hours.setdefault(iso_ms(ms)[:13], {}).setdefault(model, [0] * len(HOURLY_FIELDS))
        for i, v in enumerate(
            (usage["input_tokens"], usage["output_tokens"], usage["cache_read_input_tokens"], creation, 1)
        ):
            hour[i] += v

    def bump(self, name: str, n: int = 1) -> None:
        self.traps[name] = self.traps.get(name, 0) + n

    def to_json(self, meta: dict[str, Any]) -> dict[str, Any]:
        totals = dict.fromkeys(TOKEN_FIELDS, 0)
        models: dict[str, dict[str, int]] = {}
        daily: dict[str, Any] = {}
        for d in sorted(self.days):
            day_tot = dict.fromkeys(TOKEN_FIELDS, 0)
            for model, row in sorted(self.days[d].items()):
                mt = models.setdefault(model, dict.fromkeys(TOKEN_FIELDS, 0))
                for k in TOKEN_FIELDS:
                    day_tot[k] += row[k]
                    mt[k] += row[k]
                    totals[k] += row[k]
            day_tot["totalTokens"] = _total(day_tot)
            daily[d] = {
                "totals": day_tot,
                "models": {m: {**r, "totalTokens": _total(r)} for m, r in sorted(self.days[d].items())},
            }
        totals["totalTokens"] = _total(totals)
        for mt in models.values():
            mt["totalTokens"] = _total(mt)
        return {
            **meta,
            "totals": totals,
            "models": dict(sorted(models.items())),
            "daily": daily,
            "hourlyFields": list(HOURLY_FIELDS),
            "hourly": {h: dict(sorted(self.hours[h].items())) for h in sorted(self.hours)},
            "reportedCostUSD": _fmt_nano(self.reported_cost_micro),
            "traps": dict(sorted(self.traps.items())),
            "malformedLines": sum(self.malformed_by_file.values()),
            "malformedByFile": dict(sorted(self.malformed_by_file.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Truth:
        t = cls()
        for d, day in data["daily"].items():
            t.days[d] = {m: {k: row[k] for k in TOKEN_FIELDS} for m, row in day["models"].items()}
        t.hours = {h: {m: list(v) for m, v in row.items()} for h, row in data["hourly"].items()}
        t.traps = dict(data["traps"])
        t.malformed_by_file = dict(data["malformedByFile"])
        t.reported_cost_micro = round(float(data["reportedCostUSD"]) * 1e9)
        return t


def _total(row: dict[str, int]) -> int:
    return row["input"] + row["output"] + row["cacheRead"] + row["cacheCreation"]


def _fmt_nano(n: int) -> str:
    return f"{n // 10**9}.{n % 10**9:09d}"


def write_truth(path: Path, truth: Truth, meta: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(truth.to_json(meta), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------- content


class ContentPool:
    """A few MB of code-like and log-like text; tool results are slices of it (cheap, deterministic)."""

    WORDS = (
        "config",
        "parser",
        "token",
        "usage",
        "ledger",
        "request",
        "handler",
        "buffer",
        "stream",
        "session",
        "cursor",
        "offset",
        "export",
        "metric",
        "value",
        "index",
        "result",
        "error",
        "client",
        "server",
        "model",
        "cache",
        "window",
        "commit",
        "branch",
        "schema",
        "record",
        "daemon",
        "signal",
        "timeout",
        "retry",
        "worker",
        "queue",
        "batch",
        "flush",
        "state",
    )
    UNICODE = ("é", "ü", "→", "—", "日本語", "✓", "λ", "π", "😀", "ß")

    def __init__(self, rng: random.Random, size: int = 3_000_000) -> None:
        parts: list[str] = []
        n = 0
        w = self.WORDS
        lineno = 1
        while n < size:
            kind = rng.random()
            a, b, c = rng.choice(w), rng.choice(w), rng.choice(w)
            if kind < 0.35:
                s = f'    def {a}_{b}(self, {c}: int = {rng.randrange(1000)}) -> "{b.title()}":'
            elif kind < 0.55:
                s = f'        return {{"{a}": {rng.randrange(99999)}, "{b}": "{c}\\t{rng.choice(self.UNICODE)}"}}'
            elif kind < 0.75:
                s = (
                    f"2026-01-{rng.randrange(1, 29):02d} {rng.randrange(24):02d}:{rng.randrange(60):02d}:"
                    f"{rng.randrange(60):02d} INFO [{a}] {b} {c} took {rng.random() * 100:.2f}ms path=C:\\\\tmp\\\\{a}"
                )
            elif kind < 0.9:
                s = f"\t{a}.{b}({c!r}, {rng.randrange(-50, 50)})  # {rng.choice(self.UNICODE)} {b} {c}"
            else:
                s = f"{a.upper()}_{b.upper()}={rng.getrandbits(48):x}"
            s = f"{lineno:6d}\u2192{s}\n"
            lineno += 1
            parts.append(s)
            n += len(s)
        self.text = "".join(parts)

    def slice(self, rng: random.Random, n: int) -> str:
        n = min(n, len(self.text) - 1)
        off = rng.randrange(0, len(self.text) - n)
        return self.text[off : off + n]


# ----------------------------------------------------------------------------------------- generator


class Generator:
    def __init__(self, out: Path, seed: int, start: date, days: int, truth: Truth | None = None) -> None:
        self.out = out
        self.rng = random.Random(seed)
        self.pool = ContentPool(random.Random(seed ^ 0x5EED))
        self.start_ms = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
        self.days = days
        self.truth = truth or Truth()
        self.bytes = 0
        self.lines = 0
        self.files = 0
        self.sessions = 0
        # bounded buffer of the previous main session's first lines (resume trap)
        self.prev_session: tuple[str, str, list[dict[str, Any]]] | None = None
        self.append_target: str | None = None

    # ----------------------------------------------------------------- ids

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _b62(self, n: int) -> str:
        v = self.rng.getrandbits(6 * n)
        out = []
        for _ in range(n):
            out.append(_B62[v % 62])
            v //= 62
        return "".join(out)

    def _msg_id(self) -> str:
        return "msg_01" + self._b62(22)

    def _req_id(self) -> str:
        return "req_011C" + self._b62(21)

    def _tool_id(self) -> str:
        return "toolu_01" + self._b62(22)

    # ----------------------------------------------------------------- output

    def _open(self, path: Path) -> BinaryIO:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.files += 1
        return path.open("ab", buffering=1 << 20)

    def _write(self, fh: BinaryIO, obj: dict[str, Any], buf: list[dict[str, Any]] | None = None) -> None:
        data = dumps(obj)
        fh.write(data)
        self.bytes += len(data)
        self.lines += 1
        if buf is not None and len(buf) < 120:
            buf.append(obj)

    def _write_malformed(self, fh: BinaryIO, obj: dict[str, Any], rel: str) -> None:
        data = dumps(obj)[:-1]
        # A strict prefix of a JSON object is never valid JSON. Cut in the second half so that assistant
        # lines often keep a complete "usage":{...} in the truncated text.
        cut = self.rng.randrange(len(data) // 2, len(data) - 1)
        data = data[:cut] + b"\n"
        fh.write(data)
        self.bytes += len(data)
        self.lines += 1
        self.truth.malformed_by_file[rel] = self.truth.malformed_by_file.get(rel, 0) + 1

    # ----------------------------------------------------------------- records

    def _base(self, ctx: Ctx, parent: str | None) -> dict[str, Any]:
        d: dict[str, Any] = {"parentUuid": parent, "isSidechain": ctx.sidechain}
        if ctx.agent_id:
            d["agentId"] = ctx.agent_id
        d.update(userType="external", cwd=ctx.cwd, sessionId=ctx.session_id, version=ctx.version, gitBranch=ctx.branch)
        return d

    def _usage(self, ctx: Ctx, model: str) -> dict[str, Any]:
        rng = self.rng
        big = model == OPUS
        inp = rng.choice((1, 2, 3, 4, 5, 6, 8, 10, 12)) if rng.random() < 0.85 else rng.randrange(20, 12000)
        cread = 0 if rng.random() < 0.04 else rng.randrange(8000, 160000 if not big else 120000)
        ccreate = 0 if rng.random() < 0.2 else int(rng.paretovariate(1.3) * 300)
        ccreate = min(ccreate, 60000)
        one_h = ccreate if ctx.cache_1h else 0
        out = max(1, int(rng.lognormvariate(5.0, 1.1)))
        out = min(out, 32000)
        return {
            "input_tokens": inp,
            "cache_creation_input_tokens": ccreate,
            "cache_read_input_tokens": cread,
            "cache_creation": {"ephemeral_5m_input_tokens": ccreate - one_h, "ephemeral_1h_input_tokens": one_h},
            "output_tokens": out,
            "service_tier": "standard",
        }

    def _assistant(
        self,
        ctx: Ctx,
        parent: str | None,
        model: str,
        msg_id: str,
        req_id: str | None,
        content: list[dict[str, Any]],
        stop: str | None,
        usage: dict[str, Any],
        ms: int,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        d = self._base(ctx, parent)
        d["message"] = {
            "model": model,
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if req_id is not None:
            d["requestId"] = req_id
        d["type"] = "assistant"
        d["uuid"] = self._uuid()
        d["timestamp"] = iso_ms(ms)
        if extra:
            d.update(extra)
        return d

    def _user_text(self, ctx: Ctx, parent: str | None, text: str, ms: int) -> dict[str, Any]:
        d = self._base(ctx, parent)
        d.update(type="user", message={"role": "user", "content": text}, uuid=self._uuid(), timestamp=iso_ms(ms))
        return d

    def _tool_result_text(self) -> tuple[str, bool]:
        """A tool output of 1-60 KB (log-uniform). Sometimes contains transcript-like usage text."""
        rng = self.rng
        n = int(math.exp(rng.uniform(math.log(1000), math.log(60000))))
        text = self.pool.slice(rng, n)
        decoy = rng.random() < 0.03
        if decoy:
            fake = json.dumps(
                {
                    "type": "assistant",
                    "message": {
                        "id": "msg_01Decoy" + self._b62(16),
                        "model": SONNET,
                        "role": "assistant",
                        "usage": {
                            "input_tokens": rng.randrange(1, 500),
                            "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": rng.randrange(90000),
                            "output_tokens": rng.randrange(900),
                        },
                    },
                    "requestId": "req_011CDecoy" + self._b62(12),
                    "timestamp": "2026-01-01T00:00:00.000Z",
                },
                separators=(",", ":"),
            )
            pos = rng.randrange(len(text) + 1)
            text = text[:pos] + f'\n$ tail -1 session.jsonl\n{fake}\n"usage": {{"total": 3}}\n' + text[pos:]
        return text, decoy

    def _tool_result(self, ctx: Ctx, parent: str, tool_id: str, tool: str, ms: int) -> dict[str, Any]:
        text, decoy = self._tool_result_text()
        if decoy:
            self.truth.bump("usageTextDecoys")
        d = self._base(ctx, parent)
        d.update(
            type="user",
            message={
                "role": "user",
                "content": [{"tool_use_id": tool_id, "type": "tool_result", "content": text, "is_error": False}],
            },
            uuid=self._uuid(),
            timestamp=iso_ms(ms),
        )
        if tool == "Bash":
            d["toolUseResult"] = {
                "stdout": text[: len(text) // 2],
                "stderr": "",
                "interrupted": False,
                "isImage": False,
            }
        elif tool == "Read":
            d["toolUseResult"] = {
                "type": "text",
                "file": {
                    "filePath": f"{ctx.cwd}/src/{self.rng.choice(ContentPool.WORDS)}.py",
                    "numLines": text.count("\n"),
                    "startLine": 1,
                },
            }
        else:
            d["toolUseResult"] = {"mode": "content", "numFiles": self.rng.randrange(1, 30)}
        return d

    def _tool_use_block(self, tool: str, tool_id: str, ctx: Ctx) -> dict[str, Any]:
        rng = self.rng
        w = rng.choice(ContentPool.WORDS)
        inputs = {
            "Read": {"file_path": f"{ctx.cwd}/src/{w}.py"},
            "Bash": {"command": f"pytest -q tests/test_{w}.py", "description": f"Run {w} tests"},
            "Grep": {"pattern": f"def {w}_", "path": ctx.cwd, "output_mode": "content"},
            "Edit": {
                "file_path": f"{ctx.cwd}/src/{w}.py",
                "old_string": self.pool.slice(rng, 200),
                "new_string": self.pool.slice(rng, 240),
            },
            "Glob": {"pattern": f"**/*{w}*.py"},
            "Write": {
                "file_path": f"{ctx.cwd}/src/{w}_new.py",
                "content": self.pool.slice(rng, rng.randrange(300, 3000)),
            },
            "WebFetch": {"url": f"https://example.com/docs/{w}", "prompt": f"Summarise the {w} section"},
        }[tool]
        return {"type": "tool_use", "id": tool_id, "name": tool, "input": inputs}

    def _text_block(self, lo: int = 40, hi: int = 900) -> dict[str, Any]:
        return {"type": "text", "text": self.pool.slice(self.rng, self.rng.randrange(lo, hi))}

    # ----------------------------------------------------------------- one API request

    def _request(
        self,
        ctx: Ctx,
        fh: BinaryIO,
        model: str,
        ms: int,
        final_stop: str,
        final_block: dict[str, Any],
        buf: list[dict[str, Any]] | None,
        max_lines: int = 4,
    ) -> tuple[int, dict[str, Any]]:
        """Write 1-4 streamed lines of one API response; count it once in the truth.

        Returns (timestamp of the final line, the final line)."""
        rng = self.rng
        k = min(max_lines, rng.choices((1, 2, 3, 4), weights=(25, 40, 25, 10))[0])
        msg_id, req_id = self._msg_id(), self._req_id()
        usage = self._usage(ctx, model)
        final_out = usage["output_tokens"]
        step = rng.randrange(150, 900)
        first = ms
        last = ms + (k - 1) * step
        if first // _HOUR_MS != last // _HOUR_MS:  # one response's lines stay in one UTC hour (so one day in any zone)
            first = (last // _HOUR_MS) * _HOUR_MS + 5
            last = first + (k - 1) * step
        # Content blocks, one per line (thinking/text..., then the final text or tool_use block). Sometimes
        # the line carrying stop_reason has empty content, as in real transcripts.
        empty_final = k > 1 and rng.random() < 0.3
        n_blocks = k - 1 if empty_final else k
        blocks: list[dict[str, Any]] = []
        if n_blocks >= 3 and rng.random() < 0.4:
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": self.pool.slice(rng, rng.randrange(100, 1500)),
                    "signature": self._b62(40),
                }
            )
        while len(blocks) < n_blocks - 1:
            blocks.append(self._text_block())
        blocks.append(final_block)
        if empty_final:
            blocks.append({})
        partial = rng.randrange(1, 9)
        line: dict[str, Any] = {}
        for i in range(k):
            is_final = i == k - 1
            u = dict(usage)
            u["cache_creation"] = dict(usage["cache_creation"])
            if is_final:
                tail = u.pop("service_tier")
                u["server_tool_use"] = {"web_search_requests": 0, "web_fetch_requests": 0}
                u["service_tier"] = tail
            else:
                u["output_tokens"] = min(final_out, partial + i * rng.randrange(0, 4))
            content = [blocks[i]] if blocks[i] else []
            line = self._assistant(
                ctx, ctx.parent, model, msg_id, req_id, content, final_stop if is_final else None, u, first + i * step
            )
            self._write(fh, line, buf)
            ctx.parent = line["uuid"]
        self.truth.add_request(last, model, usage)
        self.truth.bump("requests")
        if k > 1:
            self.truth.bump("streamedMessages")
            self.truth.bump("streamingDuplicateLines", k - 1)
        if model == UNKNOWN_MODEL:
            self.truth.bump("unknownModelRequests")
        if ctx.sidechain:
            self.truth.bump("sidechainRequests")
        return last, line

    def _pick_model(self, ctx: Ctx) -> str:
        if self.rng.random() < 0.004:
            return UNKNOWN_MODEL
        return ctx.model

    # ----------------------------------------------------------------- sessions

    def _project(self) -> tuple[str, str]:
        cwd = self.rng.choice(PROJECT_DIRS)
        return cwd, slug_for(cwd)

    def _session_start(self) -> int:
        rng = self.rng
        day = rng.randrange(self.days)
        # working hours around 14:00 UTC, plus a uniform share so that every local midnight sees traffic
        hour = rng.randrange(24) if rng.random() < 0.3 else min(23, max(0, int(rng.gauss(14, 4))))
        return self.start_ms + day * _DAY_MS + hour * 3_600_000 + rng.randrange(3_600_000)

    def session(self, target: int, *, force_traps: bool = False, resume: bool = False, old: bool = False) -> None:
        rng = self.rng
        self.sessions += 1
        if resume and self.prev_session is not None:
            cwd, _, prev_lines = self.prev_session
        else:
            resume = False
            cwd, prev_lines = self._project()[0], []
        slug = slug_for(cwd)
        sid = self._uuid()
        model = rng.choices((SONNET, OPUS, HAIKU), weights=(64, 26, 10))[0]
        ctx = Ctx(
            cwd=cwd,
            session_id=sid,
            version=rng.choice(OLD_VERSIONS if old else VERSIONS),
            branch=rng.choice(BRANCHES),
            model=model,
            cache_1h=rng.random() < 0.3,
        )
        rel = f"projects/{slug}/{sid}.jsonl"
        path = self.out / rel
        start = self._session_start()
        buf: list[dict[str, Any]] | None = [] if not (resume or old) else None
        with self._open(path) as fh:
            written0 = self.bytes
            if resume:
                self.truth.bump("resumedSessions")
                last_ms = start
                copied_keys: set[tuple[str, str]] = set()
                for orig in prev_lines:
                    obj = dict(orig)
                    if "sessionId" in obj:
                        obj["sessionId"] = sid
                    self._write(fh, obj)
                    self.truth.bump("resumedCopiedLines")
                    msg = obj.get("message")
                    if obj.get("type") == "assistant" and obj.get("requestId") and isinstance(msg, dict):
                        copied_keys.add((msg["id"], obj["requestId"]))
                    if isinstance(msg, dict) and msg.get("model") == "<synthetic>":
                        self.truth.bump("syntheticLines")
                    if isinstance(obj.get("toolUseResult"), dict) and "usage" in obj["toolUseResult"]:
                        self.truth.bump("toolUseResultUsageDecoys")
                    if "timestamp" in obj:
                        last_ms = max(last_ms, parse_iso_ms(obj["timestamp"]))
                    if "uuid" in obj:
                        ctx.parent = obj["uuid"]
                self.truth.bump("resumedCopiedRequests", len(copied_keys))
                start = last_ms + rng.randrange(60_000, 3 * _DAY_MS)
                self._write(fh, self._user_text(ctx, ctx.parent, "continue where we left off", start))
            elif old:
                self._old_session(ctx, fh, start, target)
                return
            else:
                if rng.random() < 0.3:
                    self._write(
                        fh,
                        {
                            "type": "summary",
                            "summary": f"Fix {rng.choice(ContentPool.WORDS)} handling",
                            "leafUuid": self._uuid(),
                        },
                    )
            ms = start
            turn = 0
            if force_traps:
                malformed_at, synthetic_at, subagent_at = 1, 0, 1
            else:
                malformed_at = rng.randrange(2, 12) if rng.random() < 0.12 else -1
                synthetic_at = rng.randrange(1, 8) if rng.random() < 0.35 else -1
                subagent_at = rng.randrange(1, 6) if rng.random() < 0.4 else -1
            while self.bytes - written0 < target or turn < 2:
                ms = self._turn(
                    ctx, fh, ms, buf, rel, turn, malformed_at, synthetic_at, subagent_at, force_traps, written0 + target
                )
                turn += 1
                if turn > 2 and rng.random() < 0.08:
                    subagent_at = turn + rng.randrange(1, 4)
        if buf is not None:
            self.prev_session = (cwd, sid, buf)
            if self.append_target is None or rng.random() < 0.2:
                self.append_target = rel

    def _turn(
        self,
        ctx: Ctx,
        fh: BinaryIO,
        ms: int,
        buf: list[dict[str, Any]] | None,
        rel: str,
        turn: int,
        malformed_at: int,
        synthetic_at: int,
        subagent_at: int,
        force_traps: bool,
        budget_end: int,
    ) -> int:
        rng = self.rng
        ms += rng.randrange(20_000, 1_200_000)
        if rng.random() < 0.25:
            self._write(
                fh,
                {
                    "type": "file-history-snapshot",
                    "messageId": self._uuid(),
                    "snapshot": {"messageId": self._uuid(), "trackedFileBackups": {}, "timestamp": iso_ms(ms)},
                    "isSnapshotUpdate": False,
                },
                buf,
            )
        prompt = self._user_text(ctx, ctx.parent, self.pool.slice(rng, rng.randrange(30, 600)), ms)
        self._write(fh, prompt, buf)
        ctx.parent = prompt["uuid"]
        if turn == synthetic_at:
            ms = self._synthetic(ctx, fh, ms, buf)
        n_req = rng.randrange(1, 9)
        if turn in (subagent_at, malformed_at):
            n_req = max(n_req, 2)
        for i in range(n_req):
            ms += rng.randrange(1500, 30_000)
            model = self._pick_model(ctx)
            if i == n_req - 1 or (self.bytes >= budget_end and i > 0 and turn >= 2):
                ms, _ = self._request(ctx, fh, model, ms, "end_turn", self._text_block(80, 2500), buf)
                break
            tool = rng.choice(TOOLS)
            task = turn == subagent_at and i == 0
            tool_id = self._tool_id()
            block = (
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": "Task",
                    "input": {
                        "description": "Investigate failures",
                        "prompt": self.pool.slice(rng, 400),
                        "subagent_type": "general-purpose",
                    },
                }
                if task
                else self._tool_use_block(tool, tool_id, ctx)
            )
            ms, final_line = self._request(ctx, fh, model, ms, "tool_use", block, buf)
            if turn == malformed_at and i == 0:
                self._malformed(ctx, fh, ms, rel, force_traps)
            if task:
                ms = self._subagent(ctx, fh, ms, final_line, tool_id, buf, force_traps)
            else:
                ms += rng.randrange(200, 60_000)
                tr = self._tool_result(ctx, ctx.parent or "", tool_id, tool, ms)
                self._write(fh, tr, buf)
                ctx.parent = tr["uuid"]
        if rng.random() < 0.05:
            ms += 1000
            sysl = self._base(ctx, ctx.parent)
            sysl.update(
                type="system",
                subtype="compact_boundary",
                content="Conversation compacted",
                isMeta=False,
                timestamp=iso_ms(ms),
                uuid=self._uuid(),
                level="info",
                logicalParentUuid=ctx.parent,
                compactMetadata={"trigger": "auto", "preTokens": rng.randrange(120000, 170000)},
            )
            sysl["parentUuid"] = None
            self._write(fh, sysl, buf)
            ctx.parent = sysl["uuid"]
        elif rng.random() < 0.05:
            ms += 1000
            sysl = self._base(ctx, ctx.parent)
            sysl.update(
                type="system",
                subtype="local_command",
                content="<command-name>/model</command-name>",
                level="info",
                timestamp=iso_ms(ms),
                uuid=self._uuid(),
                isMeta=False,
            )
            self._write(fh, sysl, buf)
            ctx.parent = sysl["uuid"]
        return ms

    def _synthetic(self, ctx: Ctx, fh: BinaryIO, ms: int, buf: list[dict[str, Any]] | None) -> int:
        rng = self.rng
        ms += rng.randrange(500, 5000)
        interrupt = self._user_text(ctx, ctx.parent, "[Request interrupted by user]", ms)
        self._write(fh, interrupt, buf)
        ctx.parent = interrupt["uuid"]
        ms += rng.randrange(10, 500)
        api_error = rng.random() < 0.5
        usage: dict[str, Any] = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        if api_error:
            usage["server_tool_use"] = {"web_search_requests": 0, "web_fetch_requests": 0}
            usage["service_tier"] = None
        text = "API Error: Request was aborted." if api_error else "No response requested."
        d = self._base(ctx, ctx.parent)
        d.update(
            type="assistant",
            uuid=self._uuid(),
            timestamp=iso_ms(ms),
            message={
                "id": self._uuid(),
                "model": "<synthetic>",
                "role": "assistant",
                "stop_reason": "stop_sequence",
                "stop_sequence": "",
                "type": "message",
                "usage": usage,
                "content": [{"type": "text", "text": text}],
            },
            isApiErrorMessage=api_error,
        )
        self._write(fh, d, buf)
        ctx.parent = d["uuid"]
        self.truth.bump("syntheticLines")
        return ms

    def _malformed(self, ctx: Ctx, fh: BinaryIO, ms: int, rel: str, force_assistant: bool = False) -> None:
        rng = self.rng
        if force_assistant or rng.random() < 0.6:
            usage = self._usage(ctx, ctx.model)
            obj = self._assistant(
                ctx,
                ctx.parent,
                ctx.model,
                self._msg_id(),
                self._req_id(),
                [self._text_block()],
                "end_turn",
                usage,
                ms + 10,
            )
            self.truth.bump("malformedAssistantLines")
        else:
            obj = self._user_text(ctx, ctx.parent, self.pool.slice(rng, 3000), ms + 10)
        self._write_malformed(fh, obj, rel)

    def _subagent(
        self,
        ctx: Ctx,
        fh: BinaryIO,
        ms: int,
        parent_final: dict[str, Any],
        tool_id: str,
        buf: list[dict[str, Any]] | None,
        force_traps: bool,
    ) -> int:
        """Write a sidechain file (and maybe a replay of the parent message), then the Task result."""
        rng = self.rng
        agent_id = self._b62(8).lower()
        rel = f"projects/{slug_for(ctx.cwd)}/{ctx.session_id}/subagents/agent-{agent_id}.jsonl"
        sub = Ctx(
            cwd=ctx.cwd,
            session_id=ctx.session_id,
            version=ctx.version,
            branch=ctx.branch,
            model=rng.choice((HAIKU, HAIKU, SONNET)),
            cache_1h=False,
            sidechain=True,
            agent_id=agent_id,
        )
        self.truth.bump("sidechainFiles")
        t0 = ms
        sums = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        with self._open(self.out / rel) as sfh:
            p = self._user_text(sub, None, self.pool.slice(rng, 400), ms + 50)
            self._write(sfh, p)
            sub.parent = p["uuid"]
            if force_traps or rng.random() < 0.35:
                # Replay of the parent's message: same message.id, a new requestId, isSidechain true.
                replay = json.loads(json.dumps(parent_final))
                for k in (
                    "parentUuid",
                    "isSidechain",
                    "agentId",
                    "userType",
                    "cwd",
                    "sessionId",
                    "version",
                    "gitBranch",
                ):
                    replay.pop(k, None)
                base = self._base(sub, sub.parent)
                replay = {**base, **replay}
                replay["requestId"] = self._req_id()
                replay["uuid"] = self._uuid()
                replay["timestamp"] = iso_ms(min(ms + 120, (ms // _HOUR_MS + 1) * _HOUR_MS - 1))
                self._write(sfh, replay)
                sub.parent = replay["uuid"]
                self.truth.bump("sidechainReplays")
            for _ in range(rng.randrange(2, 12)):
                ms += rng.randrange(1500, 20_000)
                tool = rng.choice(("Read", "Grep", "Bash", "Glob"))
                tid = self._tool_id()
                ms, line = self._request(
                    sub, sfh, self._pick_model(sub), ms, "tool_use", self._tool_use_block(tool, tid, sub), None
                )
                for k in sums:
                    sums[k] += line["message"]["usage"][k]
                ms += rng.randrange(200, 20_000)
                tr = self._tool_result(sub, sub.parent or "", tid, tool, ms)
                self._write(sfh, tr)
                sub.parent = tr["uuid"]
            ms += rng.randrange(1500, 20_000)
            ms, line = self._request(sub, sfh, self._pick_model(sub), ms, "end_turn", self._text_block(200, 3000), None)
            for k in sums:
                sums[k] += line["message"]["usage"][k]
        # The Task result on the parent: a real "usage":{ object inside toolUseResult (a decoy: the
        # subagent's requests are already counted from its own file).
        ms += rng.randrange(100, 2000)
        summary = self.pool.slice(rng, rng.randrange(500, 4000))
        d = self._base(ctx, ctx.parent)
        d.update(
            type="user",
            message={
                "role": "user",
                "content": [
                    {"tool_use_id": tool_id, "type": "tool_result", "content": [{"type": "text", "text": summary}]}
                ],
            },
            uuid=self._uuid(),
            timestamp=iso_ms(ms),
            toolUseResult={
                "status": "completed",
                "prompt": "Investigate failures",
                "agentId": agent_id,
                "content": [{"type": "text", "text": summary[:300]}],
                "totalDurationMs": ms - t0,
                "totalTokens": sum(sums.values()),
                "totalToolUseCount": 3,
                "usage": {
                    **sums,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": sums["cache_creation_input_tokens"],
                        "ephemeral_1h_input_tokens": 0,
                    },
                    "service_tier": "standard",
                },
            },
        )
        self._write(fh, d, buf)
        ctx.parent = d["uuid"]
        self.truth.bump("toolUseResultUsageDecoys")
        return ms

    def _old_session(self, ctx: Ctx, fh: BinaryIO, ms: int, target: int) -> None:
        """Pre-1.0.9 lines: single line per response, costUSD, no cache_creation split."""
        rng = self.rng
        ctx.model = rng.choice(OLD_MODELS)
        written0 = self.bytes
        n = 0
        while self.bytes - written0 < target or n < 3:
            ms += rng.randrange(20_000, 600_000)
            p = self._user_text(ctx, ctx.parent, self.pool.slice(rng, rng.randrange(30, 300)), ms)
            self._write(fh, p)
            ctx.parent = p["uuid"]
            ms += rng.randrange(2000, 20_000)
            usage = {
                "input_tokens": rng.randrange(4, 3000),
                "cache_creation_input_tokens": rng.randrange(0, 4000),
                "cache_read_input_tokens": rng.randrange(0, 40000),
                "output_tokens": rng.randrange(10, 1500),
            }
            pin, pout = _OLD_PRICES[ctx.model]
            nano = round(
                (
                    usage["input_tokens"] * pin
                    + usage["output_tokens"] * pout
                    + usage["cache_creation_input_tokens"] * pin * 1.25
                    + usage["cache_read_input_tokens"] * pin * 0.1
                )
                * 1000
            )  # tokens*$/MTok -> 1e-9 USD
            d = self._base(ctx, ctx.parent)
            d["message"] = {
                "id": self._msg_id(),
                "type": "message",
                "role": "assistant",
                "model": ctx.model,
                "content": [self._text_block(20, 600)],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": usage,
            }
            d["costUSD"] = float(_fmt_nano(nano))
            d.update(requestId=self._req_id(), type="assistant", uuid=self._uuid(), timestamp=iso_ms(ms))
            self._write(fh, d)
            ctx.parent = d["uuid"]
            self.truth.add_request(ms, ctx.model, usage)
            self.truth.bump("requests")
            self.truth.bump("costUSDLines")
            self.truth.reported_cost_micro += round(d["costUSD"] * 1e9)
            n += 1
            if rng.random() < 0.5:
                ms += rng.randrange(200, 30_000)
                tid = self._tool_id()
                tr = self._tool_result(ctx, ctx.parent, tid, "Bash", ms)
                self._write(fh, tr)
                ctx.parent = tr["uuid"]

    # ----------------------------------------------------------------- whole corpus

    def generate(self, size: int) -> None:
        rng = self.rng
        i = 0
        while self.bytes < size:
            remaining = size - self.bytes
            # Session sizes: log-uniform 100 KB .. 12 MB, capped by what is left (min a few KB).
            want = int(math.exp(rng.uniform(math.log(100_000), math.log(12_000_000))))
            want = max(2_000, min(want, remaining))
            if i == 0:
                self.session(min(want, max(remaining // 3, 2000)), force_traps=True)
            elif i == 1:
                self.session(min(want, max(remaining // 4, 2000)), resume=True)
            elif i == 2:
                self.session(min(want, 60_000), old=True)
            else:
                r = rng.random()
                if r < 0.07:
                    self.session(want, resume=True)
                elif r < 0.08:
                    self.session(min(want, 200_000), old=True)
                else:
                    self.session(want)
            i += 1


@dataclass
class Ctx:
    cwd: str
    session_id: str
    version: str
    branch: str
    model: str
    cache_1h: bool
    sidechain: bool = False
    agent_id: str | None = None
    parent: str | None = None


# ------------------------------------------------------------------------------------------- append


def _last_line_info(path: Path) -> tuple[str | None, int | None, dict[str, Any] | None]:
    """(last uuid, last timestamp ms, last parsable record) from the tail of a session file."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 1_000_000))
        tail = fh.read().split(b"\n")
    for raw in reversed(tail):
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict) and "timestamp" in obj and "sessionId" in obj:
            return obj.get("uuid"), parse_iso_ms(obj["timestamp"]), obj
    return None, None, None


def append_lines(
    out: Path, n_lines: int, to: str | None, seed: int | None, sink: BinaryIO | None = None
) -> dict[str, Any]:
    """Append exactly ``n_lines`` realistic lines (new requests) to a session file; update truth.json.

    With ``sink``, the lines are written there instead and the caller appends them to the file itself
    (e.g. in two parts, to leave a partial last line for a while); truth.json is updated all the same."""
    truth_path = out / "truth.json"
    data = json.loads(truth_path.read_text(encoding="utf-8"))
    truth = Truth.from_json(data)
    meta = {
        k: v
        for k, v in data.items()
        if k not in ("totals", "models", "daily", "reportedCostUSD", "traps", "malformedLines", "malformedByFile")
    }
    appends = meta.setdefault("appends", [])
    rel = to or meta["appendTarget"]
    path = Path(rel) if Path(rel).is_absolute() else out / rel
    if seed is None:
        seed = meta["seed"] * 1000 + len(appends) + 1
    start = date.fromisoformat(meta["start"])
    gen = Generator(out, seed, start, meta["days"], truth)
    last_uuid, last_ms, last_obj = _last_line_info(path)
    if last_obj is None:
        raise SystemExit(f"{path}: no usable line to continue from")
    ctx = Ctx(
        cwd=last_obj["cwd"],
        session_id=last_obj["sessionId"],
        version=last_obj.get("version", VERSIONS[-1]),
        branch=last_obj.get("gitBranch", "main"),
        model=SONNET,
        cache_1h=False,
        sidechain=bool(last_obj.get("isSidechain")),
        agent_id=last_obj.get("agentId"),
        parent=last_uuid,
    )
    ms = (last_ms or gen.start_ms) + 60_000
    before = gen.truth.traps.get("requests", 0)
    rng = gen.rng
    written = 0
    with contextlib.nullcontext(sink) if sink is not None else path.open("ab") as fh:
        while written < n_lines:
            left = n_lines - written
            if left >= 2 and rng.random() < 0.5:
                ms += rng.randrange(1500, 20_000)
                tool = rng.choice(TOOLS)
                tid = gen._tool_id()
                lines_before = gen.lines
                ms, _ = gen._request(
                    ctx,
                    fh,
                    gen._pick_model(ctx),
                    ms,
                    "tool_use",
                    gen._tool_use_block(tool, tid, ctx),
                    None,
                    max_lines=left - 1,
                )
                ms += rng.randrange(200, 20_000)
                tr = gen._tool_result(ctx, ctx.parent or "", tid, tool, ms)
                gen._write(fh, tr)
                ctx.parent = tr["uuid"]
                written += gen.lines - lines_before
            else:
                ms += rng.randrange(1500, 20_000)
                lines_before = gen.lines
                ms, _ = gen._request(
                    ctx, fh, gen._pick_model(ctx), ms, "end_turn", gen._text_block(), None, max_lines=left
                )
                written += gen.lines - lines_before
    rel_out = str(path.relative_to(out)) if path.is_relative_to(out) else str(path)
    appends.append(
        {
            "file": rel_out,
            "lines": n_lines,
            "bytes": gen.bytes,
            "seed": seed,
            "requests": gen.truth.traps.get("requests", 0) - before,
        }
    )
    truth.bump("appendedLines", n_lines)
    meta["bytes"] = meta.get("bytes", 0) + gen.bytes
    meta["lines"] = meta.get("lines", 0) + gen.lines
    write_truth(truth_path, truth, meta)
    info: dict[str, Any] = appends[-1]
    return info


# --------------------------------------------------------------------------------------------- main


def generate(out: Path, size: int, seed: int = 42, days: int = 60, start: date = date(2026, 1, 1)) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    if (out / "projects").exists() and any((out / "projects").iterdir()):
        raise SystemExit(f"{out}/projects is not empty: refusing to mix corpora")
    t0 = time.perf_counter()
    gen = Generator(out, seed, start, days)
    gen.generate(size)
    meta = {
        "generatorVersion": GENERATOR_VERSION,
        "seed": seed,
        "requestedSize": size,
        "days": days,
        "start": start.isoformat(),
        "bytes": gen.bytes,
        "lines": gen.lines,
        "files": gen.files,
        "sessions": gen.sessions,
        "appendTarget": gen.append_target,
        "appends": [],
    }
    write_truth(out / "truth.json", gen.truth, meta)
    meta["seconds"] = round(time.perf_counter() - t0, 2)
    return meta


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "append":
        ap = argparse.ArgumentParser(prog="gen_history.py append", description="append lines to a generated history")
        ap.add_argument("--out", required=True, type=Path)
        ap.add_argument("--lines", type=int, default=1000)
        ap.add_argument("--to", help="session file (relative to --out or absolute); default: truth.json appendTarget")
        ap.add_argument("--seed", type=int)
        a = ap.parse_args(argv[1:])
        info = append_lines(a.out, a.lines, a.to, a.seed)
        print(json.dumps(info))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--size", type=parse_size, default=parse_size("50MB"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 1))
    ap.add_argument("--append-lines", type=int, help="append N lines to an existing corpus instead of generating")
    ap.add_argument("--to", help="with --append-lines: the session file to append to")
    a = ap.parse_args(argv)
    if a.append_lines is not None:
        print(json.dumps(append_lines(a.out, a.append_lines, a.to, None)))
        return 0
    meta = generate(a.out, a.size, a.seed, a.days, a.start)
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
