"""Usage printed in a terminal: a set of line patterns and a tracker that turns the lines of
one stream into ledger records, exactly once.

Default patterns (local-formats.md §6): Claude Code's ``/cost`` block (per-model lines, the
single ``Usage:`` line, or a lone ``Total cost:``), Codex's exit line ``Token usage: ...``,
Aider's per-reply ``Tokens: ... sent, ... received.`` and the seed forms
``Tokens: N input, M output``, ``Usage: $X (N tokens)`` and ``Cost: $X``. User patterns come
from the config file::

    [terminal]
    patterns = [
      { name = "mytool", regex = 'used (?P<input>\\d+) in, (?P<output>\\d+) out', model = "gpt-5",
        provider = "openai", mode = "cumulative" },
    ]

Named groups: ``input``, ``output``, ``cache_read``, ``cache_write``, ``total`` (counted as
input), ``cost``, ``model``, ``session``; ``k``/``m`` suffixes and thousands separators are read.

The counting rule that matters: most tools print **session-cumulative** values, again and
again (``/cost`` twice, a TUI redraw, a scrollback captured twice). Such a print is never
summed: each (session, pattern, model) is one ledger row holding the largest value printed, so
a repeat adds nothing and a later, larger print adds only the difference. A value that drops
starts a new epoch of that session (a reset). Lines the spec says are per request (Aider), and
Codex's exit line (printed once per Codex session, so two in one stream are two sessions), are
one row each, keyed by the line and its occurrence in the stream: capturing the same
scrollback again adds nothing. Rows are dated by their
first print. Costs printed are kept as reported; without one the cost is estimated, and a
line without a model (Codex's exit line) has an unknown cost, never $0.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from bridge.errors import ConfigError
from bridge.ledger import BatchResult
from bridge.record import MAX_TOKENS, CostOrigin, Tokens, UsageRecord
from bridge.sources._agents import UNKNOWN_MODEL, provider_for

SOURCE = "terminal"
Mode = Literal["cumulative", "request"]
_NUM = r"\d[\d,]*(?:\.\d+)?[kKmMbB]?"
_MONEY = r"\d[\d,]*(?:\.\d+)?"
_LEAD = r"^\s*(?:⎿\s*)?"
_GROUPS = frozenset({"input", "output", "cache_read", "cache_write", "total", "cost", "model", "session"})
_COUNTS = ("input", "output", "cache_read", "cache_write", "total")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]")
# Lines of a /cost block that may sit between "Total cost:" and the per-model lines.
_BLOCK = re.compile(_LEAD + r"(?:Total duration|Total code changes|Usage by model:|$)")


@dataclass(frozen=True, slots=True)
class Pattern:
    name: str
    regex: re.Pattern[str]
    mode: Mode = "cumulative"
    provider: str | None = None
    model: str | None = None
    # A lone cost total that per-model lines of the same block replace (Claude's "Total cost").
    total_only: bool = False
    # Tokens sent include the cache reads and writes printed beside them (Aider).
    sent_includes_cache: bool = False


def _p(name: str, regex: str, **kw: Any) -> Pattern:
    return Pattern(name, re.compile(regex), **kw)


DEFAULT_PATTERNS: tuple[Pattern, ...] = (
    _p("claude_usage", _LEAD + rf"Usage:\s+(?P<input>{_NUM}) input, (?P<output>{_NUM}) output, "
       rf"(?P<cache_read>{_NUM}) cache read, (?P<cache_write>{_NUM}) cache write\s*$", provider="anthropic"),
    _p("claude_model", _LEAD + rf"(?P<model>[A-Za-z][\w.\-\[\]/@]*):\s+(?P<input>{_NUM}) input, "
       rf"(?P<output>{_NUM}) output, (?P<cache_read>{_NUM}) cache read, (?P<cache_write>{_NUM}) cache write"
       rf"(?:\s*\(\$(?P<cost>{_MONEY})\))?\s*$"),
    _p("claude_total", _LEAD + rf"Total cost:\s+\$(?P<cost>{_MONEY})\s*$", provider="anthropic", total_only=True),
    _p("codex", rf"Token usage: total=(?P<total_ignored>{_NUM}) input=(?P<input>{_NUM})"
       rf"(?: \(\+ (?P<cache_read>{_NUM}) cached\))? output=(?P<output>{_NUM})", provider="openai",
       mode="request"),  # printed once, at the end of each session
    _p("aider", rf"Tokens: (?P<input>{_NUM}) sent(?:, (?P<cache_write>{_NUM}) cache write)?"
       rf"(?:, (?P<cache_read>{_NUM}) cache hit)?, (?P<output>{_NUM}) received\."
       rf"(?:\s+Cost: \$(?P<cost>{_MONEY}) message, \$(?P<session_cost>{_MONEY}) session\.)?",
       mode="request", sent_includes_cache=True),
    _p("tokens", rf"^\s*Tokens: (?P<input>{_NUM}) input, (?P<output>{_NUM}) output\s*$"),
    _p("usage", rf"^\s*Usage: \$(?P<cost>{_MONEY}) \((?P<total>{_NUM}) tokens\)\s*$"),
    _p("cost", rf"^\s*Cost: \$(?P<cost>{_MONEY})\s*$"),
)  # fmt: skip


def strip_ansi(text: str) -> str:
    """The text a terminal shows: colour and cursor codes and control characters removed."""
    return _ANSI.sub("", text)


def number(text: str) -> int:
    """``7,400`` → 7400; ``9.8k`` → 9800; ``1.1m`` → 1100000."""
    t = text.replace(",", "").strip()
    scale = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}.get(t[-1:].lower(), 1)
    if scale != 1:
        t = t[:-1]
    value = int(Decimal(t) * scale)
    if not 0 <= value <= MAX_TOKENS:
        raise ValueError(f"token count out of range: {text!r}")
    return value


def money(text: str) -> Decimal:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"not an amount: {text!r}") from None


def load_patterns(raw: Iterable[Any] | None, where: str = "terminal.patterns") -> list[Pattern]:
    """User patterns (from the config file) first, then the defaults. Each bad entry raises
    ``ConfigError`` naming ``terminal.patterns[i].<key>``."""
    out: list[Pattern] = []
    for i, entry in enumerate(raw or []):
        key = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(key, "must be a table with name and regex")
        unknown = set(entry) - {"name", "regex", "mode", "provider", "model"}
        if unknown:
            raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown key (known: name, regex, mode, provider, model)")
        for k in ("name", "regex"):
            if not isinstance(entry.get(k), str) or not entry[k]:
                raise ConfigError(f"{key}.{k}", "required, a non-empty string")
        try:
            rx = re.compile(entry["regex"])
        except re.error as exc:
            raise ConfigError(f"{key}.regex", f"not a valid regular expression: {exc}") from None
        groups = set(rx.groupindex)
        if groups - _GROUPS:
            bad = ", ".join(sorted(groups - _GROUPS))
            raise ConfigError(f"{key}.regex", f"unknown named group(s) {bad} (known: {', '.join(sorted(_GROUPS))})")
        if not groups & {*_COUNTS, "cost"}:
            raise ConfigError(f"{key}.regex", "needs a named group for tokens or cost (e.g. (?P<input>\\d+))")
        mode = entry.get("mode", "cumulative")
        if mode not in ("cumulative", "request"):
            raise ConfigError(f"{key}.mode", f"must be cumulative or request, got {mode!r}")
        for k in ("provider", "model"):
            if k in entry and not isinstance(entry[k], str):
                raise ConfigError(f"{key}.{k}", "must be a string")
        out.append(Pattern(entry["name"], rx, mode, entry.get("provider"), entry.get("model")))
    return out + list(DEFAULT_PATTERNS)


@dataclass(slots=True)
class Match:
    """What one line says, before the tracker decides what it adds."""

    pattern: Pattern
    line: str
    tokens: Tokens
    cost: Decimal | None
    model: str
    provider: str
    session: str | None
    marker: str | None = None  # a value that tells two prints of one request apart (Aider)

    def as_json(self) -> dict[str, Any]:
        t = self.tokens
        return {
            "pattern": self.pattern.name,
            "mode": self.pattern.mode,
            "provider": self.provider,
            "model": self.model,
            "session": self.session,
            "input": t.input,
            "output": t.output,
            "cacheRead": t.cache_read,
            "cacheCreation": t.cache_creation,
            "cost": None if self.cost is None else str(self.cost),
        }


def match_line(line: str, patterns: Iterable[Pattern]) -> Match | None:
    """The first pattern that matches the visible text of ``line`` (``ValueError`` when a
    matching line holds an unreadable number)."""
    text = strip_ansi(line)
    for p in patterns:
        m = p.regex.search(text)
        if m is None:
            continue
        g = {k: v for k, v in m.groupdict().items() if v is not None}
        read, write = number(g.get("cache_read", "0")), number(g.get("cache_write", "0"))
        inp = number(g.get("input", "0")) + number(g.get("total", "0"))
        if p.sent_includes_cache and inp >= read + write:
            inp -= read + write
        tokens = Tokens(inp, number(g.get("output", "0")), read, write)
        model = g.get("model") or p.model or UNKNOWN_MODEL
        provider = p.provider or provider_for(model, None if model != UNKNOWN_MODEL else "unknown")
        cost = money(g["cost"]) if "cost" in g else None
        return Match(p, text.strip(), tokens, cost, model, provider, g.get("session"), g.get("session_cost"))
    return None


@dataclass(slots=True)
class Tracker:
    """Lines of one stream (a wrapped command, a captured pane) → records, exactly once.

    ``session`` names the stream (a pattern's ``session`` group overrides it per line);
    records of cumulative prints carry the whole cumulative value (see the module docstring).
    """

    session: str
    project: str | None
    patterns: list[Pattern]
    source: str = SOURCE
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _last: dict[tuple[str, str, str], Tokens] = field(default_factory=dict)
    _last_cost: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)
    _epoch: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _seen: dict[tuple[str, str], int] = field(default_factory=dict)
    _pending_total: dict[str, Match] = field(default_factory=dict)
    errors: int = 0

    def feed(self, line: str) -> list[UsageRecord]:
        try:
            m = match_line(line, self.patterns)
        except ValueError:
            self.errors += 1
            return []
        out: list[UsageRecord] = []
        if m is None:
            if not _BLOCK.match(strip_ansi(line)):
                out += self._flush_totals()
            return out
        session = m.session or self.session
        if m.pattern.total_only:
            self._pending_total[session] = m  # per-model lines of the same block replace it
            return out
        if m.pattern.name == "claude_model":
            self._pending_total.pop(session, None)
        else:
            out += self._flush_totals()
        rec = self._record(m, session)
        if rec is not None:
            out.append(rec)
        return out

    def finish(self) -> list[UsageRecord]:
        """Records still held back at the end of the stream (a lone ``Total cost`` line)."""
        return self._flush_totals()

    def _flush_totals(self) -> list[UsageRecord]:
        out = [r for s, m in self._pending_total.items() if (r := self._record(m, s)) is not None]
        self._pending_total.clear()
        return out

    def _record(self, m: Match, session: str) -> UsageRecord | None:
        if m.tokens.total == 0 and m.cost is None:
            return None
        if m.pattern.mode == "request":
            n_key = (session, m.line if m.marker is None else f"{m.line}|{m.marker}")
            n = self._seen[n_key] = self._seen.get(n_key, 0) + 1
            digest = hashlib.sha1(f"{n_key[1]}#{n}".encode(), usedforsecurity=False).hexdigest()[:20]
            key = f"term:{session}:req:{m.pattern.name}:{digest}"
        else:
            ident = (session, m.pattern.name, m.model)
            last, last_cost = self._last.get(ident), self._last_cost.get(ident)
            dropped = last is not None and m.tokens.merge_max(last) != m.tokens
            if dropped or (last_cost is not None and m.cost is not None and m.cost < last_cost):
                self._epoch[ident] = self._epoch.get(ident, 0) + 1  # the tool's counter was reset
            self._last[ident] = m.tokens
            if m.cost is not None:
                self._last_cost[ident] = m.cost
            key = f"term:{session}:{self._epoch.get(ident, 0)}:{m.pattern.name}:{m.model}"
        return UsageRecord(
            source=self.source,
            provider=m.provider,
            model=m.model,
            timestamp=self.clock(),
            dedup_key=key,
            tokens=m.tokens,
            cost=m.cost,
            cost_origin=CostOrigin.REPORTED if m.cost is not None else CostOrigin.UNKNOWN,
            session_id=session,
            project=self.project,
            requests=0 if m.tokens.total == 0 else 1,
        )


class LineSplitter:
    """Raw terminal bytes → complete lines (``\\n`` or a bare ``\\r`` redraw ends a line)."""

    def __init__(self) -> None:
        import codecs

        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""

    def feed(self, data: bytes) -> list[str]:
        self._buf += self._decoder.decode(data)
        parts = re.split(r"\r\n|\n|\r", self._buf)
        self._buf = parts.pop()
        return parts

    def finish(self) -> list[str]:
        rest, self._buf = self._buf + self._decoder.decode(b"", final=True), ""
        return [rest] if rest else []


# Patterns whose usage a file source already reads: recording both would count it twice.
_COVERED_BY = {"claude_usage": "claude_transcripts", "claude_model": "claude_transcripts",
               "claude_total": "claude_transcripts", "codex": "codex"}  # fmt: skip


def patterns_for(settings: Any, keep_covered: bool = False) -> tuple[list[Pattern], list[str]]:
    """The patterns a capture uses, and notes on what was left out.

    A default pattern whose tool's own files are read by a detected source (Claude Code's
    ``/cost`` while its transcripts are read, Codex's exit line while its rollouts are) is left
    out unless ``keep_covered``: the same usage would otherwise be counted twice."""
    from bridge.sources import _registry

    patterns = load_patterns(getattr(settings, "terminal_patterns", None))
    if keep_covered:
        return patterns, []
    detected: dict[str, bool] = {}
    out, notes = [], []
    for p in patterns:
        src = _COVERED_BY.get(p.name) if p in DEFAULT_PATTERNS else None
        if src is not None and src in _registry.names():
            if src not in detected:
                try:
                    detected[src] = _registry.get(src).factory(settings).status().detected
                except Exception:  # a broken source cannot cover anything
                    detected[src] = False
            if detected[src]:
                notes.append(f"pattern {p.name} skipped: {src} already records this usage")
                continue
        out.append(p)
    return out, notes


def commit(settings: Any, records: list[UsageRecord]) -> BatchResult:
    """Store records in the ledger (priced like every source's)."""
    from bridge.app import LazyPricer
    from bridge.ledger import Ledger

    if not records:
        return BatchResult()
    with Ledger.open(settings.state_dir) as ledger:
        pricer = LazyPricer(settings)
        result = ledger.commit(records, pricer)
        pricer.save()
    return result
