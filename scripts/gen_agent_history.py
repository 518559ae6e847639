#!/usr/bin/env python3
"""Generate a synthetic Codex, OpenClaw or Gemini CLI history and its exact ground truth (issue #11 item 5).

Usage::

    python scripts/gen_agent_history.py --agent codex --out DIR --size 1GB [--seed 42] [--days 60]
    python scripts/gen_agent_history.py --agent openclaw --out DIR --size 50MB
    python scripts/gen_agent_history.py --agent gemini --out DIR --size 50MB

``DIR`` is what the source's setting names: ``CODEX_HOME`` (``sessions/YYYY/MM/DD/rollout-*.jsonl``,
``archived_sessions/``), ``OPENCLAW_DIR`` (``agents/<agentId>/sessions/*.jsonl*``) or ``GEMINI_DATA_DIR``
(``<projectHash>/chats/session-*.jsonl``, legacy ``session-*.json``). Shapes follow shared/spec/local-formats.md
§3 (Codex), §4.1 (OpenClaw) and §5.1 (Gemini CLI). As in real histories most bytes are not usage (tool output,
file contents, prompts).

Traps, each counted in ``truth.json["traps"]``:

- codex: ``token_count`` re-emitted with an unchanged total; rate-limit-only events (``info: null``); a
  ``fill_to_context_window`` synthetic total (only ``total_tokens``); a total that drops (a reset after
  compaction); ``turn_context`` switching models mid-session; forked sessions that start by replaying the
  parent's history within one second; rollouts copied into the flat ``archived_sessions/``;
- openclaw: usage under ``normalizeUsage``'s other names (``inputTokens``, ``cache_read_input_tokens``...);
  assistant messages without a model (the last ``model_change`` names it); a stored cost of 0; reset archives
  ``<id>.jsonl.reset.<ts>`` repeating a transcript's entries;
- gemini: a message appended first with ``tokens: null`` then again with its tokens; ``$set`` patches, some
  restating the whole history; ``$rewindTo`` (the rewound message's tokens stay spent); legacy ``session-X.json``
  documents whose messages a migrated ``session-X.jsonl`` repeats.

``truth.json`` (same layout as scripts/gen_history.py's, so scripts/bench.py compares it with a report) is
computed from what the generator intended to count, in the bridge's token types: Codex input excludes cached
(cached → cacheRead; reasoning is inside output); OpenClaw cacheWrite → cacheCreation; Gemini input excludes cached
and includes tool-use prompt tokens, thoughts are output. Days are UTC.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

_SPEC = importlib.util.spec_from_file_location("gen_history", Path(__file__).resolve().parent / "gen_history.py")
assert _SPEC and _SPEC.loader
_gh = sys.modules.get("gen_history") or importlib.util.module_from_spec(_SPEC)
if "gen_history" not in sys.modules:
    sys.modules["gen_history"] = _gh
    _SPEC.loader.exec_module(_gh)
Truth, iso_ms, parse_size, write_truth = _gh.Truth, _gh.iso_ms, _gh.parse_size, _gh.write_truth

GENERATOR_VERSION = 1
AGENTS = ("codex", "openclaw", "gemini")
CODEX_MODELS = ("gpt-5-codex", "gpt-5", "gpt-5.1-codex-max")
OPENCLAW_MODELS = (("anthropic", "claude-sonnet-4-6"), ("openai", "gpt-5"), ("google", "gemini-2.5-pro"))
GEMINI_MODELS = ("gemini-2.5-pro", "gemini-2.5-flash")
DAY_MS = 86_400_000
_WORDS = ("def", "return", "import", "self", "None", "value", "error", "index", "file", "path", "config", "test",
          "assert", "the", "of", "to", "and", "for", "with", "request", "response", "token", "cache", "model",
          "session", "stream", "buffer", "parse", "line", "record", "total")  # fmt: skip


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj) + b"\n"


class _Base:
    """Shared bookkeeping: the truth, sizes, a seeded RNG and a pool of filler text."""

    def __init__(self, out: Path, seed: int, start: date, days: int) -> None:
        self.out, self.rng, self.days = out, random.Random(seed), days
        self.start_ms = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
        self.truth = Truth()
        self.bytes = self.lines = self.files = self.sessions = 0
        self.pool = [" ".join(self.rng.choices(_WORDS, k=self.rng.randint(20, 1500))) for _ in range(64)]
        self._n = 0

    def text(self) -> str:
        return self.rng.choice(self.pool)

    def uid(self) -> str:
        self._n += 1
        r = self.rng.getrandbits(64)
        head = f"{self._n:08x}-{r >> 48:04x}-4{(r >> 36) & 0xFFF:03x}-8{(r >> 24) & 0xFFF:03x}"
        return f"{head}-{r & 0xFFFFFF:06x}{self._n:06x}"  # the counter keeps ids unique

    def session_start(self) -> int:
        # whole seconds, leaving room for a session within its day's last hours
        return self.start_ms + self.rng.randrange(self.days) * DAY_MS + self.rng.randrange(0, 20 * 3600) * 1000

    def write(self, fh: BinaryIO, data: bytes) -> None:
        fh.write(data)
        self.bytes += len(data)
        self.lines += data.count(b"\n")

    def count(self, ms: int, model: str, inp: int, out: int, cache_read: int = 0, cache_write: int = 0) -> None:
        usage = {
            "input_tokens": inp,
            "output_tokens": out,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write,
            "cache_creation": None,
        }
        self.truth.add_request(ms, model, usage)
        self.truth.bump("requests")


class Codex(_Base):
    def generate(self, size: int) -> None:
        parents: list[tuple[str, list[bytes], list[int]]] = []  # a few sessions' replayable history
        while self.bytes < size:
            forked = parents and self.sessions % 10 == 3  # every tenth session is a fork
            self.session(self.rng.choice(parents) if forked else None, parents)

    def session(self, parent: tuple[str, list[bytes], list[int]] | None, parents: list[Any]) -> None:
        rng, sid = self.rng, self.uid()
        ms = self.session_start()
        t = time.gmtime(ms // 1000)
        stamp = time.strftime("%Y-%m-%dT%H-%M-%S", t)
        rel = Path(
            "sessions", f"{t.tm_year:04d}", f"{t.tm_mon:02d}", f"{t.tm_mday:02d}", f"rollout-{stamp}-{sid}.jsonl"
        )
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self.files += 1
        self.sessions += 1
        meta: dict[str, Any] = {
            "id": sid,
            "timestamp": iso_ms(ms),
            "cwd": "/home/dev/app",
            "originator": "codex_cli_rs",
        }
        meta.update(cli_version="0.60.0", source="cli", model_provider="openai", git={"branch": "main"})
        total = [0, 0, 0, 0]
        replay: list[bytes] = []
        with path.open("wb") as fh:
            if parent is not None:
                meta["forked_from_id"] = parent[0]
                self.write(fh, dumps({"timestamp": iso_ms(ms), "type": "session_meta", "payload": meta}))
                for line in parent[1]:  # the parent's history, rewritten within the child's first second
                    obj = orjson.loads(line)
                    obj["timestamp"] = iso_ms(ms + 300)
                    self.write(fh, dumps(obj))
                total = list(parent[2])
                self.truth.bump("forkedSessions")
                self.truth.bump("forkReplayedLines", len(parent[1]))
                ms += 5000
            else:
                self.write(fh, dumps({"timestamp": iso_ms(ms), "type": "session_meta", "payload": meta}))
                replay.append(dumps({"timestamp": iso_ms(ms), "type": "session_meta", "payload": meta}))
            model = rng.choice(CODEX_MODELS)
            for turn in range(rng.randint(8, 60)):
                if turn == 0 or rng.random() < 0.08:
                    if turn:
                        model = rng.choice(CODEX_MODELS)
                        self.truth.bump("modelSwitches")
                    ctx = {"cwd": "/home/dev/app", "approval_policy": "on-request", "model": model, "summary": "auto"}
                    line = dumps({"timestamp": iso_ms(ms), "type": "turn_context", "payload": ctx})
                    self.write(fh, line)
                    replay.append(line)
                ms += rng.randint(2000, 60000)
                for _ in range(rng.randint(1, 4)):  # tool calls and their (big) outputs: not usage
                    item = {"type": "function_call_output", "call_id": f"call_{self._n}", "output": self.text()}
                    self.write(fh, dumps({"timestamp": iso_ms(ms), "type": "response_item", "payload": item}))
                inp = rng.randint(2000, 120000)
                cached = rng.randint(0, inp)
                out = rng.randint(50, 6000)
                reasoning = rng.randint(0, out)
                last = [inp, cached, out, reasoning]
                if rng.random() < 0.02 and total[0] > 0:
                    total = list(last)  # a reset: the running total drops, this call still counts
                    self.truth.bump("totalResets")
                else:
                    total = [a + b for a, b in zip(total, last, strict=True)]
                line = self.token_count(ms, total, last)
                self.write(fh, line)
                replay.append(line)
                self.count(ms, model, inp - cached, out, cached)
                if rng.random() < 0.3:  # re-emitted with an unchanged total
                    self.write(fh, self.token_count(ms + 1500, total, last))
                    self.truth.bump("reemittedTokenCounts")
                if rng.random() < 0.2:  # a rate-limit refresh without usage
                    ev = {"type": "token_count", "info": None, "rate_limits": {"primary": {"used_percent": 3.0}}}
                    self.write(fh, dumps({"timestamp": iso_ms(ms + 1700), "type": "event_msg", "payload": ev}))
                    self.truth.bump("rateLimitOnlyEvents")
                if rng.random() < 0.01:  # fill_to_context_window: only total_tokens set
                    synth = {"total_tokens": 272000}
                    info = {"total_token_usage": synth, "last_token_usage": synth, "model_context_window": 272000}
                    ev = {"type": "token_count", "info": info, "rate_limits": None}
                    self.write(fh, dumps({"timestamp": iso_ms(ms + 1800), "type": "event_msg", "payload": ev}))
                    self.truth.bump("syntheticTotals")
        if parent is None and len(parents) < 20 and self.sessions % 5 == 1:
            parents.append((sid, replay, total))
        if self.sessions % 20 == 5:  # archived copy: the same rollout in the flat archive
            arch = self.out / "archived_sessions"
            arch.mkdir(exist_ok=True)
            data = path.read_bytes()
            (arch / path.name).write_bytes(data)
            self.bytes += len(data)
            self.files += 1
            self.truth.bump("archivedCopies")

    def token_count(self, ms: int, total: list[int], last: list[int]) -> bytes:
        def usage(v: list[int]) -> dict[str, int]:
            return {
                "input_tokens": v[0],
                "cached_input_tokens": v[1],
                "output_tokens": v[2],
                "reasoning_output_tokens": v[3],
                "total_tokens": v[0] + v[2],
            }

        info = {"total_token_usage": usage(total), "last_token_usage": usage(last), "model_context_window": 272000}
        limits = {"primary": {"used_percent": 4.0, "window_minutes": 300, "resets_at": ms // 1000 + 3600}}
        ev = {"type": "token_count", "info": info, "rate_limits": limits}
        return dumps({"timestamp": iso_ms(ms), "type": "event_msg", "payload": ev})


class OpenClaw(_Base):
    def generate(self, size: int) -> None:
        while self.bytes < size:
            self.session()

    def session(self) -> None:
        rng, sid = self.rng, self.uid()
        agent = f"agent-{rng.randrange(4)}"
        d = self.out / "agents" / agent / "sessions"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{sid}.jsonl"
        self.files += 1
        self.sessions += 1
        ms = self.session_start()
        provider, model = rng.choice(OPENCLAW_MODELS)
        parent: str | None = None
        with path.open("wb") as fh:
            self.write(fh, dumps({"type": "session", "version": 3, "id": sid, "timestamp": iso_ms(ms), "cwd": "/w"}))
            for turn in range(rng.randint(8, 60)):
                if turn == 0 or rng.random() < 0.05:
                    provider, model = rng.choice(OPENCLAW_MODELS)
                    parent = self.entry(fh, parent, ms, type="model_change", provider=provider, modelId=model)
                ms += rng.randint(2000, 60000)
                user = {"role": "user", "content": [{"type": "text", "text": self.text()[:2000]}], "timestamp": ms}
                parent = self.entry(fh, parent, ms, type="message", message=user)
                for _ in range(rng.randint(0, 3)):
                    ms += rng.randint(100, 5000)
                    tool = {"role": "toolResult", "toolCallId": "t", "content": [{"type": "text", "text": self.text()}]}
                    parent = self.entry(fh, parent, ms, type="message", message=tool)
                ms += rng.randint(500, 30000)
                parent = self.assistant(fh, parent, ms, provider, model)
        if self.sessions % 15 == 2:  # a reset archive: the same entries under another name
            data = path.read_bytes()
            (d / f"{sid}.jsonl.reset.2026-03-01T00-00-00.000Z").write_bytes(data)
            self.bytes += len(data)
            self.files += 1
            self.truth.bump("resetArchives")

    def entry(self, fh: BinaryIO, parent: str | None, ms: int, **fields: Any) -> str:
        self._n += 1
        eid = f"{self._n:08x}"
        self.write(fh, dumps({**fields, "id": eid, "parentId": parent, "timestamp": iso_ms(ms)}))
        return eid

    def assistant(self, fh: BinaryIO, parent: str | None, ms: int, provider: str, model: str) -> str:
        rng = self.rng
        inp, out = rng.randint(1, 3000), rng.randint(20, 4000)
        cr, cw = rng.randint(0, 200000), rng.randint(0, 8000)
        cost_total = 0 if rng.random() < 0.05 else round((inp * 3 + out * 15 + cr * 0.3 + cw * 3.75) / 1e6, 6)
        if cost_total == 0:
            self.truth.bump("zeroCostEntries")
        if rng.random() < 0.05:
            usage: dict[str, Any] = {
                "inputTokens": inp,
                "output_tokens": out,
                "cache_read_input_tokens": cr,
                "cache_creation_input_tokens": cw,
            }
            self.truth.bump("otherUsageNames")
        else:
            usage = {"input": inp, "output": out, "cacheRead": cr, "cacheWrite": cw, "totalTokens": inp + out + cr + cw}
        usage["cost"] = {"total": cost_total}
        msg: dict[str, Any] = {"role": "assistant", "content": [{"type": "text", "text": self.text()[:3000]}]}
        if rng.random() < 0.1:
            self.truth.bump("modelFromModelChange")
        else:
            msg.update(provider=provider, model=model)
        msg.update(usage=usage, stopReason="stop", timestamp=ms)
        self.count(ms, model, inp, out, cr, cw)
        return self.entry(fh, parent, ms, type="message", message=msg)


class Gemini(_Base):
    def generate(self, size: int) -> None:
        while self.bytes < size:
            self.session()

    def session(self) -> None:
        rng, sid = self.rng, self.uid()
        project = f"{rng.randrange(8):012x}"
        d = self.out / project / "chats"
        d.mkdir(parents=True, exist_ok=True)
        ms = self.session_start()
        name = f"session-{time.strftime('%Y-%m-%dT%H-%M', time.gmtime(ms // 1000))}-{sid[:8]}"
        self.files += 1
        self.sessions += 1
        model = rng.choice(GEMINI_MODELS)
        head = {"sessionId": sid, "projectHash": project, "startTime": iso_ms(ms), "lastUpdated": iso_ms(ms)}
        head["kind"] = "main"
        history: list[dict[str, Any]] = []
        legacy = self.sessions % 20 == 2
        with (d / f"{name}.jsonl").open("wb") as fh:
            self.write(fh, dumps(head))
            for _ in range(rng.randint(8, 60)):
                ms += rng.randint(2000, 60000)
                user = {"id": self.uid(), "timestamp": iso_ms(ms), "type": "user", "content": self.text()}
                self.write(fh, dumps(user))
                history.append(user)
                ms += rng.randint(500, 30000)
                mid = self.uid()
                msg: dict[str, Any] = {"id": mid, "timestamp": iso_ms(ms), "type": "gemini", "content": ""}
                msg.update(model=model, thoughts=[], tokens=None)
                self.write(fh, dumps(msg))  # appended before its tokens arrive
                self.truth.bump("tokensLaterLines")
                msg = {**msg, "content": self.text()[:4000], "tokens": self.tokens(ms, model)}
                self.write(fh, dumps(msg))
                history.append(msg)
                self.write(fh, dumps({"$set": {"lastUpdated": iso_ms(ms + 1000)}}))
                if rng.random() < 0.03:
                    self.write(fh, dumps({"$set": {"messages": history}}))  # a history sync restates all
                    self.truth.bump("restatedHistories")
                if rng.random() < 0.03:
                    self.write(fh, dumps({"$rewindTo": mid}))  # the rewound call was still spent
                    self.truth.bump("rewinds")
        if legacy:  # the legacy document the .jsonl was migrated from: the same ids again
            doc = {**head, "messages": history}
            data = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
            (d / f"{name}.json").write_bytes(data)
            self.bytes += len(data)
            self.files += 1
            self.truth.bump("legacyDocuments")

    def tokens(self, ms: int, model: str) -> dict[str, int]:
        rng = self.rng
        inp, out = rng.randint(1000, 200000), rng.randint(10, 8000)
        cached, thoughts = rng.randint(0, inp), rng.randint(0, 2000)
        tool = rng.randint(0, 500) if rng.random() < 0.2 else 0
        self.count(ms, model, inp - cached + tool, out + thoughts, cached)
        total = inp + out + thoughts + tool
        return {"input": inp, "output": out, "cached": cached, "thoughts": thoughts, "tool": tool, "total": total}


def generate(
    agent: str, out: Path, size: int, seed: int = 42, days: int = 60, start: date = date(2026, 1, 1)
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    if any(p.name != "truth.json" for p in out.iterdir()):
        raise SystemExit(f"{out} is not empty: refusing to mix corpora")
    t0 = time.perf_counter()
    gen = {"codex": Codex, "openclaw": OpenClaw, "gemini": Gemini}[agent](out, seed, start, days)
    gen.generate(size)  # type: ignore[attr-defined]
    meta = {
        "generatorVersion": GENERATOR_VERSION,
        "agent": agent,
        "seed": seed,
        "requestedSize": size,
        "days": days,
        "start": start.isoformat(),
        "bytes": gen.bytes,
        "lines": gen.lines,
        "files": gen.files,
        "sessions": gen.sessions,
    }
    write_truth(out / "truth.json", gen.truth, meta)
    meta["seconds"] = round(time.perf_counter() - t0, 2)
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent", required=True, choices=AGENTS)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--size", type=parse_size, default=parse_size("50MB"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 1))
    args = ap.parse_args(argv)
    meta = generate(args.agent, args.out, args.size, args.seed, args.days, args.start)
    print(orjson.dumps(meta).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
