"""``tokenbridge statusline``: a Claude Code status-line command.

Claude Code runs the configured command on every status refresh and passes a JSON document on
stdin: ``model.display_name``, ``cost.total_cost_usd`` (this session) and, for Pro/Max plans,
``rate_limits.five_hour`` / ``rate_limits.seven_day`` with ``used_percentage`` and ``resets_at``
(Unix seconds). This command records those quota windows in the ledger as gauges
(``tokenbridge.quota.used_percent`` and ``tokenbridge.quota.resets_at``, labels provider and
window; exported by the bridge like every ledger gauge) and prints one line::

    Opus 4.1 | session $1.23 | today $12.40 | $2.10/h | 5h 42% ↻14:00 | 7d 17% ↻Thu 09:00

It never fails Claude Code: bad or missing input, a missing or busy ledger, anything else, and it
prints what it knows and exits 0. It runs on every refresh, so it imports nothing heavy and opens
the ledger with a short busy timeout. It reads no credentials.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

QUOTA_USED = "tokenbridge.quota.used_percent"
QUOTA_RESETS = "tokenbridge.quota.resets_at"
SOURCE = "claude_statusline"
# Claude Code's window names -> the short labels shown in the line.
WINDOWS = {"five_hour": "5h", "seven_day": "7d"}
_MAX_INPUT = 1 << 20  # a status document is a few KB; never read an unbounded stdin


@dataclass(frozen=True, slots=True)
class Window:
    name: str  # five_hour, seven_day
    used_percent: Decimal
    resets_at: int | None  # Unix seconds


@dataclass(frozen=True, slots=True)
class StatusInput:
    model: str | None = None
    session_cost: Decimal | None = None
    windows: tuple[Window, ...] = ()


def parse(text: str) -> StatusInput:
    """The fields this command uses; anything malformed is left out, never an error."""
    try:
        doc = json.loads(text, parse_float=Decimal)
    except ValueError:
        return StatusInput()
    if not isinstance(doc, dict):
        return StatusInput()
    model = _get(doc, "model", "display_name") or _get(doc, "model", "id")
    cost = _number(_get(doc, "cost", "total_cost_usd"))
    windows = []
    limits = doc.get("rate_limits")
    if isinstance(limits, dict):
        for name in WINDOWS:
            w = limits.get(name)
            if not isinstance(w, dict):
                continue
            used = _number(w.get("used_percentage"))
            if used is None or not Decimal(0) <= used <= Decimal(1000):
                continue
            windows.append(Window(name, used, _epoch(w.get("resets_at"))))
    return StatusInput(model if isinstance(model, str) and model.strip() else None, cost, tuple(windows))


def _get(doc: dict[str, Any], *path: str) -> Any:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


def _number(v: Any) -> Decimal | None:
    if isinstance(v, bool) or not isinstance(v, (int, Decimal, str)):
        return None
    try:
        d = Decimal(v)
    except InvalidOperation:
        return None
    return d if d.is_finite() and d >= 0 else None


def _epoch(v: Any) -> int | None:
    """Unix seconds (a number, or an ISO 8601 string as some versions may send)."""
    n = _number(v)
    if n is not None:
        return int(n)
    if isinstance(v, str):
        try:
            return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class Spend:
    today: Decimal
    per_hour: Decimal  # the last 60 minutes
    unpriced: int  # requests (or usage rows) today without a known price: today's figure is a lower bound


def record_and_read(state_dir: Path, inp: StatusInput, now: float) -> Spend | None:
    """Store the quota windows as gauges and read today's spend; None when the ledger is unusable."""
    from bridge.errors import TokenbridgeError
    from bridge.ledger import Gauge, Ledger

    try:
        with Ledger.open(state_dir, fast=True) as ledger:
            if inp.windows:
                ts_ms = int(now * 1000)
                gauges = []
                for w in inp.windows:
                    labels = {"provider": "anthropic", "window": w.name}
                    gauges.append(Gauge(QUOTA_USED, labels, w.used_percent, ts_ms))
                    if w.resets_at is not None:
                        gauges.append(Gauge(QUOTA_RESETS, labels, Decimal(w.resets_at), ts_ms))
                ledger.set_gauges(SOURCE, gauges)
            return _spend(ledger, now)
    except (TokenbridgeError, OSError):
        return None


def _spend(ledger: Any, now: float) -> Spend:
    from bridge._rows import from_pusd

    midnight = datetime.fromtimestamp(now).astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    now_ms = int(now * 1000) + 1  # until is exclusive: a request at this very millisecond counts
    today = ledger.aggregate("quarter", since_ms=int(midnight.timestamp() * 1000), until_ms=now_ms)
    hour = ledger.aggregate("quarter", since_ms=now_ms - 1 - 3600_000, until_ms=now_ms)
    # Row layout of Ledger.aggregate: ..., cost_pusd at 8 (None: no known price), unpriced at 9.
    return Spend(
        today=from_pusd(sum(int(r[8] or 0) for r in today)),
        per_hour=from_pusd(sum(int(r[8] or 0) for r in hour)),
        unpriced=sum(int(r[9]) for r in today),
    )


def _money(d: Decimal) -> str:
    return f"${d:,.2f}"


def _reset(ts: int, name: str, now: float) -> str:
    at = datetime.fromtimestamp(ts).astimezone()
    # The 5-hour window resets within the day: the time is enough; a week needs the weekday.
    return at.strftime("%H:%M") if name == "five_hour" and ts - now < 86400 else at.strftime("%a %H:%M")


def render(inp: StatusInput, spend: Spend | None, now: float) -> str:
    parts = []
    if inp.model:
        parts.append(" ".join(inp.model.split())[:40])
    if inp.session_cost is not None:
        parts.append(f"session {_money(inp.session_cost)}")
    if spend is not None:
        parts.append(f"today {_money(spend.today)}" + ("+?" if spend.unpriced else ""))
        parts.append(f"{_money(spend.per_hour)}/h")
    for w in inp.windows:
        text = f"{WINDOWS[w.name]} {w.used_percent:.0f}%"
        if w.resets_at is not None and w.resets_at > now:
            text += f" ↻{_reset(w.resets_at, w.name, now)}"
        parts.append(text)
    return " | ".join(parts) if parts else "tokenbridge"


def run(stdin: TextIO, stdout: TextIO, state_dir: Path | None, now: float | None = None) -> int:
    """Read the status document, record the windows, print the line. Always exit 0."""
    now = time.time() if now is None else now
    try:
        text = stdin.read(_MAX_INPUT) if stdin is not None and not stdin.closed else ""
    except (OSError, ValueError):
        text = ""
    inp = parse(text) if text.strip() else StatusInput()
    spend = None
    if state_dir is not None:
        try:
            spend = record_and_read(state_dir, inp, now)
        except Exception:  # a status line must never break Claude Code; the other commands report errors
            spend = None
    try:
        stdout.write(render(inp, spend, now) + "\n")
        stdout.flush()
    except (OSError, ValueError):
        pass
    return 0


def cmd_statusline(args: Any) -> int:
    """CLI entry: the state directory from flags/env/config, like every command (no credentials)."""
    state_dir: Path | None
    try:
        from bridge import config

        state_dir = config.load(state_dir=args.state_dir, config=args.config).state_dir
    except Exception:  # a broken config file still gets a status line, just without the ledger part
        state_dir = None
    return run(sys.stdin, sys.stdout, state_dir)


def main() -> int:
    """``python -m bridge.statusline``: the same command without the CLI's imports (state dir from the
    environment / config file only)."""
    import argparse

    return cmd_statusline(argparse.Namespace(state_dir=None, config=None))


if __name__ == "__main__":
    sys.exit(main())
