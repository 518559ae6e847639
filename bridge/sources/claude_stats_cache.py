"""Claude Code's stats cache: ``<root>/stats-cache.json``.

Where: the same roots as the transcripts (``~/.claude``, ``~/.config/claude`` or
``CLAUDE_CONFIG_DIR``). In ``tokenbridge run`` it is driven by watchdog file events.

Odd semantics: the file is a whole-file aggregate that Claude Code rewrites on recompute. It
describes the *same* usage as the transcripts, so it must never add to them. The rule:

* Only ``dailyModelTokens`` days **before the first local day the transcripts cover** in the
  ledger are used (transcripts are kept 30 days by default; older days live only here), and
  only days up to ``lastComputedDate`` (completed days). With no transcript usage at all,
  every completed day is used. It never runs before the transcript source has finished a scan.
* A day's total per model has no split by token type, so it is split in proportion to that
  model's all-time ``modelUsage`` (input, output, cache read, cache creation), exactly summing
  to the day's total; a model without ``modelUsage`` counts as ``input``. Costs are estimates.
* Each (day, model) is one ledger row keyed ``stats:<day>:<model>``. A rewrite that raises a
  day's total adds only the increase, split by the current proportions on top of the stored
  split (so every type only grows and the sum stays exact); a lower total is ignored.

What it yields: ``UsageRecord(source="claude_stats_cache")`` at local noon of each day.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bridge._rows import EVENTS_SOURCE
from bridge._tz import system_tz
from bridge.ledger import CostFunction, Ledger
from bridge.record import Tokens, UsageRecord
from bridge.sources._base import BaseSource, ProgressHook, ScanStats, SourceStatus, Watch, infer_provider, log
from bridge.sources._registry import SourceSpec

if TYPE_CHECKING:
    from bridge.config import Settings

NAME = "claude_stats_cache"
FILE = "stats-cache.json"
KNOWN_VERSIONS = frozenset({1, 2, 3, 4, 5})
TRANSCRIPTS_SCANNED = ("claude_transcripts", "scanned")
_FIELDS = ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheCreationInputTokens")


def split_tokens(total: int, usage: dict[str, Any] | None) -> Tokens:
    """Split a day's total in proportion to the model's all-time usage by type (largest remainder)."""
    weights = [int(usage.get(f, 0) or 0) if isinstance(usage, dict) else 0 for f in _FIELDS]
    if total <= 0:
        return Tokens()
    if sum(weights) <= 0:
        return Tokens(input=total)
    s = sum(weights)
    shares = [total * w // s for w in weights]
    remainders = sorted(range(4), key=lambda i: (-(total * weights[i] % s), i))
    for i in remainders[: total - sum(shares)]:
        shares[i] += 1
    return Tokens(input=shares[0], output=shares[1], cache_read=shares[2], cache_creation=shares[3])


def _daily(doc: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{day: {model: tokens}} from any known version of the file."""
    out: dict[str, dict[str, int]] = {}
    for entry in doc.get("dailyModelTokens") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("date"), str):
            continue
        by_model = entry.get("tokensByModel")
        if isinstance(by_model, dict):
            out[entry["date"]] = {
                str(m): int(n) for m, n in by_model.items() if isinstance(n, int) and not isinstance(n, bool)
            }
    return out


class ClaudeStatsCache(BaseSource):
    """The stats-cache source."""

    name = NAME

    def __init__(self, roots: list[Path], explicit: bool = False, tz: Any = None) -> None:
        self.roots = roots
        self.explicit = explicit
        self.tz = tz if tz is not None else system_tz()  # the zone Claude Code's dates are in, with DST
        self._warned_versions: set[object] = set()

    def files(self) -> list[Path]:
        return [r / FILE for r in self.roots if (r / FILE).is_file()]

    def watches(self) -> list[Watch]:
        return [Watch(r, False, (FILE,)) for r in self.roots if r.is_dir()]

    def status(self) -> SourceStatus:
        files = self.files()
        return SourceStatus(NAME, bool(files), True, [str(r) for r in self.roots], len(files))

    def _cutoff(self, ledger: Ledger) -> date | None:
        """First local day the transcripts cover (days before it are ours), or None = no limit.

        A request first seen as a Claude Code event keeps that row when its line is read (docs/events.md), so the
        event rows count as transcript days too: a day with either is never added again from here."""
        days = [d for d in (ledger.first_day_ms(s) for s in ("claude_transcripts", EVENTS_SOURCE)) if d is not None]
        if not days:
            return None
        first = min(days)
        return datetime.fromtimestamp(first / 1000, UTC).astimezone(self.tz).date()

    def _noon(self, day: date) -> datetime:
        return datetime.combine(day, time(12), tzinfo=self.tz).astimezone(UTC)

    def scan(
        self,
        ledger: Ledger,
        pricer: CostFunction,
        since: datetime | None = None,
        progress: ProgressHook | None = None,
        paths: Collection[Path] | None = None,
    ) -> ScanStats:
        stats = ScanStats(NAME)
        if ledger.state(*TRANSCRIPTS_SCANNED) is None:
            log.info("stats cache waits for a first transcript scan (it may only fill days transcripts lack)")
            return stats
        cutoff = self._cutoff(ledger)
        if cutoff is not None and ledger.state(NAME, "cutoff") != cutoff.isoformat():
            # The transcripts' first day moved (first pass, a first sync limited with --days, a
            # new root, a restored file): days they now cover are theirs, so the stats rows of
            # those days go. Checked only when the cutoff changes.
            since_ms = int(datetime.combine(cutoff, time(0), tzinfo=self.tz).timestamp() * 1000)
            removed = ledger.retract(NAME, since_ms)
            if removed:
                log.info("stats cache: %d day/model row(s) now covered by transcripts were removed", removed)
            ledger.set_state(NAME, "cutoff", cutoff.isoformat())
        for path in self.files():
            stats.files_seen += 1
            try:
                raw = path.read_bytes()
            except OSError as exc:
                stats.errors.append(f"{path}: {exc.strerror or exc}")
                continue
            import hashlib  # here: its OpenSSL start-up is 2 ms of every one-off sync

            digest = hashlib.sha256(raw).hexdigest() + f"|{cutoff}"
            if ledger.state(NAME, f"digest:{path}") == digest:
                continue
            try:
                doc = orjson.loads(raw)
                if not isinstance(doc, dict):
                    raise ValueError("top level is not an object")
            except (orjson.JSONDecodeError, ValueError) as exc:
                # Claude Code rewrites the file whole; a half-written file is read on the next event.
                stats.malformed += 1
                log.warning("%s: not valid JSON yet (%s); will retry on the next change", path, exc)
                continue
            version = doc.get("version")
            if version not in KNOWN_VERSIONS and version not in self._warned_versions:
                self._warned_versions.add(version)
                log.warning("%s: unknown stats-cache version %r; reading the fields it shares", path, version)
            records = self._records(doc, cutoff, ledger)
            stats.records += len(records)
            stats.files_read += 1
            stats.bytes_read += len(raw)
            result = ledger.commit(records, pricer, state={(NAME, f"digest:{path}"): digest})
            stats.new_requests += result.new_requests
        return stats

    def _records(self, doc: dict[str, Any], cutoff: date | None, ledger: Ledger) -> list[UsageRecord]:
        last = doc.get("lastComputedDate")
        last_day = date.fromisoformat(last) if isinstance(last, str) else datetime.now(self.tz).date() - timedelta(1)
        model_usage = doc.get("modelUsage") if isinstance(doc.get("modelUsage"), dict) else {}
        wanted: list[tuple[date, str, str, int]] = []
        for day_s, by_model in sorted(_daily(doc).items()):
            try:
                day = date.fromisoformat(day_s)
            except ValueError:
                continue
            if day > last_day or (cutoff is not None and day >= cutoff):
                continue
            wanted += [(day, day_s, m, n) for m, n in by_model.items() if n > 0 and m != "<synthetic>"]
        stored = ledger.tokens_for([f"stats:{d}:{m}" for _, d, m, _ in wanted])
        out = []
        for day, day_s, model, total in wanted:
            before = stored.get(f"stats:{day_s}:{model}", Tokens())
            if total <= before.total:
                continue
            extra = split_tokens(total - before.total, model_usage.get(model))  # type: ignore[union-attr]
            tokens = Tokens(
                before.input + extra.input,
                before.output + extra.output,
                before.cache_read + extra.cache_read,
                before.cache_creation + extra.cache_creation,
            )
            try:
                out.append(
                    UsageRecord(
                        source=NAME,
                        provider=infer_provider(model),
                        model=model,
                        timestamp=self._noon(day),
                        dedup_key=f"stats:{day_s}:{model}",
                        tokens=tokens,
                    )
                )
            except ValueError as exc:
                log.warning("stats cache: %s %s skipped: %s", day_s, model, exc)
        return out


def _build(settings: Settings) -> ClaudeStatsCache:
    from bridge.sources.claude_transcripts import default_roots

    roots, explicit = default_roots(settings.env)
    return ClaudeStatsCache(roots, explicit=explicit)


SPECS = (
    SourceSpec(
        NAME,
        "snapshot",
        _build,
        "Claude Code stats cache (stats-cache.json; used for days the transcripts no longer cover)",
        group="claude",
        settings=("CLAUDE_CONFIG_DIR",),
        order=20,  # its rule depends on what the transcripts cover
        provider="anthropic",
    ),
)
