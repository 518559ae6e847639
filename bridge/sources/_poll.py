"""The shared driver of polled sources: provider usage, cost and balance HTTP APIs.

A polled source subclasses ``PolledSource`` and implements ``poll``, which yields ``Batch``es:
the records of one endpoint's fully drained window together with that endpoint's new cursor.
The driver does the rest, the same way for every provider:

* **Keys** come from one environment variable per provider (``Api.key_env``). Without it the
  source is *not configured*: ``sources`` shows it as not detected, a pass does nothing and
  records no health. A key is only ever put in a request header: messages are built from status
  codes, paths and the provider's message with the key scrubbed, and the base URL's user info
  is never shown.
* **Exactly once**: each batch and its cursor commit in one ledger transaction, so a crash never
  loses or repeats a window. Records are ``replace=True`` buckets: a re-read bucket replaces its
  stored value (up or down) and totals move by the difference.
* **Schedule** (``due_in``): the next poll is due ``interval`` after the last attempt; failures
  back off exponentially (with jitter) up to the interval's cap; a 429 waits for the provider's
  ``Retry-After`` and is never retried early, not even by a manual ``sync``.
* **Pagination**: ``Http.pages`` follows ``next_page`` with otherwise identical parameters,
  stops on a repeated cursor and caps the number of pages.
* **Errors** are ``PollError``s with a ``kind`` (``http_401``, ``http_403``, ``http_429``,
  ``http_500``, ``network``, ``timeout``, ``bad_response``, ``bad_key``) that ``app.scan_one``
  records as the source's health; what was stored before stays.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from bridge import config
from bridge.errors import PollError
from bridge.ledger import CostFunction, Gauge, Ledger
from bridge.record import CostOrigin, UsageRecord
from bridge.sources._base import BaseSource, ProgressHook, ScanStats, SourceStatus

if TYPE_CHECKING:
    import httpx

    from bridge.config import Settings

log = logging.getLogger("tokenbridge.sources.poll")
_T = TypeVar("_T")

HOUR = 3600
DAY = 86400
BACKFILL_S = 30 * DAY  # first poll of an endpoint without --days: the providers keep at least this
MAX_PAGES = 100
MIN_BACKOFF_S = 30.0
TIMEOUT_S = 30.0
_SCHEDULE = "schedule"
# What a header value may hold (visible ASCII): anything else would make the HTTP library raise
# an error that quotes the value.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class Api:
    """One provider's HTTP API: where its key and base URL come from and how the key is sent."""

    provider: str
    key_env: str
    base_env: str
    default_base: str
    auth: Callable[[str], dict[str, str]]
    interval_env: str = ""
    fallback_env: str = ""  # a second key variable tried when ``key_env`` is not set


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass(slots=True)
class Batch:
    """One endpoint's window: its records, the cursor state to store with them (keys local to
    the source) and gauges (balances, limits) to set afterwards."""

    records: list[UsageRecord] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    # None: this batch says nothing about gauges. A list: all of the source's gauges now (the
    # source's other stored gauges are dropped, so a vanished currency is not exported forever).
    gauges: list[Gauge] | None = None


def redact_url(url: str) -> str:
    """A base URL for messages: scheme, host, port and path, never user info or a query."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


class Http:
    """One pass's HTTP access to one provider: auth headers, exact JSON decoding (numbers with a
    fraction become ``Decimal``), errors named by kind, the key scrubbed from every message."""

    def __init__(self, source: str, client: httpx.Client, base: str, headers: dict[str, str], secret: str) -> None:
        self.source = source
        self.client = client
        self.base = base.rstrip("/")
        self.headers = headers
        self._secret = secret

    def scrub(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    def _error(self, kind: str, message: str, retry_after: float | None = None) -> PollError:
        return PollError(self.source, kind, self.scrub(message), retry_after)

    def get(self, path: str, params: Any = None) -> Any:
        """GET ``path`` and decode its JSON body; raises ``PollError`` for anything else."""
        import httpx

        try:
            resp = self.client.get(self.base + path, params=params, headers=self.headers)
        except httpx.TimeoutException:
            raise self._error("timeout", f"GET {path}: no answer from {redact_url(self.base)} in time") from None
        except httpx.HTTPError as exc:
            # The exception text can name the URL (never the key: keys travel in headers only).
            raise self._error(
                "network", f"GET {path}: cannot reach {redact_url(self.base)} ({type(exc).__name__})"
            ) from None
        if resp.status_code != 200:
            raise self._status_error(path, resp)
        try:
            return json.loads(resp.text, parse_float=Decimal)
        except ValueError:
            raise self._error(
                "bad_response", f"GET {path}: response is not valid JSON ({len(resp.content)} bytes); will retry"
            ) from None

    def _status_error(self, path: str, resp: httpx.Response) -> PollError:
        status = resp.status_code
        detail = _provider_message(resp)
        text = f"GET {path}: HTTP {status}" + (f" ({detail})" if detail else "")
        retry = _retry_after(resp.headers.get("retry-after"))
        if status in (401, 403):
            text += f"; check {self.source}'s key"
        elif status == 429:
            text += "; rate limited" + (f", retrying after {retry:g}s" if retry else "")
        return self._error(f"http_{status}", text, retry)

    def pages(self, path: str, params: list[tuple[str, str]], max_pages: int = MAX_PAGES) -> Iterator[dict[str, Any]]:
        """Every page of a ``{data, has_more, next_page}`` listing, with identical parameters."""
        seen: set[str] = set()
        page: str | None = None
        for _ in range(max_pages):
            doc = self.get(path, params if page is None else [*params, ("page", page)])
            if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
                raise self._error("bad_response", f"GET {path}: no 'data' list in the response")
            yield doc
            nxt = doc.get("next_page")
            if not doc.get("has_more") or not nxt:
                return
            if not isinstance(nxt, str) or nxt in seen:
                raise self._error("bad_response", f"GET {path}: the provider repeated a page cursor")
            seen.add(nxt)
            page = nxt
        raise self._error("bad_response", f"GET {path}: more than {max_pages} pages; narrow the window (--days)")


def _provider_message(resp: httpx.Response) -> str:
    """The provider's own error message (``error.message`` in every documented shape), short."""
    try:
        doc = json.loads(resp.text)
    except ValueError:
        return ""
    err = doc.get("error") if isinstance(doc, dict) else None
    msg = err.get("message") if isinstance(err, dict) else None
    if not isinstance(msg, str):
        return ""
    msg = " ".join(msg.split())
    return msg[:200] + ("…" if len(msg) > 200 else "")


def _retry_after(raw: str | None) -> float | None:
    """``Retry-After`` in seconds (integer seconds or an HTTP date), None when absent or bad."""
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            value = parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return value if math.isfinite(value) and value > 0 else None


@dataclass(slots=True)
class Schedule:
    """A polled source's schedule, kept in the ledger (readable by ``sources`` beside ``run``)."""

    last_poll: float | None = None
    last_ok: float | None = None
    next_poll: float | None = None
    not_before: float | None = None  # a 429's Retry-After: never poll before it
    failures: int = 0

    @classmethod
    def load(cls, ledger: Ledger, source: str) -> Schedule:
        raw = ledger.state(source, _SCHEDULE)
        if not raw:
            return cls()
        try:
            d = json.loads(raw)
            return cls(d.get("last_poll"), d.get("last_ok"), d.get("next_poll"), d.get("not_before"), d["failures"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls()

    def dump(self) -> str:
        return json.dumps(
            {
                "last_poll": self.last_poll,
                "last_ok": self.last_ok,
                "next_poll": self.next_poll,
                "not_before": self.not_before,
                "failures": self.failures,
            }
        )


def backoff_s(failures: int, interval_s: float, rng: Callable[[], float] = random.random) -> float:
    """Delay after ``failures`` consecutive failures: 30 s doubling, capped at the interval,
    with up to 25 % jitter on top (so several sources never retry in lockstep)."""
    base = min(interval_s, MIN_BACKOFF_S * 2.0 ** min(max(failures - 1, 0), 30))
    return base * (1 + 0.25 * rng())


class PolledSource(BaseSource):
    """The driver: subclasses set ``name``, ``api``, ``default_interval_s`` and implement ``poll``."""

    name: str
    api: Api
    default_interval_s: float = 300.0
    notes: tuple[str, ...] = ()
    skipped_rows = 0

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        self.env = settings.env
        self.config = settings.providers
        self.client = client
        cfg = self.config
        p = self.api.provider
        # The config file may name another variable for the key (never the key itself).
        self.key_env = str(cfg.get(_key_setting(self.api.key_env, p)) or self.api.key_env)
        key = self.env.get(self.key_env, "").strip()
        if not key and self.api.fallback_env:
            key = self.env.get(str(cfg.get(_key_setting(self.api.fallback_env, p)) or self.api.fallback_env), "")
            key = key.strip()
        self.key = key or None
        base = self.env.get(self.api.base_env, "").strip() or str(cfg.get(f"{p}_base_url") or "")
        self.base = base or self.api.default_base
        env_name = self.api.interval_env or f"TOKENBRIDGE_{p.upper()}_POLL_INTERVAL"
        default = float(cfg.get(f"{p}_poll_interval_seconds") or self.default_interval_s)
        self.interval_s = config.seconds_env(self.env, env_name, default)

    # -- what the application sees --------------------------------------------------------------

    def status(self) -> SourceStatus:
        notes = list(self.notes)
        if self.key is None:
            also = f" (or {self.api.fallback_env})" if self.api.fallback_env else ""
            notes.insert(0, f"not configured: set {self.key_env}{also}")
        return SourceStatus(self.name, self.key is not None, True, [redact_url(self.base)], 0, notes)

    def due_in(self, ledger: Ledger, now: float) -> float | None:
        if self.key is None:
            return None
        sched = Schedule.load(ledger, self.name)
        due = max(sched.next_poll or 0.0, sched.not_before or 0.0)
        return due - now

    def poll_info(self, ledger: Ledger) -> dict[str, Any]:
        """Schedule facts for ``sources``: configured?, last poll, last success, next poll."""
        sched = Schedule.load(ledger, self.name)
        nxt = max(sched.next_poll or 0.0, sched.not_before or 0.0) or None
        return {
            "provider": self.api.provider,
            "configured": self.key is not None,
            "keyEnv": self.key_env,
            "baseUrl": redact_url(self.base),
            "intervalSeconds": self.interval_s,
            "lastPoll": _iso(sched.last_poll),
            "lastSuccess": _iso(sched.last_ok),
            "nextPoll": _iso(nxt) if self.key is not None else None,
            "rateLimitedUntil": _iso(sched.not_before),
        }

    # -- one pass -------------------------------------------------------------------------------

    def scan(
        self,
        ledger: Ledger,
        pricer: CostFunction,
        since: datetime | None = None,
        progress: ProgressHook | None = None,
        paths: Collection[Path] | None = None,
    ) -> ScanStats:
        stats = ScanStats(self.name)
        self.skipped_rows = 0
        if self.key is None:
            stats.attempted = False
            if any(g.source == self.name for g in ledger.gauges()):
                ledger.set_gauges(self.name, [], exclusive=True)  # key removed: its balance is no longer known
            return stats
        now = time.time()
        sched = Schedule.load(ledger, self.name)
        if sched.not_before is not None and now < sched.not_before:
            stats.attempted = False
            stats.errors.append(
                f"rate limited by {self.api.provider}: not polled before {_iso(sched.not_before)} (Retry-After)"
            )
            return stats
        parts = urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self._failed(ledger, sched, now, None)
            raise PollError(self.name, "config", f"{self.api.base_env}: not an http(s) URL: {redact_url(self.base)!r}")
        if not _HEADER_SAFE.fullmatch(self.key):
            self._failed(ledger, sched, now, None)
            raise PollError(self.name, "bad_key", f"{self.key_env} is set but is not a valid key (value not shown)")
        owned = self.client is None
        client = self.client if self.client is not None else make_client()
        http = Http(self.name, client, self.base, self.api.auth(self.key), self.key)
        try:
            for batch in self.poll(http, ledger, since, now):
                self._note_revisions(ledger, batch.records)
                state = {(self.name, k): v for k, v in batch.state.items()}
                result = ledger.commit(batch.records, pricer, state=state)
                if batch.gauges is not None:
                    ledger.set_gauges(self.name, batch.gauges, exclusive=True)
                stats.records += len(batch.records)
                stats.new_requests += result.new_requests
        except PollError as exc:
            self._failed(ledger, sched, now, exc)
            raise
        except (KeyError, TypeError, ValueError, AttributeError, InvalidOperation) as exc:
            # A response of the right JSON but the wrong shape: nothing of it was stored.
            self._failed(ledger, sched, now, None)
            raise PollError(
                self.name, "bad_response", f"unexpected response shape ({type(exc).__name__}); will retry"
            ) from None
        finally:
            if owned:
                client.close()
        stats.malformed = self.skipped_rows
        sched.last_poll = sched.last_ok = now
        sched.next_poll = now + self.interval_s
        sched.not_before = None
        sched.failures = 0
        ledger.set_state(self.name, _SCHEDULE, sched.dump())
        return stats

    def _note_revisions(self, ledger: Ledger, records: list[UsageRecord]) -> None:
        """Log, once per correction, buckets the provider revised down (the ledger replaces them
        and totals go down by the difference; exported counters hold their highest value)."""
        stored = ledger.tokens_for([r.dedup_key for r in records if r.tokens.total])
        down = [r for r in records if r.dedup_key in stored and r.tokens.total < stored[r.dedup_key].total]
        if down:
            r = down[0]
            log.info(
                "%s: %s revised %d bucket(s) down (e.g. %s at %s: %d -> %d tokens); stored values replaced",
                self.name, self.api.provider, len(down), r.model, r.timestamp.isoformat(),
                stored[r.dedup_key].total, r.tokens.total,
            )  # fmt: skip

    def _failed(self, ledger: Ledger, sched: Schedule, now: float, exc: PollError | None) -> None:
        sched.last_poll = now
        sched.failures += 1
        delay = backoff_s(sched.failures, self.interval_s)
        if exc is not None and exc.kind == "http_429":
            # The provider's Retry-After is when to come back: never earlier (no jitter below
            # it); without one, back off as usual, and neither before that.
            delay = exc.retry_after if exc.retry_after is not None else delay
            sched.not_before = now + delay
        sched.next_poll = now + delay
        ledger.set_state(self.name, _SCHEDULE, sched.dump())

    def poll(self, http: Http, ledger: Ledger, since: datetime | None, now: float) -> Iterator[Batch]:
        """Yield one ``Batch`` per endpoint window (each is committed before the next request)."""
        raise NotImplementedError

    def rows(self, items: Any, build: Callable[[Any], _T | None]) -> list[_T]:
        """``build`` applied to each result row. A row of an unexpected shape is skipped and
        reported (one line per call), never blocking the rest: its bucket keeps its stored value."""
        out: list[_T] = []
        bad: list[str] = []
        for item in items or []:
            try:
                rec = build(item)
            except (KeyError, TypeError, ValueError, AttributeError, InvalidOperation) as exc:
                bad.append(type(exc).__name__)
                continue
            if rec is not None:
                out.append(rec)
        if bad:
            self.skipped_rows += len(bad)
            log.warning("%s: %d result row(s) of an unexpected shape skipped (%s)", self.name, len(bad), bad[0])
        return out

    # -- helpers for windows over bucketed endpoints --------------------------------------------

    def window_start(
        self, ledger: Ledger, endpoint: str, since: datetime | None, now: float, width_s: int, trailing_s: int
    ) -> int:
        """Start of the window to read, aligned to a UTC bucket boundary: from the last synced
        time less the trailing re-read (late data, buckets still filling), or the backfill on a
        first poll; ``--days`` can only widen it."""
        synced = ledger.state(self.name, f"synced:{endpoint}")
        start = now - BACKFILL_S if synced is None else float(synced) - trailing_s
        if since is not None:
            start = min(start, since.timestamp())
        return int(start // width_s * width_s)


class BilledUsagePolledSource(PolledSource):
    """A provider's token usage API beside its cost API (``cost_source``): while the cost source is
    enabled, usage rows carry ``cost_origin=external`` so the billed cost is never added to an
    estimate of itself; without it, their cost is estimated from the price table."""

    cost_source: str

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        super().__init__(settings, client)
        enabled = settings.enabled_sources
        self.billed = enabled is None or self.cost_source in enabled

    @property
    def usage_cost_origin(self) -> CostOrigin:
        return CostOrigin.EXTERNAL if self.billed else CostOrigin.UNKNOWN


def _key_setting(env_name: str, provider: str) -> str:
    """The config key naming the variable that holds ``env_name``'s key (e.g. ``openai_key_env``)."""
    if env_name == "OPENROUTER_MANAGEMENT_KEY":
        return "openrouter_management_key_env"
    return f"{provider}_key_env"


def synced_state(endpoint: str, now: float) -> dict[str, str]:
    return {f"synced:{endpoint}": str(int(now))}


def make_client() -> httpx.Client:
    """The production client: bounded timeouts, no redirects (a redirect could carry the key
    to another host), the provider's TLS checks."""
    import httpx

    from bridge import __version__

    return httpx.Client(
        timeout=httpx.Timeout(TIMEOUT_S, connect=10.0),
        follow_redirects=False,
        headers={"User-Agent": f"tokenbridge/{__version__}"},
    )


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> int:
    """Unix seconds from a bucket's start (Unix seconds or RFC 3339)."""
    if isinstance(value, bool):
        raise ValueError("boolean time")
    if isinstance(value, int | Decimal | float):
        return int(value)
    if isinstance(value, str):
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    raise ValueError(f"not a time: {value!r}")


def count(value: Any) -> int:
    """A token or request count from JSON: missing or null is 0; anything else must be a whole number."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"not a count: {value!r}")
    if isinstance(value, Decimal) and value != value.to_integral_value():
        raise ValueError(f"not a whole count: {value!r}")
    return int(value)


def money(value: Any) -> Decimal:
    """An amount from JSON (a number read as ``Decimal``, or a decimal string), exactly."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"not an amount: {value!r}")
    out = Decimal(value)
    if not out.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    return out


def gauge(name: str, provider: str, currency: str, value: Decimal, **labels: str) -> Gauge:
    return Gauge(name, {"provider": provider, "currency": currency, **labels}, value)
