"""The web view's one page, rendered on the server: totals, cost and tokens over time (SVG),
top models, cache savings, source health, balances and quotas.

No script and no external asset: the page works offline and under a strict Content-Security-Policy.
Every figure comes from ``bridge._api`` (the report code), with its exact value in a ``data-value``
attribute so tests and scripts can read the page as precisely as the JSON API.
"""

from __future__ import annotations

import html
from decimal import Decimal
from typing import Any

from bridge import _api, app, config
from bridge.ledger import Ledger

_PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
_W, _H, _PAD = 760, 220, 36


def render(settings: config.Settings, params: dict[str, list[str]]) -> str:
    q = _api.parse_query(params)
    days = _api.int_param(params, "days", 30, 1, _api.MAX_DAYS)
    with Ledger.open(settings.state_dir) as led:
        summary = _api.summary(led, q)
        by_provider = _api.timeline(led, q, days, "provider")
        by_model = _api.timeline(led, q, days, "model")
        models = _api.by_model(led, q)
        savings = _api.cache_savings(led, q, settings)
        gauges = led.gauges()
    sources = app.source_rows(settings, views=False)  # no gateway call per page view
    body = [
        _cards(summary),
        _section(f"Cost per day by provider (USD, {len(by_provider['days'])} days)", _bars(by_provider, "totalCost")),
        _section("Tokens per day by model", _bars(by_model, "totalTokens")),
        _section("Top models", _models_table(models)),
        _section("Cache savings", _savings(savings)),
        _section("Balances and quotas", _gauges(gauges)),
        _section("Sources", _sources(sources)),
    ]
    return _HEAD.replace("{tz}", _e(summary["timezone"])) + "".join(body) + "</main></body></html>"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _money(value: str | None) -> str:
    if value is None:
        return "unknown"
    return f"${Decimal(value):,.2f}"


def _cards(summary: dict[str, Any]) -> str:
    names = {"allTime": "All time", "last30Days": "Last 30 days", "last7Days": "Last 7 days", "today": "Today"}
    cards = []
    ranged = summary["allTime"]["since"] or summary["allTime"]["until"]
    if ranged:
        names["allTime"] = f"{summary['allTime']['since'] or '…'} to {summary['allTime']['until'] or '…'}"
    for key, title in names.items():
        s = summary[key]
        unpriced = (
            f"<div class='muted'>+ {s['unpricedRequests']} unpriced request(s) or usage row(s)</div>"
            if s["unpricedRequests"]
            else ""
        )
        cards.append(
            f"<div class='card' id='card-{key}'><h3>{_e(title)}</h3>"
            f"<div class='big' data-field='totalCost' data-value='{_e(s['totalCost'])}'>{_money(s['totalCost'])}</div>"
            f"<div data-field='totalTokens' data-value='{s['totalTokens']}'>{s['totalTokens']:,} tokens</div>"
            f"<div data-field='requests' data-value='{s['requests']}'>{s['requests']:,} requests</div>{unpriced}</div>"
        )
    return "<div class='cards'>" + "".join(cards) + "</div>"


def _section(title: str, inner: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{inner}</section>"


def _bars(timeline: dict[str, Any], field: str) -> str:
    """A stacked bar chart, one bar per day, one colour per series (top 8, the rest as 'other')."""
    series: dict[str, list[dict[str, Any]]] = timeline.get("series", {})
    days = [d["date"] for d in timeline["days"]]
    if not series or not days:
        return "<p class='muted'>No usage in this range.</p>"

    def num(point: dict[str, Any]) -> float:
        v = point.get(field)
        return float(Decimal(v)) if v is not None else 0.0

    totals = {name: sum(num(p) for p in pts) for name, pts in series.items()}
    ranked = sorted(totals, key=lambda n: -totals[n])
    shown, rest = ranked[:8], ranked[8:]
    stacks = [[num(series[n][i]) for n in shown] + [sum(num(series[n][i]) for n in rest)] for i in range(len(days))]
    top = max((sum(s) for s in stacks), default=0.0) or 1.0
    bw = (_W - _PAD) / len(days)
    out = [f"<svg viewBox='0 0 {_W} {_H + 20}' role='img' class='chart'>"]
    for i, stack in enumerate(stacks):
        y = float(_H)
        for j, value in enumerate(stack):
            if value <= 0:
                continue
            h = value / top * (_H - 10)
            y -= h
            name = shown[j] if j < len(shown) else "other"
            color = _PALETTE[j % len(_PALETTE)] if j < len(shown) else "#bab0ac"
            out.append(
                f"<rect x='{_PAD + i * bw + 1:.1f}' y='{y:.1f}' width='{max(bw - 2, 1):.1f}' height='{h:.1f}' "
                f"fill='{color}'><title>{_e(days[i])} {_e(name)}: {value:,.4g}</title></rect>"
            )
    out.append(f"<text x='2' y='12' class='axis'>{top:,.4g}</text><text x='2' y='{_H}' class='axis'>0</text>")
    out.append(f"<text x='{_PAD}' y='{_H + 16}' class='axis'>{_e(days[0])}</text>")
    out.append(f"<text x='{_W - 70}' y='{_H + 16}' class='axis'>{_e(days[-1])}</text></svg>")
    legend = "".join(
        f"<span><i style='background:{_PALETTE[j % len(_PALETTE)]}'></i>{_e(n)}</span>" for j, n in enumerate(shown)
    )
    if rest:
        legend += "<span><i style='background:#bab0ac'></i>other</span>"
    return "".join(out) + f"<div class='legend'>{legend}</div>"


def _models_table(models: dict[str, Any]) -> str:
    rows = [
        f"<tr data-model='{_e(m['model'])}'><td>{_e(m['model'])}</td><td>{_e(m['provider'])}</td>"
        f"<td class='n'>{m['inputTokens']:,}</td><td class='n'>{m['outputTokens']:,}</td>"
        f"<td class='n'>{m['cacheCreationTokens']:,}</td><td class='n'>{m['cacheReadTokens']:,}</td>"
        f"<td class='n' data-value='{m['totalTokens']}'>{m['totalTokens']:,}</td>"
        f"<td class='n' data-value='{_e(m['totalCost'])}'>{_money(m['totalCost'])}</td></tr>"
        for m in models["models"][:20]
    ]
    if not rows:
        return "<p class='muted'>No usage yet.</p>"
    head = (
        "<tr><th>Model</th><th>Provider</th><th>Input</th><th>Output</th><th>Cache create</th>"
        "<th>Cache read</th><th>Total tokens</th><th>Cost</th></tr>"
    )
    return f"<table id='models'>{head}{''.join(rows)}</table>"


def _savings(s: dict[str, Any]) -> str:
    ratio = "-" if s["hitRatio"] is None else f"{s['hitRatio'] * 100:.1f} %"
    unpriced = (
        f"<p class='muted'>Not included (no price): {_e(', '.join(s['unpricedModels']))}</p>"
        if s["unpricedModels"]
        else ""
    )
    return (
        f"<p id='savings' data-value='{_e(s['savedUSD'])}'>Cache reads saved <b>{_money(s['savedUSD'])}</b> against "
        f"the input rate ({s['cacheReadTokens']:,} tokens read from cache; {ratio} of input tokens).</p>{unpriced}"
    )


def _gauges(gauges: list[Any]) -> str:
    if not gauges:
        return "<p class='muted'>None reported (provider balances and plan quotas appear here when configured).</p>"
    rows = "".join(
        f"<tr><td>{_e(g.name)}</td><td>{_e(', '.join(f'{k}={v}' for k, v in sorted(g.labels.items())))}</td>"
        f"<td class='n' data-value='{_e(g.value)}'>{_e(g.value)}</td><td>{_e(g.source)}</td></tr>"
        for g in gauges
    )
    return f"<table id='gauges'><tr><th>Gauge</th><th>Labels</th><th>Value</th><th>Source</th></tr>{rows}</table>"


def _sources(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        h = r.get("health") or {}
        state = "ok" if h and not h.get("consecutiveFailures") else ("failing" if h else "never run")
        if not r["detected"]:
            state = "not detected"
        err = h.get("lastError") if h else None
        out.append(
            f"<tr data-source='{_e(r['name'])}'><td>{_e(r['name'])}</td><td>{_e(r['kind'])}</td><td>{state}</td>"
            f"<td class='n'>{r['requests']:,}</td><td>{_e(r['lastEvent'] or '-')}</td>"
            f"<td>{_e(h.get('lastSuccess') or '-') if h else '-'}</td><td>{_e(err or '')}</td></tr>"
        )
    head = (
        "<tr><th>Source</th><th>Kind</th><th>State</th><th>Requests</th><th>Last event</th>"
        "<th>Last success</th><th>Last error</th></tr>"
    )
    return f"<table id='sources'>{head}{''.join(out)}</table>"


_HEAD = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>tokenbridge</title>
<style>
body{font-family:system-ui,-apple-system,sans-serif;margin:0;background:#f7f7f8;color:#1d1d1f}
header{background:#1d1d1f;color:#fff;padding:.8rem 1.5rem}header small{opacity:.7}
main{max-width:64rem;margin:0 auto;padding:1rem 1.5rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(13rem,1fr));gap:1rem}
.card,section{background:#fff;border-radius:8px;padding:1rem;box-shadow:0 1px 2px #0001}
section{margin-top:1rem}.big{font-size:1.8rem;font-weight:600}.muted{color:#777}
h2{font-size:1.1rem;margin:.2rem 0 .8rem}h3{margin:0 0 .4rem;font-size:.95rem;color:#555}
table{border-collapse:collapse;width:100%;font-size:.9rem}
td,th{padding:.3rem .5rem;border-bottom:1px solid #eee;text-align:left}
.n{text-align:right;font-variant-numeric:tabular-nums}.chart{width:100%;height:auto}.axis{font-size:10px;fill:#777}
.legend span{margin-right:1rem;font-size:.85rem}
.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem}
</style></head><body><header><b>tokenbridge</b> <small>AI coding usage, counted once · days in {tz} ·
<a href="/docs" style="color:#9cf">API</a></small></header><main>"""
