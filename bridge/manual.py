"""``tokenbridge log``: a manual usage entry (from shell history, a bill, another machine).

An entry is one ledger row keyed by an idempotency key: ``--key`` when given, else a digest of
what the entry says (provider, model, tokens, cost, project, time when given). Running the same
command again therefore adds nothing; an entry logged again under the same ``--key`` with
other values replaces the earlier one (a correction), and the totals move by the difference.
A ``--cost`` is kept as reported; without one the cost is estimated from the price table, and
stays unknown (never $0) for a model without a price.
"""

from __future__ import annotations

import hashlib
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.errors import ConfigError
from bridge.project import project_for
from bridge.record import MAX_TOKENS, CostOrigin, Tokens, UsageRecord
from bridge.sources._agents import UNKNOWN_MODEL, provider_for

SOURCE = "manual"


def _count(value: int | None, flag: str) -> int:
    if value is None:
        return 0
    if not 0 <= value <= MAX_TOKENS:
        raise ConfigError(flag, f"must be between 0 and {MAX_TOKENS}, got {value}")
    return value


def entry(args: Any, env: dict[str, str] | None = None) -> UsageRecord:
    tokens = Tokens(
        _count(args.input, "--input"),
        _count(args.output, "--output"),
        _count(args.cache_read, "--cache-read"),
        _count(args.cache_write, "--cache-write"),
    )
    cost: Decimal | None = None
    if args.cost is not None:
        try:
            cost = Decimal(args.cost)
        except InvalidOperation:
            raise ConfigError("--cost", f"not a number: {args.cost!r}") from None
        if not cost.is_finite() or cost < 0:
            raise ConfigError("--cost", f"must be a non-negative amount, got {args.cost!r}")
    if tokens.total == 0 and cost is None:
        raise ConfigError("--input", "an entry needs tokens (--input/--output/--cache-*) or a --cost")
    if args.time:
        try:
            ts = datetime.fromisoformat(args.time)
        except ValueError:
            raise ConfigError("--time", f"not an ISO-8601 time: {args.time!r}") from None
        if ts.tzinfo is None:
            raise ConfigError("--time", f"needs a time zone (e.g. {args.time}Z or +02:00)")
    else:
        ts = datetime.now(UTC)
    model = args.model or UNKNOWN_MODEL
    provider = provider_for(model, args.provider)
    project = project_for(args.project, env=env)
    if args.key:
        key = args.key
    else:
        what = [provider, model, *map(str, (tokens.input, tokens.output, tokens.cache_read, tokens.cache_creation))]
        what += [str(cost), project, args.time or ""]
        key = hashlib.sha256("\x1f".join(what).encode()).hexdigest()[:24]
    return UsageRecord(
        source=SOURCE,
        provider=provider,
        model=model,
        timestamp=ts,
        dedup_key=f"manual:{key}",
        tokens=tokens,
        cost=cost,
        cost_origin=CostOrigin.REPORTED if cost is not None else CostOrigin.UNKNOWN,
        session_id=args.session,
        project=project,
        requests=1 if tokens.total else 0,
        replace=True,  # same key, latest values: a corrected entry replaces the first one
    )


def cmd_log(settings: Any, args: Any) -> int:
    from bridge.terminal import commit

    rec = entry(args, settings.env)
    key = rec.dedup_key.removeprefix("manual:")
    result = commit(settings, [rec])
    if result.new_requests:
        print(f"recorded {rec.tokens.total} token(s) for {rec.model} (key {key})", file=sys.stderr)
    elif result.updated_requests:
        print(f"entry {key} updated with the new values", file=sys.stderr)
    else:
        print(f"already recorded (key {key}): nothing added; use --key for a separate entry", file=sys.stderr)
    return 0
