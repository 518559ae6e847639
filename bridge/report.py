"""Usage reports from the ledger: daily, weekly, monthly, per session, per model.

Days, weeks and months are buckets in the user's time zone (``--timezone``, else the system's).
A cost that includes requests without a known price is reported with the count of those
requests (a usage row without a request count, e.g. a provider's usage bucket, counts as one);
a bucket with no priced row has cost ``None``, never ``0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge._rows import from_pusd
from bridge._tz import system_tz
from bridge.errors import ConfigError
from bridge.ledger import Ledger

KINDS = ("daily", "weekly", "monthly", "session", "models")
_LABEL = {"daily": "date", "weekly": "week", "monthly": "month", "session": "sessionId", "models": "model"}
# --by: the dimension's JSON label, and the ledger column it needs beyond model and provider.
BY = ("provider", "model", "source", "project", "session")
_BY_LABEL = {"provider": "provider", "model": "model", "source": "source", "project": "project", "session": "sessionId"}
_BY_COLUMN = {"project": "project", "session": "session_id"}
_LIST = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "session": "sessions", "models": "models"}


@dataclass(slots=True)
class Line:
    """Token and cost sums of one bucket (or one group or model inside a bucket)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    cost_pusd: int = 0
    unpriced: int = 0
    requests: int = 0
    priced: bool = False  # some row has a known price (else, with unpriced rows, the cost is unknown)
    providers: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)

    def add(self, row: Sequence[Any], provider: str | None = None, source: str | None = None) -> None:
        self.input += int(row[0])
        self.output += int(row[1])
        self.cache_read += int(row[2])
        self.cache_creation += int(row[3])
        if row[4] is not None:  # None: no row of the group has a known price
            self.cost_pusd += int(row[4])
            self.priced = True
        self.unpriced += int(row[5])
        self.requests += int(row[6])
        if provider is not None:
            self.providers.add(provider)
        if source is not None:
            self.sources.add(source)

    def merge(self, other: Line) -> None:
        """Add ``other``'s sums, providers and sources."""
        self.add((other.input, other.output, other.cache_read, other.cache_creation,
                  other.cost_pusd if other.priced else None, other.unpriced, other.requests))  # fmt: skip
        self.providers |= other.providers
        self.sources |= other.sources

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_creation

    @property
    def cost(self) -> Decimal | None:
        """Known cost; None when the bucket has rows without a price and none with one."""
        return None if self.unpriced and not self.priced else from_pusd(self.cost_pusd)

    def as_json(self) -> dict[str, Any]:
        cost = self.cost
        return {
            "provider": _one_or_list(self.providers),
            "source": _one_or_list(self.sources),
            "inputTokens": self.input,
            "outputTokens": self.output,
            "cacheCreationTokens": self.cache_creation,
            "cacheReadTokens": self.cache_read,
            "totalTokens": self.total,
            # "f": a whole number of dollars is "80", never normalize()'s "8E+1".
            "totalCost": None if cost is None else format(cost.normalize(), "f") if cost else "0",
            "unpricedRequests": self.unpriced,
            "requests": self.requests,
        }


def _one_or_list(values: set[str]) -> str | list[str] | None:
    """One value as itself, several as a sorted list (a row spanning providers or sources)."""
    if not values:
        return None
    return next(iter(values)) if len(values) == 1 else sorted(values)


@dataclass(slots=True)
class Bucket:
    """A period, session or model; with ``--by``, ``groups`` splits it by that dimension."""

    key: str
    line: Line = field(default_factory=Line)
    models: dict[tuple[str, str], Line] = field(default_factory=dict)
    groups: dict[str, Bucket] = field(default_factory=dict)
    project: str | None = None
    last_activity: datetime | None = None

    def add(self, sums: Sequence[Any], model: str, provider: str, source: str) -> None:
        self.line.add(sums, provider, source)
        self.models.setdefault((model, provider), Line()).add(sums, provider, source)

    def ordered_groups(self) -> list[Bucket]:
        """Largest first (total tokens), then by name: stable for scripts and snapshots."""
        return sorted(self.groups.values(), key=lambda g: (-g.line.total, g.key))

    def as_json(self, breakdown: bool) -> dict[str, Any]:
        item: dict[str, Any] = {**self.line.as_json(), "modelsUsed": sorted({m for m, _ in self.models})}
        if breakdown:
            item["modelBreakdowns"] = [
                {"modelName": m, **line.as_json()} for (m, _p), line in sorted(self.models.items())
            ]
        return item


@dataclass(slots=True)
class Report:
    kind: str
    timezone: str
    buckets: list[Bucket]
    totals: Line
    by: str | None = None

    def as_json(self, breakdown: bool = True) -> dict[str, Any]:
        items = []
        breakdown = breakdown and self.kind != "models"  # a models row is one model already
        for b in self.buckets:
            item: dict[str, Any] = {_LABEL[self.kind]: b.key, **b.as_json(breakdown)}
            if self.kind == "models":
                del item["modelsUsed"]
            if self.kind == "session":
                item["project"] = b.project
                item["lastActivity"] = b.last_activity.isoformat() if b.last_activity else None
            if self.by is not None:
                label = _BY_LABEL[self.by]
                item["groups"] = [{label: g.key, **g.as_json(breakdown)} for g in b.ordered_groups()]
            items.append(item)
        out: dict[str, Any] = {_LIST[self.kind]: items, "totals": self.totals.as_json(), "timezone": self.timezone}
        if self.by is not None:
            out["by"] = self.by
        return out


def resolve_tz(name: str | None) -> tzinfo:
    """``--timezone`` if given, else the system's zone with its rules (``bridge._tz.system_tz``)."""
    if not name:
        return system_tz()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory
        raise ConfigError("--timezone", f"unknown IANA time zone {name!r}") from None


def parse_day(value: str, flag: str) -> date:
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ConfigError(flag, f"expected YYYY-MM-DD or YYYYMMDD, got {value!r}")


def day_start_ms(d: date, tz: tzinfo) -> int | None:
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
    exclude: Sequence[tuple[str, str, int]] = (),
) -> Report:
    """Aggregate the ledger into ``kind`` buckets in time zone ``tz`` (until is inclusive), each
    split by the ``by`` dimension when given; ``exclude``: (source, provider, from ms) rows left
    out (``bridge.views.default_exclusions``)."""
    if kind not in KINDS:
        raise ConfigError("report", f"unknown report {kind!r} (one of {', '.join(KINDS)})")
    if by is not None and by not in BY:
        raise ConfigError("--by", f"unknown dimension {by!r} (one of {', '.join(BY)})")
    if (kind, by) in (("models", "model"), ("session", "session")):
        raise ConfigError("--by", f"report {kind} already has a row per {by}")
    if since and until and since > until:
        raise ConfigError("--since/--until", f"--since {since.isoformat()} is after --until {until.isoformat()}")
    since_ms = day_start_ms(since, tz) if since else None
    until_ms = day_start_ms(until + timedelta(days=1), tz) if until and until < date.max else None
    buckets: dict[str, Bucket] = {}
    totals = Line()
    group = "session" if kind == "session" else "quarter"
    extra = ["source"] + ([_BY_COLUMN[by]] if by in _BY_COLUMN else [])
    days_in = tz if kind != "session" and by is None else None  # rows merged per local day suffice
    for row in ledger.aggregate(group, since_ms, until_ms, sources, extra, exclude, days_in):
        g, model, provider, info, sums = row[0], str(row[1]), str(row[2]), row[3], row[4:11]
        source = str(row[11])
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
        b.add(sums, model, provider, source)
        totals.add(sums, provider, source)
        if by is not None:
            value = str(row[12]) if by in _BY_COLUMN else {"provider": provider, "model": model, "source": source}[by]
            value = value or "(none)"
            sub = b.groups.get(value)
            if sub is None:
                sub = b.groups[value] = Bucket(value)
            sub.add(sums, model, provider, source)
        if info is not None:
            last_ms, _, project = str(info).partition("|")
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
