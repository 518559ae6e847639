#!/usr/bin/env python3
"""Generate tokenbridge's Grafana dashboards (raw JSON for file provisioning, no __inputs placeholders).

    python3 grafana/generate_dashboards.py          # rewrite grafana/dashboards/*.json
    python3 grafana/generate_dashboards.py --check  # exit 1 if the committed JSON is stale

The PromQL lives here so the de-duplication rule is written once. tests/test_dashboards.py checks that the committed
JSON matches this generator, and tests/test_stack_e2e.py runs every query against a real Prometheus.

No double counting: Claude Code usage can reach Prometheus twice, from Claude Code's native telemetry
(source="claude_code_otel") and from the bridge: its transcripts (source="claude_transcripts"), Claude Code's
api_request events it receives from the collector (source="claude_code_events", one row per request shared with the
transcript line of the same request, so those two never overlap; docs/events.md) and Claude Code's stats cache
(source="claude_stats_cache"; the bridge never lets it overlap the other two). With the events, the bridge's own
view is per request: the union of what the transcripts and the events saw, including sessions on other machines
and deleted transcripts. Every token and cost panel therefore prefers, per model, the bridge's Claude Code sources
and falls back to native telemetry only for models the bridge has no series for (the bridge not running, or not
receiving events); all other sources (other tools) are added. Gemini CLI's and Codex's native token metrics
(source="gemini_cli_otel", "codex_otel") are fallbacks of the same kind beside the bridge's gemini_cli and codex
sources, their token types mapped onto Claude Code's four (NATIVE_TOKENS). A provider's
billing APIs (usage and cost) come first: per provider, when they have data in the range, they are the total and the
local sources of that provider are attribution views (the rule of bridge/views.py).

Exact numbers: every increase() uses an `anchored` range (Prometheus 3 with
--enable-feature=promql-extended-range-selectors): the value at the range's end minus the value at its start, no
extrapolation to the window edges (which read 3-6 % high and gave fractional counts). Counts show no decimals.

Team mode (grafana/team_personal.py, docs/team.md): the same builders write the team server's variants of the
overview, Claude Code and activity dashboards to grafana/dashboards-team/, for VictoriaMetrics: `user`/`machine`
variables on every selector, exact `increase_pure` windows instead of `anchored`, counting once per user.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

DS = {"type": "prometheus", "uid": "tokenbridge-prometheus"}
OUT = Path(__file__).resolve().parent / "dashboards"
TEAM_OUT = Path(__file__).resolve().parent / "dashboards-team"  # the team server's Grafana only (VictoriaMetrics)

TOKENS = "claude_code_token_usage_tokens_total"
COST = "claude_code_cost_usage_USD_total"
UNPRICED = "tokenbridge_unpriced_requests_total"

# The bridge's own views of the coding agents that also send native telemetry.
# = bridge.views.NATIVE_PREFERRED, which bridge/central.py uses (tests/test_dashboards.py checks they agree).
PREFERRED = "claude_transcripts|claude_code_events|claude_stats_cache|codex|gemini_cli"
FALLBACK = "claude_code_otel"  # Claude Code's native telemetry
# Gemini CLI's and Codex's native token metrics (native-telemetry.md §3), labelled provider/source by the collector.
# Their token types are mapped onto Claude Code's four (the bridge's codex and gemini_cli sources count the same
# way): input = input (+ tool-use prompt) - cached, cacheRead = cached, output = output (+ thoughts; Codex's output
# already holds its reasoning). No cache writes, no cost. Each entry: unified type -> (added types, subtracted type).
NATIVE_TOKENS = {
    "gemini_cli_otel": (
        "gemini_cli_token_usage_total",
        "type",
        {"input": ("input|tool", "cache"), "cacheRead": ("cache", None), "output": ("output|thought", None)},
        "google",
    ),
    "codex_otel": (
        "codex_turn_token_usage_sum",
        "token_type",
        {"input": ("input", "cached_input"), "cacheRead": ("cached_input", None), "output": ("output", None)},
        "openai",
    ),
}
FILTERS = 'provider=~"$provider",model=~"$model",source=~"$source"'
# Provider billing APIs (bridge/views.py): where one has data for a provider, it is that provider's total.
BILLING = "openai_usage_api|openai_cost_api|anthropic_usage_api|anthropic_cost_api|openrouter_credits_api"
BILLED_COST = "openai_cost_api|anthropic_cost_api|openrouter_credits_api"
BILLED = f'provider=~"$provider",source=~"{BILLED_COST}"'
BALANCE = "tokenbridge_balance"

# The team server's variants of these dashboards (grafana/team_personal.py) are built by this same code for
# VictoriaMetrics, which rejects `anchored`: while `_TEAM["on"]` is set (team_personal.variant()), every selector
# starts with the `user` and `machine` variables, every increase is an exact window of two all-time totals
# (`window`), and Claude Code's native telemetry gives way to the bridge per user and model.
_TEAM = {"on": False}
TEAM_SEL = 'user=~"$user",machine=~"$machine"'
ALL_TIME = "100y"  # longer than any retention: increase_pure over it is a series' all-time total (bridge.central)

DEDUP_TEXT = (
    "**Each token is counted once.** Claude Code usage can arrive twice: from Claude Code's own telemetry "
    "(`source=claude_code_otel`) and from tokenbridge: the same sessions' transcripts (`source=claude_transcripts`), "
    "Claude Code's request events it receives (`claude_code_events`: one row per request with its transcript line, "
    "so sessions on other machines count too) and `claude_stats_cache` for days whose transcripts are gone; these "
    "never overlap. Token and cost panels therefore take, **per model**, the bridge's series when there are any, "
    "and native telemetry only for models the bridge has not seen (for example when the bridge is not running or "
    "receives no events); Gemini CLI's and Codex's own token metrics (`gemini_cli_otel`, `codex_otel`) likewise "
    "beside the bridge's `gemini_cli` and `codex` sources. A provider's billing APIs (`openai_usage_api`, "
    "`openai_cost_api`, `anthropic_usage_api`, `anthropic_cost_api`, `openrouter_credits_api`) hold the same requests "
    "again, with everything else the account used: **per provider**, when they have data in the range they are the "
    "total, and that provider's local sources (transcripts, telemetry, other tools) become attribution views. Every "
    "other source is added as is. The *per source* panels show each source's own count and are **not additive**. "
    "Pick one source in the `source` variable to see only that source."
)


def _join(labels: list[str]) -> str:
    return ", ".join(labels)


def series(metric: str, matchers: str | None = None) -> str:
    """`metric{matchers}`; on the team server the user and machine variables come first. `None`: no braces."""
    if _TEAM["on"]:
        return f"{metric}{{{','.join(m for m in (TEAM_SEL, matchers) if m)}}}"
    return metric if matchers is None else f"{metric}{{{matchers}}}"


def window(metric: str, matchers: str | None, rng: str, fn: str = "increase", exact: bool = True) -> str:
    """`fn(metric{matchers}[rng])`, exact: Prometheus 3's `anchored` increase (module docstring), or on the team
    server each series' all-time total now minus the same `rng` earlier, whole when it has no sample before
    (bridge.central.window_increase; VictoriaMetrics' own increase misses the sample before a gap of more than a few
    minutes). The offset stays inside the rollup: outside it (`f(m[w]) offset d`), VictoriaMetrics v1.151.0 drops
    the first points of a range query (checked: a series' first step then counted again one step later). A rate
    is that window over `$__interval` per second."""
    if not _TEAM["on"]:
        anchored = " anchored" if fn == "increase" and exact else ""
        return f"{fn}({series(metric, matchers)}[{rng}]{anchored})"
    if fn == "rate":
        return f"({window(metric, matchers, IV)} / ($__interval_ms / 1000))"
    full = f"increase_pure({series(metric, matchers)}[{ALL_TIME}])"
    return f"(({full} - increase_pure({series(metric, matchers)}[{ALL_TIME}] offset {rng})) or {full})"


def _scope() -> tuple[str, ...]:
    """The labels kept inside the count-once rule: on the team server per user (native series carry no machine)."""
    return ("user", "provider", "model", "source") if _TEAM["on"] else ("provider", "model", "source")


def dedup(
    metric: str,
    by: list[str],
    rng: str,
    fn: str = "increase",
    extra: str = "",
    filters: str = FILTERS,
    exact: bool = True,
) -> str:
    """Sum `fn(metric[rng])` by `by`, counting Claude Code usage once (see module docstring).

    `filters` are the dashboard variables; prometheus/generate_rules.py passes "" to build its recording rules
    from this same rule, and `exact=False`: promtool's rule unit tests cannot enable the `anchored` modifier
    (`promtool test rules` rejects it even with --enable-feature), so the rules keep plain increase()."""
    inner_by = _join([*by, *(label for label in _scope() if label not in by)])
    sel = ",".join(m for m in (filters, extra) if m)

    def part(src_matcher: str) -> str:
        matchers = f"{sel},{src_matcher}" if sel else src_matcher
        return f"sum by ({inner_by}) ({window(metric, matchers, rng, fn, exact)})"

    billing = part('source=~"' + BILLING + '"')
    preferred = part('source=~"' + PREFERRED + '"')
    fallback = part('source="' + FALLBACK + '"')
    if metric == TOKENS:  # native Gemini CLI and Codex tokens join Claude Code's as the per-model fallback
        natives = [_native_tokens(src, by, rng, fn, filters, extra, exact) for src in NATIVE_TOKENS]
        fallback = "(\n  " + "\n  or ".join([fallback, *(n for n in natives if n)]) + "\n  )"
    others = part('source!~"' + PREFERRED + "|" + FALLBACK + "|" + BILLING + '"')
    if _TEAM["on"]:
        # Billing APIs are organisation-wide (they carry the user whose bridge polled them): never a user's total.
        body = f"{preferred}\n  or on (user, model) {fallback}\n  or {others}"
        return f"sum by ({_join(by)}) (\n  {body}\n)" if by else f"sum (\n  {body}\n)"
    # Billing first; the client views only for providers without billing data in the range.
    body = f"{billing}\n  or on (provider) (\n  {preferred}\n  or on (model) {fallback}\n  or {others}\n  )"
    outer = f"sum by ({_join(by)}) (\n  {body}\n)" if by else f"sum (\n  {body}\n)"
    return outer


_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')


def _admits(matchers: list[tuple[str, str, str]], label: str, value: str) -> bool:
    """Whether the static matchers of `label` admit `value` (known when the query is generated)."""
    for name, op, want in matchers:
        if name != label:
            continue
        hit = re.fullmatch(want, value) is not None if op in ("=~", "!~") else value == want
        if hit != (op in ("=", "=~")):
            return False
    return True


def _native_tokens(source: str, by: list[str], rng: str, fn: str, filters: str, extra: str, exact: bool) -> str:
    """One native agent's token series in Claude Code's schema (see NATIVE_TOKENS), or "" when the panel's
    static matchers (a token type, a provider) exclude it. The dashboard variables apply to the raw series."""
    metric, type_label, mapping, provider = NATIVE_TOKENS[source]
    matchers = [(m[1], m[2], m[3]) for m in _MATCHER.finditer(extra)]
    if not _admits(matchers, "provider", provider) or not _admits(matchers, "source", source):
        return ""
    keep = ",".join(f'{n}{op}"{v}"' for n, op, v in matchers if n not in ("type", "provider", "source"))
    base = ",".join(x for x in (filters, keep, f'source="{source}"') if x)
    labels = _join([b for b in by if b != "type"] + [x for x in _scope() if x not in by])

    def total(types: str) -> str:
        matchers = f'{base},{type_label}=~"{types}"'
        return f"sum by ({labels}) ({window(metric, matchers, rng, fn, exact)})"

    parts = []
    for unified, (plus, minus) in mapping.items():
        if not _admits(matchers, "type", unified):
            continue
        expr = total(plus) if minus is None else f"({total(plus)} - ({total(minus)} or 0 * {total(plus)}))"
        parts.append(f'label_replace({expr}, "type", "{unified}", "", "")')
    return "\n  or ".join(parts)


def cache_savings(rng: str) -> str:
    """Estimated USD saved by prompt caching, for Anthropic models.

    Anthropic prices are in fixed ratios to the input price p: output 5p, cache read 0.1p, cache write (5 min) 1.25p.
    Per model p = cost / (input + 5*output + 0.1*cacheRead + 1.25*cacheCreation), and reading from cache instead of
    paying full input saves 0.9*p per cache-read token.
    """
    extra = 'provider="anthropic"'

    def tok(t: str) -> str:
        return dedup(TOKENS, ["model", "type"], rng, extra=f'{extra},type="{t}"')

    weighted = (
        f"sum by (model) (\n({tok('input')})\n or 5 * ({tok('output')})\n or 0.1 * ({tok('cacheRead')})\n"
        f" or 1.25 * ({tok('cacheCreation')})\n)"
    )
    cr = f"sum by (model) ({tok('cacheRead')})"
    cost = dedup(COST, ["model"], rng, extra=extra)
    return f"sum (\n0.9 * ({cr})\n * ({cost})\n / ({weighted})\n)"


def cache_hit_ratio(rng: str) -> str:
    def tok(types: str) -> str:
        return "sum (" + dedup(TOKENS, ["type"], rng, extra='type=~"' + types + '"') + ")"

    return f"({tok('cacheRead')})\n/\n({tok('input|cacheRead|cacheCreation')})"


# ---------------------------------------------------------------- panel builders


class Layout:
    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0

    def pos(self, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        p = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return p

    def newline(self) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0

    def id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i


def target(expr: str, ref: str = "A", legend: str = "", instant: bool = False) -> dict:
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto", "editorMode": "code"}
    if instant:
        t.update({"instant": True, "range": False, "format": "table" if legend == "table" else "time_series"})
        if legend == "table":
            t["legendFormat"] = "__auto"
    else:
        t.update({"instant": False, "range": True})
    return t


def stat(
    lay: Layout,
    title: str,
    expr: str,
    unit: str,
    w: int = 4,
    desc: str = "",
    decimals: int | None = None,
    legend: str = "",
) -> dict:
    p = {
        "id": lay.id(),
        "type": "stat",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": lay.pos(w, 4),
        "targets": [target(expr, legend=legend, instant=True)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": [{"color": "blue", "value": None}]},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "auto",
            "justifyMode": "auto",
            "orientation": "auto",
        },
    }
    if decimals is None and unit == "short":
        decimals = 0  # counts (tokens, sessions, commits) are whole numbers
    if decimals is not None:
        p["fieldConfig"]["defaults"]["decimals"] = decimals
    return p


def _whole(unit: str) -> dict:
    """Counts are whole numbers: never show 1.26 sessions."""
    return {"decimals": 0} if unit == "short" else {}


def bars(lay: Layout, title: str, expr: str, legend: str, unit: str, w: int = 8, h: int = 8, desc: str = "") -> dict:
    return {
        "id": lay.id(),
        "type": "bargauge",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": lay.pos(w, h),
        "targets": [target(expr, legend=legend, instant=True)],
        "fieldConfig": {
            "defaults": {"unit": unit, "min": 0, "color": {"mode": "palette-classic"}, **_whole(unit)},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
        },
    }


def balance_bars(lay: Layout, title: str, expr: str, desc: str) -> dict:
    """Current balances with low-balance thresholds (one bar per provider and currency)."""
    p = bars(lay, title, expr, "{{provider}} {{currency}}", "none", desc=desc)
    p["fieldConfig"]["defaults"]["color"] = {"mode": "thresholds"}
    p["fieldConfig"]["defaults"]["thresholds"] = {
        "mode": "absolute",
        "steps": [{"color": "red", "value": None}, {"color": "yellow", "value": 5}, {"color": "green", "value": 20}],
    }
    return p


def timeseries(
    lay: Layout,
    title: str,
    expr: str,
    legend: str,
    unit: str,
    w: int = 12,
    h: int = 8,
    desc: str = "",
    stack: bool = True,
    draw: str = "bars",
    interval: str = "1m",
) -> dict:
    return {
        "id": lay.id(),
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": lay.pos(w, h),
        "interval": interval,
        "targets": [target(expr, legend=legend)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "color": {"mode": "palette-classic"},
                "custom": {
                    "drawStyle": draw,
                    "fillOpacity": 60 if draw == "bars" else 15,
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                    "lineWidth": 1,
                    "showPoints": "never",
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["sum"], "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def table(
    lay: Layout,
    title: str,
    targets: list[dict],
    w: int = 12,
    h: int = 8,
    desc: str = "",
    units: dict[str, str] | None = None,
) -> dict:
    overrides = [
        {"matcher": {"id": "byName", "options": name}, "properties": [{"id": "unit", "value": unit}]}
        for name, unit in (units or {}).items()
    ]
    return {
        "id": lay.id(),
        "type": "table",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": lay.pos(w, h),
        "targets": targets,
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": {}}},
            {"id": "sortBy", "options": {"sort": [{"field": next(iter(units or {"Value": ""})), "desc": True}]}},
        ],
        "fieldConfig": {"defaults": {}, "overrides": overrides},
        "options": {"showHeader": True, "footer": {"show": False}},
    }


def table_target(expr: str, ref: str) -> dict:
    return {
        "datasource": DS,
        "refId": ref,
        "expr": expr,
        "legendFormat": "__auto",
        "editorMode": "code",
        "instant": True,
        "range": False,
        "format": "table",
    }


def text(lay: Layout, title: str, content: str, w: int = 24, h: int = 4) -> dict:
    return {
        "id": lay.id(),
        "type": "text",
        "title": title,
        "gridPos": lay.pos(w, h),
        "options": {"mode": "markdown", "content": content},
    }


def row(lay: Layout, title: str) -> dict:
    lay.newline()
    p = {
        "id": lay.id(),
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": lay.y},
    }
    lay.y += 1
    return p


def variable(name: str, label: str, metric: str = TOKENS) -> dict:
    q = f"label_values({metric}, {name})"
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": q, "refId": f"var-{name}", "qryType": 1},
        "definition": q,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "sort": 1,
        "hide": 0,
        "regex": "",
    }


def dashboard(
    uid: str, title: str, desc: str, panels: list[dict], tags: list[str], variables: list[dict] | None = None
) -> dict:
    if variables is None:
        variables = [variable("provider", "Provider"), variable("model", "Model"), variable("source", "Source")]
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": tags,
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 42,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-7d", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": variables},
        "links": [
            {
                "title": "tokenbridge dashboards",
                "type": "dashboards",
                "tags": ["tokenbridge"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": panels,
    }


# ---------------------------------------------------------------- dashboards

R = "$__range"
IV = "$__interval"
RI = "$__rate_interval"


def claude_code() -> dict:
    lay = Layout()
    p: list[dict] = []
    p.append(text(lay, "How these numbers are counted", DEDUP_TEXT, h=4))
    p.append(row(lay, "Usage in the selected time range"))
    p.append(
        stat(
            lay,
            "Total cost",
            dedup(COST, [], R),
            "currencyUSD",
            decimals=2,
            desc="Estimated cost (list prices), Claude Code usage counted once.",
        )
    )
    p.append(stat(lay, "Total tokens", dedup(TOKENS, [], R), "short"))
    p.append(
        stat(
            lay,
            "Cache hit ratio",
            cache_hit_ratio(R),
            "percentunit",
            decimals=1,
            desc="Share of prompt tokens (input + cache read + cache creation) read from the prompt cache.",
        )
    )
    p.append(
        stat(
            lay,
            "Sessions",
            f"sum({window('claude_code_session_count_total', None, R)})",
            "short",
            desc="Claude Code sessions started (native telemetry: claude_code.session.count).",
        )
    )
    p.append(
        stat(
            lay,
            "Active time",
            f"sum({window('claude_code_active_time_seconds_total', None, R)})",
            "s",
            desc="claude_code.active_time.total: user (keyboard) and cli (tools, responses) time.",
        )
    )
    p.append(stat(lay, "Commits", f"sum({window('claude_code_commit_count_total', None, R)})", "short"))
    p.append(stat(lay, "Pull requests", f"sum({window('claude_code_pull_request_count_total', None, R)})", "short"))
    p.append(
        bars(
            lay,
            "Lines of code",
            f"sum by (type) ({window('claude_code_lines_of_code_count_total', None, R)})",
            "{{type}}",
            "short",
            w=6,
            h=4,
        )
    )
    p.append(
        bars(
            lay,
            "Edit tool decisions",
            f"sum by (decision) ({window('claude_code_code_edit_tool_decision_total', None, R)})",
            "{{decision}}",
            "short",
            w=6,
            h=4,
            desc="Edit/Write/NotebookEdit permission decisions (claude_code.code_edit_tool.decision).",
        )
    )
    p.append(
        bars(
            lay,
            "Edit decisions by source",
            f"sum by (source) ({window('claude_code_code_edit_tool_decision_total', None, R)})",
            "{{source}}",
            "short",
            w=6,
            h=4,
            desc="Where the decision came from: config, hook, user_permanent, user_temporary, user_reject, ...",
        )
    )
    p.append(bars(lay, "Tokens by type", dedup(TOKENS, ["type"], R), "{{type}}", "short", w=8))
    p.append(bars(lay, "Cost by model", dedup(COST, ["model"], R), "{{model}}", "currencyUSD", w=8))
    p.append(bars(lay, "Tokens by model", dedup(TOKENS, ["model"], R), "{{model}}", "short", w=8))

    p.append(row(lay, "Over time"))
    p.append(timeseries(lay, "Cost by model", dedup(COST, ["model"], IV), "{{model}}", "currencyUSD"))
    p.append(timeseries(lay, "Tokens by model", dedup(TOKENS, ["model"], IV), "{{model}}", "short"))
    p.append(
        timeseries(
            lay,
            "Token rate by type",
            f"60 * {dedup(TOKENS, ['type'], RI, fn='rate')}",
            "{{type}}",
            "short",
            draw="line",
            stack=True,
            desc="Tokens per minute.",
        )
    )
    p.append(
        timeseries(
            lay, "Cache hit ratio", cache_hit_ratio(RI), "cache hit ratio", "percentunit", draw="line", stack=False
        )
    )
    p.append(
        timeseries(
            lay,
            "Sessions and activity",
            f"sum by (type) ({window('claude_code_active_time_seconds_total', None, IV)})",
            "active {{type}}",
            "s",
            stack=False,
        )
    )
    p.append(
        timeseries(
            lay,
            "Lines of code",
            f"sum by (type) ({window('claude_code_lines_of_code_count_total', None, IV)})",
            "{{type}}",
            "short",
        )
    )

    p.append(row(lay, "Per source (not additive)"))
    p.append(
        table(
            lay,
            "Tokens and cost per source",
            [
                table_target(f"sum by (source) ({window(TOKENS, FILTERS, R)})", "A"),
                table_target(f"sum by (source) ({window(COST, FILTERS, R)})", "B"),
            ],
            units={"Value #A": "short", "Value #B": "currencyUSD"},
            desc="Each source's own count. Sources can carry the same usage: do not add these rows.",
        )
    )
    p.append(
        timeseries(
            lay,
            "Tokens per source",
            f"sum by (source) ({window(TOKENS, FILTERS, IV)})",
            "{{source}}",
            "short",
            stack=False,
            draw="line",
            desc="Each source's own count, unstacked. Sources can carry the same usage: do not add them.",
        )
    )
    return dashboard(
        "tokenbridge-claude-code",
        "Claude Code",
        "Claude Code's eight native metrics plus tokenbridge's transcript-derived usage, one schema.",
        p,
        ["tokenbridge", "claude-code"],
    )


def overview() -> dict:
    lay = Layout()
    p: list[dict] = []
    p.append(text(lay, "How these numbers are counted", DEDUP_TEXT, h=4))
    p.append(row(lay, "Totals in the selected time range"))
    p.append(stat(lay, "Total cost", dedup(COST, [], R), "currencyUSD", w=6, decimals=2))
    p.append(stat(lay, "Total tokens", dedup(TOKENS, [], R), "short", w=6))
    p.append(
        stat(
            lay,
            "Estimated cache savings (Anthropic)",
            cache_savings(R),
            "currencyUSD",
            w=6,
            decimals=2,
            desc="Per Anthropic model: input price p = cost / (input + 5*output + 0.1*cacheRead + "
            "1.25*cacheCreation); each cache-read token saves 0.9*p. Anthropic's list-price ratios.",
        )
    )
    p.append(
        stat(
            lay,
            "Unpriced requests",
            f"sum({window(UNPRICED, FILTERS, R)}) or vector(0)",
            "short",
            w=6,
            desc="Requests whose model has no known price: their cost is missing above.",
        )
    )
    p.append(bars(lay, "Cost by provider", dedup(COST, ["provider"], R), "{{provider}}", "currencyUSD"))
    p.append(bars(lay, "Tokens by provider", dedup(TOKENS, ["provider"], R), "{{provider}}", "short"))
    p.append(bars(lay, "Tokens by type", dedup(TOKENS, ["type"], R), "{{type}}", "short"))
    p.append(
        table(
            lay,
            "Top models",
            [
                table_target(f"sort_desc({dedup(COST, ['provider', 'model'], R)})", "A"),
                table_target(dedup(TOKENS, ["provider", "model"], R), "B"),
            ],
            w=24,
            units={"Value #A": "currencyUSD", "Value #B": "short"},
        )
    )

    p.append(row(lay, "Over time"))
    p.append(timeseries(lay, "Cost by provider", dedup(COST, ["provider"], IV), "{{provider}}", "currencyUSD"))
    p.append(
        timeseries(
            lay, "Cost by model", dedup(COST, ["provider", "model"], IV), "{{provider}} {{model}}", "currencyUSD"
        )
    )
    p.append(timeseries(lay, "Tokens by provider", dedup(TOKENS, ["provider"], IV), "{{provider}}", "short"))
    p.append(
        timeseries(
            lay,
            "Unpriced requests",
            f"sum by (provider, model) ({window(UNPRICED, FILTERS, IV)})",
            "{{provider}} {{model}}",
            "short",
        )
    )

    p.append(row(lay, "Providers"))
    p.append(
        balance_bars(
            lay,
            "Balances",
            series(BALANCE),
            "Prepaid balance left per provider, in its own currency (the legend names it). Yellow below 20, "
            "red below 5.",
        )
    )
    p.append(
        balance_bars(
            lay,
            "Key limits left",
            series("tokenbridge_key_limit_remaining"),
            "Spending cap left on the API key (OpenRouter), when the key has one.",
        )
    )
    p.append(
        bars(
            lay,
            "Billed cost by provider and model",
            "sum by (provider, model) " + f"({window(COST, BILLED, R)})",
            "{{provider}} {{model}}",
            "currencyUSD",
            desc="What the providers' cost APIs billed in the range (not estimates).",
        )
    )
    p.append(
        table(
            lay,
            "Provider API health",
            [
                table_target(
                    f"max by (source, last_error_kind) ({series('tokenbridge_source_consecutive_failures')})", "A"
                ),
                table_target(f"max by (source) (time() - {series('tokenbridge_source_last_success_seconds')})", "B"),
            ],
            w=24,
            units={"Value #A": "short", "Value #B": "s"},
            desc="Failed passes since the last success (with the last error kind) and the age of the last success.",
        )
    )

    p.append(row(lay, "Per source (not additive)"))
    p.append(
        table(
            lay,
            "Tokens and cost per source",
            [
                table_target(f"sum by (provider, source) ({window(TOKENS, FILTERS, R)})", "A"),
                table_target(f"sum by (provider, source) ({window(COST, FILTERS, R)})", "B"),
            ],
            w=24,
            units={"Value #A": "short", "Value #B": "currencyUSD"},
            desc="Each source's own count. Sources can carry the same usage: do not add these rows.",
        )
    )
    return dashboard(
        "tokenbridge-overview",
        "AI usage overview",
        "Every provider and source together: totals, cost by provider and model, top models, cache savings.",
        p,
        ["tokenbridge", "overview"],
    )


# --- Claude Code activity: metrics the collector derives from Claude Code's events (docs/events.md) -------------

REQUESTS = "claude_code_api_request_count_total"
LATENCY = "claude_code_api_request_duration_milliseconds_bucket"
ERRORS = "claude_code_api_error_count_total"
TOOLS = "claude_code_tool_result_count_total"
TOOL_LATENCY = "claude_code_tool_result_duration_milliseconds_bucket"
PROMPTS = "claude_code_user_prompt_count_total"
SESSIONS = "claude_code_session_count_total"
# Request attributes Claude Code sets only where they apply (absent labels match ".*", so "All" keeps them).
ACTIVITY_VARS = ("model", "speed", "query_source", "effort", "agent_name", "skill_name")
REQ_F = ",".join(f'{v}=~"${v}"' for v in ACTIVITY_VARS)
ERR_F = 'model=~"$model",speed=~"$speed",query_source=~"$query_source"'

ACTIVITY_TEXT = (
    "Request, error and tool metrics come from Claude Code's **events** (`OTEL_LOGS_EXPORTER=otlp`), turned into "
    "exact counters and latency histograms by the collector (docs/events.md). They exist only for sessions that "
    "export events to this collector; usage from transcripts alone has no latency or errors. *Cost per request* "
    "divides Claude Code's own cost metric by its request events (both native), so it is not the deduplicated "
    "cost of the other dashboards. Variables list only the values that occur: `speed`, `effort`, `agent_name` and "
    "`skill_name` are set by newer Claude Code versions where they apply."
)


def _inc(metric: str, sel: str, rng: str, by: str = "") -> str:
    head = f"sum by ({by}) " if by else "sum "
    return f"{head}({window(metric, sel, rng)})"


def _quantile(q: str, metric: str, sel: str, rng: str, by: str, fn: str = "increase") -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) ({window(metric, sel, rng, fn)}))"


def activity() -> dict:
    lay = Layout()
    p: list[dict] = []
    p.append(text(lay, "Where these numbers come from", ACTIVITY_TEXT, h=4))
    p.append(row(lay, "Requests in the selected time range"))
    req, err = _inc(REQUESTS, REQ_F, R), _inc(ERRORS, ERR_F, R)
    p.append(stat(lay, "API requests", f"{req} or vector(0)", "short"))
    p.append(stat(lay, "API errors", f"{err} or vector(0)", "short", desc="api_error events (after retries)."))
    p.append(
        stat(
            lay,
            "Error rate",
            f"({err} or vector(0)) / (({req} or vector(0)) + ({err} or vector(0)))",
            "percentunit",
            decimals=1,
            desc="Failed requests / (successful + failed). Each failure is one api_error event after retries.",
        )
    )
    fast = _inc(REQUESTS, REQ_F + ',speed="fast"', R)
    # Claude Code's own cost for the requests its events count (both native), with the request filters.
    native_cost = _inc(COST, 'source="claude_code_otel",' + REQ_F, R)
    p.append(stat(lay, "Fast-mode share", f"({fast} or vector(0)) / {req}", "percentunit", decimals=1))
    p.append(
        stat(
            lay,
            "Cost per request",
            f"{native_cost} / {req}",
            "currencyUSD",
            decimals=4,
            desc="Claude Code's own cost metric / its api_request events (both native telemetry).",
        )
    )
    p.append(
        stat(
            lay,
            "Prompts per session",
            f"sum({window(PROMPTS, None, R)}) / sum({window(SESSIONS, None, R)})",
            "short",
            decimals=1,
            desc="user_prompt events / sessions started (claude_code.session.count) in the range.",
        )
    )
    p.append(
        bars(
            lay,
            "p90 request latency by model",
            _quantile("0.9", LATENCY, REQ_F, R, "model"),
            "{{model}}",
            "ms",
        )
    )
    p.append(bars(lay, "Requests by model", _inc(REQUESTS, REQ_F, R, "model"), "{{model}}", "short"))
    p.append(
        bars(lay, "Requests by query source", _inc(REQUESTS, REQ_F, R, "query_source"), "{{query_source}}", "short")
    )

    p.append(row(lay, "Latency over time"))
    lat = timeseries(
        lay,
        "Request latency percentiles by model",
        _quantile("0.5", LATENCY, REQ_F, "$__rate_interval", "model", "rate"),
        "p50 {{model}}",
        "ms",
        w=24,
        stack=False,
        draw="line",
    )
    lat["targets"] += [
        target(_quantile(q, LATENCY, REQ_F, "$__rate_interval", "model", "rate"), ref, f"p{q[2:]} {{{{model}}}}")
        for q, ref in (("0.90", "B"), ("0.99", "C"))
    ]
    p.append(lat)

    p.append(row(lay, "Errors"))
    p.append(bars(lay, "Errors by status code", _inc(ERRORS, ERR_F, R, "status_code"), "{{status_code}}", "short"))
    p.append(
        timeseries(
            lay,
            "Errors by model and status code",
            _inc(ERRORS, ERR_F, IV, "model, status_code"),
            "{{model}} {{status_code}}",
            "short",
            w=16,
        )
    )

    p.append(row(lay, "Tools"))
    p.append(bars(lay, "Tool calls by tool", _inc(TOOLS, "", R, "tool_name"), "{{tool_name}}", "short"))
    p.append(
        bars(lay, "Tool failures by tool", _inc(TOOLS, 'success="false"', R, "tool_name"), "{{tool_name}}", "short")
    )
    p.append(
        bars(
            lay, "p90 tool duration by tool", _quantile("0.9", TOOL_LATENCY, "", R, "tool_name"), "{{tool_name}}", "ms"
        )
    )
    variables = [variable(v, v.replace("_", " ").capitalize(), REQUESTS) for v in ACTIVITY_VARS]
    return dashboard(
        "tokenbridge-claude-code-activity",
        "Claude Code activity",
        "Requests, latency, errors, tools and fast mode from Claude Code's events.",
        p,
        ["tokenbridge", "claude-code"],
        variables,
    )


def _spend_dashboard() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from spend_dashboard import spend

    return spend(sys.modules[__name__])


def _team_dashboard() -> dict:
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent)]  # team_dashboard imports bridge.central (the report's queries)
    from team_dashboard import team

    return team(sys.modules[__name__])


def _team_personal() -> dict[str, dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from team_personal import variants

    return variants(sys.modules[__name__])


def render_team() -> dict[str, str]:
    out = {"team-usage.json": _team_dashboard(), **_team_personal()}
    return {name: json.dumps(d, indent=2) + "\n" for name, d in out.items()}


def render() -> dict[str, str]:
    return {
        "claude-code.json": json.dumps(claude_code(), indent=2) + "\n",
        "ai-usage-overview.json": json.dumps(overview(), indent=2) + "\n",
        "spend-control.json": json.dumps(_spend_dashboard(), indent=2) + "\n",
        "claude-code-activity.json": json.dumps(activity(), indent=2) + "\n",
    }


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    outputs = [(OUT, name, content) for name, content in render().items()]
    outputs += [(TEAM_OUT, name, content) for name, content in render_team().items()]
    for out, name, content in outputs:
        path = out / name
        if check:
            if not path.exists() or path.read_text() != content:
                stale.append(name)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    if stale:
        print(f"stale dashboards (run python3 grafana/generate_dashboards.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
