"""Usage reports from the ledger: daily, weekly, monthly, per session, per model.

Days, weeks and months are buckets in the user's time zone (``--timezone``, else the system's).
A cost that includes requests without a known price is reported with the count of those
requests; a bucket whose every request is unpriced has cost ``None``, never ``0``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge._rows import from_pusd
from bridge.errors import ConfigError
from bridge.ledger import Ledger

log = logging.getLogger("tokenbridge.report")

KINDS = ("daily", "weekly", "monthly", "session", "models")
_LABEL = {"daily": "date", "weekly": "week", "monthly": "month", "session": "sessionId", "models": "model"}
BY = ("project", "provider", "model", "source", "session")
_LIST = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "session": "sessions", "models": "models"}


@dataclass(slots=True)
class Line:
    """Token and cost sums of one bucket (or one model inside a bucket)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    cost_pusd: int = 0
    unpriced: int = 0
    requests: int = 0

    def add(self, row: Sequence[Any]) -> None:
        self.input += int(row[0])
        self.output += int(row[1])
        self.cache_read += int(row[2])
        self.cache_creation += int(row[3])
        self.cost_pusd += int(row[4])
        self.unpriced += int(row[5])
        self.requests += int(row[6])

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_creation

    @property
    def cost(self) -> Decimal | None:
        """Known cost; None when no request in the bucket has a price."""
        return None if self.unpriced == self.requests and self.requests else from_pusd(self.cost_pusd)

    def as_json(self) -> dict[str, Any]:
        cost = self.cost
        return {
            "inputTokens": self.input,
            "outputTokens": self.output,
            "cacheCreationTokens": self.cache_creation,
            "cacheReadTokens": self.cache_read,
            "totalTokens": self.total,
            "totalCost": None if cost is None else str(cost.normalize() if cost else Decimal(0)),
            "unpricedRequests": self.unpriced,
            "requests": self.requests,
        }


@dataclass(slots=True)
class Bucket:
    key: str
    line: Line = field(default_factory=Line)
    models: dict[tuple[str, str], Line] = field(default_factory=dict)
    project: str | None = None
    last_activity: datetime | None = None
    by: dict[str, Line] = field(default_factory=dict)  # the ``--by`` breakdown


@dataclass(slots=True)
class Report:
    kind: str
    timezone: str
    buckets: list[Bucket]
    totals: Line
    by: str | None = None

    def as_json(self, breakdown: bool = True) -> dict[str, Any]:
        items = []
        for b in self.buckets:
            item: dict[str, Any] = {_LABEL[self.kind]: b.key, **b.line.as_json()}
            if self.kind != "models":
                item["modelsUsed"] = sorted({m for m, _ in b.models})
            if self.kind == "session":
                item["project"] = b.project
                item["lastActivity"] = b.last_activity.isoformat() if b.last_activity else None
            if breakdown and self.kind != "models":
                item["modelBreakdowns"] = [
                    {"modelName": m, "provider": p, **line.as_json()} for (m, p), line in sorted(b.models.items())
                ]
            if self.kind == "models":
                item["provider"] = next(iter(b.models))[1] if b.models else None
            if self.by is not None:
                item[f"{self.by}Breakdowns"] = [{self.by: k, **line.as_json()} for k, line in sorted(b.by.items())]
            items.append(item)
        return {_LIST[self.kind]: items, "totals": self.totals.as_json(), "timezone": self.timezone}


def resolve_tz(name: str | None) -> tzinfo:
    """``--timezone`` if given, else the system's zone with its rules (see ``system_tz``)."""
    if not name:
        return system_tz()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory
        raise ConfigError("--timezone", f"unknown IANA time zone {name!r}") from None


def system_tz(
    env: Mapping[str, str] | None = None,
    localtime: Path = Path("/etc/localtime"),
    timezone_file: Path = Path("/etc/timezone"),
) -> tzinfo:
    """The system's time zone *with its rules*, so days on both sides of a DST change are right.

    ``TZ`` (an IANA name, ``:name`` or a zoneinfo file path) wins, as for the C library; else the
    name under ``zoneinfo/`` that ``/etc/localtime`` links to, else ``/etc/timezone``, else the
    rules in ``/etc/localtime`` itself. Today's fixed UTC offset is only the last resort.
    """
    env = os.environ if env is None else env
    raw = env.get("TZ")
    if raw is not None:
        spec = raw.strip().removeprefix(":")
        if not spec:
            return UTC  # the C library reads an empty TZ as UTC
        zone = _zone_from_path(Path(spec)) if spec.startswith("/") else _zone(spec)
        if zone is not None:
            return zone
        log.warning("TZ=%r is not an IANA time zone name: using today's UTC offset (pass --timezone)", raw)
        return _fixed_offset()
    zone = _zone_from_path(localtime)
    if zone is None:
        try:
            zone = _zone(timezone_file.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            zone = None
    return zone if zone is not None else _fixed_offset()


def _zone(key: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(key) if key else None
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _zone_from_path(path: Path) -> ZoneInfo | None:
    """A zone named by where ``path`` (a symlink into a zoneinfo tree) points, else its rules."""
    try:
        target = str(path.readlink()) if path.is_symlink() else str(path)
    except OSError:
        return None
    _, sep, key = target.partition("zoneinfo/")
    if sep:
        for variant in ("posix/", "right/"):
            key = key.removeprefix(variant)
        zone = _zone(key)
        if zone is not None:
            return zone
    try:
        with path.open("rb") as fh:  # a copied zone file: its rules without a name
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return None


def _fixed_offset() -> tzinfo:
    local = datetime.now().astimezone().tzinfo
    return local if local is not None else UTC


def parse_day(value: str, flag: str) -> date:
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ConfigError(flag, f"expected YYYY-MM-DD or YYYYMMDD, got {value!r}")


def _day_start_ms(d: date, tz: tzinfo) -> int | None:
    """Epoch ms of local midnight; None past either end of the calendar (year 1, year 9999).

    Such a bound excludes nothing a timestamp can express, so no bound is the exact meaning.
    """
    try:
        return int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp() * 1000)
    except (OverflowError, ValueError):
        return None


def _bucket_key(kind: str, local: datetime) -> str:
    if kind == "daily":
        return local.date().isoformat()
    if kind == "weekly":
        return (local.date() - timedelta(days=local.weekday())).isoformat()
    return f"{local.year:04d}-{local.month:02d}"


def build(
    ledger: Ledger,
    kind: str,
    tz: tzinfo,
    since: date | None = None,
    until: date | None = None,
    sources: Sequence[str] | None = None,
    by: str | None = None,
) -> Report:
    """Aggregate the ledger into ``kind`` buckets in time zone ``tz`` (until is inclusive);
    ``by`` (one of ``BY``) adds a breakdown of each bucket by that dimension."""
    if kind not in KINDS:
        raise ConfigError("report", f"unknown report {kind!r} (one of {', '.join(KINDS)})")
    if by is not None and by not in BY:
        raise ConfigError("--by", f"unknown dimension {by!r} (one of {', '.join(BY)})")
    if since and until and since > until:
        raise ConfigError("--since/--until", f"--since {since.isoformat()} is after --until {until.isoformat()}")
    since_ms = _day_start_ms(since, tz) if since else None
    until_ms = _day_start_ms(until + timedelta(days=1), tz) if until and until < date.max else None
    buckets: dict[str, Bucket] = {}
    totals = Line()
    group = "session" if kind == "session" else "quarter"
    for row in ledger.aggregate(group, since_ms, until_ms, sources, by):
        g, model, provider, extra = row[0], str(row[1]), str(row[2]), row[3]
        sums = row[5:] if by else row[4:]
        if kind == "session":
            key = str(g) or "(none)"
        elif kind == "models":
            key = model
        else:
            local = datetime.fromtimestamp(int(g) * 900, UTC).astimezone(tz)
            key = _bucket_key(kind, local)
        b = buckets.get(key)
        if b is None:
            b = buckets[key] = Bucket(key)
        b.line.add(sums)
        b.models.setdefault((model, provider), Line()).add(sums)
        totals.add(sums)
        if by is not None:
            b.by.setdefault(str(row[4]) or "(none)", Line()).add(sums)
        if extra is not None:
            last_ms, _, project = str(extra).partition("|")
            last = datetime.fromtimestamp(int(last_ms) / 1000, UTC).astimezone(tz)
            if b.last_activity is None or last > b.last_activity:
                b.last_activity, b.project = last, project or b.project
    if kind == "session":
        for sid, project in ledger.session_projects(since_ms, until_ms, sources).items():
            if (sid or "(none)") in buckets:
                buckets[sid or "(none)"].project = project  # where the session started
    ordered = sorted(buckets.values(), key=lambda b: (b.last_activity or datetime.min.replace(tzinfo=UTC), b.key))
    if kind not in ("session", "models"):
        ordered = sorted(buckets.values(), key=lambda b: b.key)
    elif kind == "models":
        ordered = sorted(buckets.values(), key=lambda b: -b.line.total)
    return Report(kind, getattr(tz, "key", None) or str(tz), ordered, totals, by)
