"""What ``tokenbridge sources`` shows for OpenClaw beside its counts: the gateway-log fallback
rows, and the gateway's usage RPC reconciled against the transcripts (never added to totals).

The gateway counts differently from the ledger, so a difference is expected and shown, not
fixed: OpenClaw's own summary has no dedup (a checkpoint or fork copy counts again), skips
``.deleted`` archives, also counts usage on user entries, and its session list is capped at the
1000 most recent sessions.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bridge.errors import PollError
from bridge.ledger import Ledger, SeriesTotal
from bridge.sources._openclaw_gateway import TOKEN_FIELDS, GatewayUsage, fetch_usage, without_credentials
from bridge.sources._openclaw_log import LOG_PREFIX

NAME = "openclaw"
# The ledger's token type for each of the gateway's token fields.
_LEDGER = {"input": "input", "output": "output", "cacheRead": "cacheRead", "cacheWrite": "cacheCreation"}
_STATES = {"auth_failed": "auth failed", "unreachable": "unreachable", "timeout": "timeout"}
SHOWN_SESSIONS = 5


def _fields(t: SeriesTotal) -> dict[str, int]:
    out = {k: t.tokens[v] for k, v in _LEDGER.items()}
    out["totalTokens"] = sum(out.values())
    return out


def _transcripts(ledger: Ledger) -> tuple[dict[str, int], Decimal, dict[str, int]]:
    """The transcripts' totals (the source's totals without its gateway-log rows), their cost,
    and total tokens per session."""
    fallback = ledger.fallback_sums(NAME, LOG_PREFIX)
    totals = dict.fromkeys(TOKEN_FIELDS, 0)
    cost = Decimal(0)
    sessions: dict[str, int] = {}
    for t in ledger.totals():
        if t.source != NAME:
            continue
        f = _fields(t)
        for k in TOKEN_FIELDS:
            totals[k] += f[k]
        cost += t.cost
        sessions[t.session_id] = sessions.get(t.session_id, 0) + f["totalTokens"]
    for session, t in fallback.items():
        f = _fields(t)
        for k in TOKEN_FIELDS:
            totals[k] -= f[k]
        cost -= t.cost
        sessions[session] -= f["totalTokens"]
    return totals, cost, {s: n for s, n in sessions.items() if n}


def view(ledger: Ledger, url: str, token: str, timeout: float = 5.0) -> dict[str, Any]:
    fallback = ledger.fallback_sums(NAME, LOG_PREFIX)
    out: dict[str, Any] = {
        "logFallback": {
            "sessions": len(fallback),
            "requests": sum(t.requests for t in fallback.values()),
            "tokens": sum(_fields(t)["totalTokens"] for t in fallback.values()),
        }
    }
    if not url:
        out["gateway"] = {"state": "not configured", "settings": "OPENCLAW_GATEWAY_URL, OPENCLAW_GATEWAY_TOKEN"}
        return out
    gateway: dict[str, Any] = {"url": without_credentials(url)}
    out["gateway"] = gateway
    try:
        usage = fetch_usage(url, token, timeout)
    except PollError as exc:
        gateway.update(state=_STATES.get(exc.kind, f"failing ({exc.kind})"), error=str(exc))
        return out
    gateway.update(state="ok", **reconcile(usage, *_transcripts(ledger)))
    return out


def reconcile(
    usage: GatewayUsage, ours: dict[str, int], our_cost: Decimal, our_sessions: dict[str, int]
) -> dict[str, Any]:
    """The gateway's totals beside the transcripts', their difference (gateway minus
    transcripts), and the sessions that differ most."""
    pairs = [(sid, n, our_sessions.get(sid, 0)) for sid, n in usage.sessions.items()]
    pairs = sorted((p for p in pairs if p[1] != p[2]), key=lambda p: (-abs(p[1] - p[2]), p[0]))
    differing = [{"session": sid, "gateway": n, "transcripts": ours_n} for sid, n, ours_n in pairs]
    return {
        "range": "all",
        "totals": {**usage.totals, "totalCost": str(usage.cost), "missingCostEntries": usage.missing_cost_entries},
        "transcripts": {**ours, "totalCost": str(our_cost)},
        "difference": {k: usage.totals[k] - ours[k] for k in TOKEN_FIELDS},
        "sessions": {"gateway": len(usage.sessions), "differing": len(differing)},
        "differingSessions": differing[:SHOWN_SESSIONS],
    }
