"""The ``tokenbridge`` command line.

Errors are one clear line and a non-zero exit code; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge import __version__, config
from bridge.errors import ConfigError, TokenbridgeError
from bridge.ledger import Ledger

if TYPE_CHECKING:
    from bridge.report import Bucket, Report

# Each command imports what it needs when it runs: a one-off `tokenbridge sync` spends most of
# its time starting up, and the report, backfill and status modules are not part of it.
KINDS = ("daily", "weekly", "monthly", "session", "models")  # bridge.report.KINDS (checked by a test)
BY = ("provider", "model", "source", "project", "session")  # bridge.report.BY
PLANS = ("pro", "max5", "max20", "api")  # bridge.plans.PLANS

log = logging.getLogger("tokenbridge")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokenbridge", description="AI coding usage as Claude Code's OTLP metrics.")
    p.add_argument("--version", action="version", version=f"tokenbridge {__version__}")
    p.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    p.add_argument("--state-dir", type=Path, help="ledger directory (env TOKENBRIDGE_STATE_DIR)")
    p.add_argument("--config", type=Path, help="config file (env TOKENBRIDGE_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="daemon: watch files, export periodically")
    _export_flags(run)
    run.add_argument("--prometheus-port", type=int, help="also serve the series at http://HOST:PORT/metrics")
    run.add_argument("--prometheus-host", default="127.0.0.1")
    run.add_argument("--interval", help="export interval in seconds (0.1 to 86400)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar on the first scan")
    run.add_argument("--http-port", type=int, help="also serve the web view and API (see `serve`) on this port")
    run.add_argument("--http-host", default="127.0.0.1", help="address for --http-port (non-loopback needs a token)")
    run.add_argument("--events-port", help="receive Claude Code's events here, or 'off' (env TOKENBRIDGE_EVENTS_PORT)")
    run.add_argument("--events-host", help="address of the events receiver (default 127.0.0.1)")

    srv = sub.add_parser("serve", help="web view and JSON API from the ledger (http://127.0.0.1:8765)")
    srv.add_argument("--host", default="127.0.0.1", help="non-loopback needs TOKENBRIDGE_HTTP_TOKEN")
    srv.add_argument("--port", type=int, default=8765)

    sync = sub.add_parser("sync", help="one ingest pass, one export, exit")
    sync.add_argument("--source", action="append", metavar="NAME", help="only this source or group (repeatable)")
    sync.add_argument("--days", type=int, help="only files changed in the last N days")
    sync.add_argument("--no-export", action="store_true", help="ingest into the ledger only")
    sync.add_argument("--no-progress", action="store_true", help="no progress bar")
    _export_flags(sync)

    rep = sub.add_parser("report", help="usage tables from the ledger")
    rep.add_argument("kind", choices=(*KINDS, "blocks"), help="blocks: Claude's 5-hour session blocks")
    rep.add_argument("--json", action="store_true", help="JSON for scripts")
    rep.add_argument("--since", help="first day (YYYY-MM-DD), inclusive")
    rep.add_argument("--until", help="last day (YYYY-MM-DD), inclusive")
    rep.add_argument("--timezone", "-z", help="IANA zone for day buckets (default: system zone)")
    rep.add_argument("--breakdown", action="store_true", help="a row per model under each period (or group)")
    rep.add_argument(
        "--by",
        choices=sorted({*BY, "user", "machine"}),
        help="a row per provider, model, source, project or session in each period (user, machine: --central)",
    )
    rep.add_argument("--source", action="append", metavar="NAME", help="only these sources or groups (repeatable)")
    rep.add_argument("--plan", choices=PLANS, help="Claude usage at API list prices vs this plan's price")
    rep.add_argument(
        "--central",
        metavar="URL",
        help="team mode: read the central store's query API (env TOKENBRIDGE_CENTRAL_URL; token: "
        "TOKENBRIDGE_CENTRAL_TOKEN)",
    )

    src = sub.add_parser("sources", help="each source: detected, roots, files, last event, problems")
    src.add_argument("--json", action="store_true")

    bf = sub.add_parser("backfill", help="write the ledger's history into Prometheus at its true timestamps")
    bf.add_argument("--days", type=float, default=30, help="how far back (default 30; capped by Prometheus' limits)")
    bf.add_argument("--source", action="append", metavar="NAME", help="only these sources or groups (repeatable)")
    bf.add_argument("--prometheus-url", help="Prometheus (env TOKENBRIDGE_PROMETHEUS_URL, default localhost:9090)")
    bf.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("statusline", help="Claude Code status-line command: JSON on stdin, one line out, quota gauges")
    st = sub.add_parser("status", help="spend today/this week/this month, burn rate, budgets, balances, quotas")
    st.add_argument("--json", action="store_true", help="JSON with stable keys")

    wrap = sub.add_parser("wrap", help="run a command in a terminal, recording the usage it prints")
    wrap.add_argument("--session", help="session id of this run (default: a new one)")
    wrap.add_argument("--project", help="project label (default: git root or working directory)")
    wrap.add_argument("--all-patterns", action="store_true", help="also tools whose own files a source reads")
    wrap.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")

    parse = sub.add_parser("parse", help="show what a printed line would record (records nothing)")
    parse.add_argument("line")

    cap = sub.add_parser("capture", help="record usage printed in a tmux pane's scrollback or a file")
    cap.add_argument("--pane", help="tmux pane (e.g. %%3 or session:0.1)")
    cap.add_argument("--file", help="a text file of terminal output ('-' = stdin)")
    cap.add_argument("--session", help="session id (default: from the pane or file)")
    cap.add_argument("--project", help="project label (default: git root or working directory)")
    cap.add_argument("--all-patterns", action="store_true", help="also tools whose own files a source reads")

    exp = sub.add_parser("export", help="write the totals for node_exporter's textfile collector (for cron)")
    exp.add_argument("--textfile", required=True, metavar="PATH", help="e.g. /var/lib/node_exporter/tokenbridge.prom")

    man = sub.add_parser("log", help="record a manual usage entry (re-running it adds nothing)")
    for flag in ("--input", "--output", "--cache-read", "--cache-write"):
        man.add_argument(flag, type=int, metavar="N")
    man.add_argument("--cost", help="USD, kept as reported (default: estimated from the price table)")
    man.add_argument("--model")
    man.add_argument("--provider", help="default: from the model name")
    man.add_argument("--project", help="default: git root or working directory")
    man.add_argument("--session")
    man.add_argument("--time", help="ISO-8601 time with zone (default: now)")
    man.add_argument("--key", help="idempotency key (default: a digest of the entry)")
    return p


def _export_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-otlp", action="store_true", help="do not push OTLP (e.g. with --prometheus-port only)")


def _printable(text: str) -> str:
    """``text`` with every non-printable character (ESC, BEL, newlines, bidi overrides) shown as its
    Python escape: names come from files and APIs and must never drive the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _cell(value: object) -> str:
    """A table cell: printable and never read as Rich markup (``[/oops]`` would break the table)."""
    from rich.markup import escape

    return escape(_printable(str(value)))


def _err(text: str) -> None:
    print(_printable(text), file=sys.stderr)


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"tokenbridge: {record.levelname.lower()}: {_printable(record.getMessage())}"


def _setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s") if debug else _OneLine())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("tokenbridge").setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        # The OTel SDK logs every retry with a traceback; our exporter wrapper says it in one line.
        for noisy in ("opentelemetry", "grpc", "urllib3", "watchdog"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)


def _settings(args: argparse.Namespace) -> config.Settings:
    s = config.load(state_dir=args.state_dir, config=args.config)
    if getattr(args, "prometheus_port", None) is not None:
        s.prometheus_port = args.prometheus_port
    interval = getattr(args, "interval", None)
    if interval is not None:
        s.interval_s = config.seconds("--interval", interval)
    if getattr(args, "no_otlp", False):
        s.otlp = False
    return s


def cmd_sync(args: argparse.Namespace) -> int:
    from bridge import app

    settings = _settings(args)
    since = _days_ago(args.days) if args.days is not None else None
    started = time.monotonic()
    result = app.sync(settings, args.source, since, export=not args.no_export, show_progress=not args.no_progress)
    elapsed = time.monotonic() - started
    failed = [r for r in result.stats if r.failure is not None]
    if args.debug and failed:
        raise failed[0].failure  # type: ignore[misc]
    if failed and len(failed) == len(result.stats):
        for r in failed:  # nothing was read: the errors are the whole story
            _err(f"tokenbridge: error: {_named(r.source, r.failure)}")
        return 1
    mb = sum(r.bytes_read for r in result.stats) / 1e6
    files = sum(r.files_read for r in result.stats)
    print(
        f"ingested {result.new_requests} new request(s) from {files} file(s), {mb:.1f} MB in {elapsed:.2f}s",
        file=sys.stderr,
    )
    for r in result.stats:
        if r.failure is not None:
            _err(f"tokenbridge: error: {_named(r.source, r.failure)}")
            continue
        for err in r.errors:
            log.warning("%s: %s", r.source, err)
    if result.export_ok:
        _err(f"exported totals to {result.exported_to}")
    if not result.new_requests:
        _say_where_we_looked(settings, args.source)
    return 1 if failed else 0


def _say_where_we_looked(settings: config.Settings, only: Sequence[str] | None) -> None:
    """An empty ledger is not a result: say so, and where each source looked."""
    from bridge import app

    with Ledger.open(settings.state_dir) as ledger:
        if not ledger.is_empty():
            return
    _err("tokenbridge: no usage found yet.")
    for line in app.where_to_look(settings, only):
        _err(f"  {line}")


def _days_ago(days: int) -> datetime | None:
    if days < 1:
        raise ConfigError("--days", f"must be at least 1, got {days}")
    try:
        return datetime.now(UTC) - timedelta(days=days)
    except OverflowError:  # before year 1: every file qualifies
        return None


def _named(source: str, exc: BaseException | None) -> str:
    text = str(exc)
    return text if text.startswith(f"{source}: ") else f"{source}: {text}"


def cmd_run(args: argparse.Namespace) -> int:
    from bridge.daemon import run

    settings = _settings(args)
    if args.events_port is not None:
        settings.events_port = config.port_value("--events-port", args.events_port)
    if args.events_host:
        settings.events_host = args.events_host
    http = None
    if args.http_port is not None:
        from bridge.web import WebServer

        http = WebServer(settings, args.http_host, args.http_port)
    return run(settings, args.prometheus_host, show_progress=not args.no_progress, http=http)


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.web import WebServer

    server = WebServer(_settings(args), args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _console() -> Any:
    from rich.console import Console

    # A fixed width when piped keeps output stable for scripts and snapshot tests; COLUMNS (as a terminal sets it)
    # overrides it, so a script can ask for long paths unfolded.
    width = None
    if not sys.stdout.isatty():
        cols = os.environ.get("COLUMNS", "")
        width = int(cols) if cols.isdigit() and int(cols) >= 40 else 140
    return Console(soft_wrap=False, width=width)


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_cost(line: Any) -> str:
    cost = line.cost
    if cost is None:
        return "unknown"
    text = f"${cost:,.2f}"
    return f"{text} + ?" if line.unpriced else text


def cmd_report(args: argparse.Namespace) -> int:
    from bridge import blocks, plans
    from bridge.app import resolve_selection
    from bridge.report import build, parse_day, resolve_tz
    from bridge.views import default_exclusions

    tz = resolve_tz(args.timezone)
    since = parse_day(args.since, "--since") if args.since else None
    until = parse_day(args.until, "--until") if args.until else None
    central_url = args.central or os.environ.get("TOKENBRIDGE_CENTRAL_URL", "").strip()
    if central_url:
        return _central_report(args, central_url, tz, since, until)
    if args.by in ("user", "machine"):
        raise ConfigError("--by", f"{args.by} needs the team's central store: --central URL or TOKENBRIDGE_CENTRAL_URL")
    settings = _settings(args)
    selected = resolve_selection(args.source)
    if args.kind == "blocks" and (args.by or args.breakdown):
        raise ConfigError("--by" if args.by else "--breakdown", "report blocks has a row per block only")
    with Ledger.open(settings.state_dir) as ledger:
        # Default totals count each request once: a provider's billing API, where it has data,
        # stands for its local sources' rows (bridge.views); --source shows any source as it is.
        # Blocks read named sources only (claude_transcripts unless --source): nothing to leave out.
        exclude = [] if selected or args.kind == "blocks" else default_exclusions(ledger)
        if args.kind == "blocks":
            rep: Any = blocks.build(ledger, tz, since, until, selected)
        else:
            rep = build(ledger, args.kind, tz, since, until, selected, by=args.by, exclude=exclude)
        plan = None
        if args.plan:  # over the same days and rows as the report
            rows = selected or (rep.sources if args.kind == "blocks" else None)
            plan = plans.for_report(ledger, args.plan, settings.plan_prices, tz, (since, until), rows, exclude)
        empty = ledger.is_empty()
    if empty:
        _err(f"tokenbridge: the ledger at {settings.state_dir} is empty: run `tokenbridge sync` first.")
    for source, provider, start in exclude:
        why = (
            f"an attribution view of {provider} usage, not in default totals"
            if start == 0
            else f"{provider} usage is counted from {provider}'s billing API where it has data"
        )
        _err(f"{source}: {why} (see it alone with --source {source})")
    if args.json:
        data = rep.as_json(tz) if args.kind == "blocks" else rep.as_json(breakdown=True)
        if plan is not None:
            data["plan"] = plan.as_json()
        print(json_text(data))
        return 0
    if args.kind == "blocks":
        _console().print(blocks.table(rep, tz, _cell, _cells))
        print("\n".join(blocks.active_summary(rep, tz)))
    else:
        _console().print(_report_table(rep, args.breakdown))
    if plan is not None:
        print("\n".join(plans.explain(plan)))
    if rep.totals.unpriced:
        print(
            f"{rep.totals.unpriced} request(s) or usage row(s) use a model without a known price: their cost is "
            "not included (see `tokenbridge sources`; add prices in the override file).",
            file=sys.stderr,
        )
    return 0


def _central_report(args: argparse.Namespace, url: str, tz: Any, since: Any, until: Any) -> int:
    """``report --central``: the team's usage from the central store (bridge.central)."""
    from bridge import central

    if args.breakdown:
        raise ConfigError("--breakdown", "not available with --central (use --by model)")
    store = central.Central(url, os.environ.get("TOKENBRIDGE_CENTRAL_TOKEN", "").strip() or None)
    rep = central.build(store, args.kind, args.by or "user", tz, since, until, args.source)
    for source in rep.billing_seen:
        _err(f"{source}: organisation-wide billing data, not attributed to users (see it alone with --source {source})")
    if args.json:
        print(json.dumps(rep.as_json(), indent=2))
        return 0
    _console().print(central.table(rep, _cell))
    unpriced = sum(g.unpriced for g in rep.totals().values())
    if unpriced:
        _err(f"{unpriced} request(s) use a model without a known price: their cost is not included.")
    return 0


_FIRST = {"daily": "Date", "weekly": "Week of", "monthly": "Month", "session": "Session", "models": "Model"}
_BY_HEADER = {"provider": "Provider", "model": "Model", "source": "Source", "project": "Project", "session": "Session"}


def json_text(doc: Any) -> str:
    """``json.dumps(doc, indent=2)``, the same text, several times faster (a session report of a
    large history is tens of thousands of values). Text json would escape (non-ASCII, DEL) is
    left to json."""
    import orjson

    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    return text if text.isascii() and "\x7f" not in text else json.dumps(doc, indent=2)


def _report_table(rep: Report, breakdown: bool) -> Any:
    """One row per period. With ``--by``: a row per value under it, in the dimension's column (which
    replaces "Models": both would not fit beside a session id); ``--breakdown`` adds a dim row per
    model under the innermost row."""
    from rich.table import Table

    title = {"session": "Sessions", "models": "Models"}.get(rep.kind, rep.kind.capitalize())
    table = Table(title=_cell(f"Claude Code and AI usage — {title} ({rep.timezone})"), show_footer=False)
    # Names are folded, never cut short (a session id or a path is copied from here).
    table.add_column(_FIRST[rep.kind], overflow="fold")
    second = _BY_HEADER[rep.by] if rep.by else "Models" if rep.kind != "models" else None
    if second:
        table.add_column(second, overflow="fold")
    for col in ("Input", "Output", "Cache create", "Cache read", "Total tokens", "Cost (USD)"):
        table.add_column(col, justify="right", no_wrap=True)
    pad = [""] if second else []

    def model_rows(b: Bucket, lead: list[str]) -> None:
        if breakdown and rep.kind != "models":
            for (model, _p), line in sorted(b.models.items()):
                table.add_row(*lead, _cell(f"  └ {model}"), *pad[len(lead) :], *_cells(line), style="dim")

    for b in rep.buckets:
        if rep.by:
            table.add_row(_cell(b.key), "", *_cells(b.line))
            for g in b.ordered_groups():
                table.add_row("", _cell(g.key), *_cells(g.line))
                model_rows(g, [""])
        else:
            models = [_cell(", ".join(sorted({m for m, _ in b.models})))] if second else []
            table.add_row(_cell(b.key), *models, *_cells(b.line))
            model_rows(b, [])
    table.add_section()
    table.add_row("Total", *pad, *_cells(rep.totals), style="bold")
    return table


def _cells(line: Any) -> list[str]:
    return [
        _fmt_int(line.input),
        _fmt_int(line.output),
        _fmt_int(line.cache_creation),
        _fmt_int(line.cache_read),
        _fmt_int(line.total),
        _fmt_cost(line),
    ]


def cmd_sources(args: argparse.Namespace) -> int:
    from bridge import price_data
    from bridge.app import source_rows

    settings = _settings(args)
    rows = source_rows(settings)
    table = price_data.info(settings.state_dir)
    refresh = "refreshed by `tokenbridge run`" if settings.prices_refresh else "refresh off"
    if args.json:
        print(
            json.dumps(
                {"sources": rows, "priceTable": {**table.as_json(), "refresh": settings.prices_refresh}}, indent=2
            )
        )
        return 0
    from rich.table import Table

    console = _console()
    console.print(f"[bold]price table[/bold]  {_cell(table.describe())} ({refresh})")
    console.print()
    for r in rows:
        # One block per source, full values (paths are never truncated).
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column(overflow="fold")
        poll = r.get("poll")
        if poll is not None:
            _polled_rows(grid, r, poll)
            console.print(grid)
            console.print()
            continue
        state = ("detected" if r["detected"] else "not detected") + (", enabled" if r["enabled"] else ", disabled")
        grid.add_row(_cell(r["name"]), state)
        grid.add_row("roots", "\n".join(_cell(root) for root in r["roots"]) or "-")
        grid.add_row("files", str(r["files"]))
        grid.add_row("requests", _fmt_int(r["requests"]))
        grid.add_row("last event", _cell(r["lastEvent"] or "-"))
        grid.add_row("skipped lines", str(r["skippedLines"]))
        grid.add_row("unknown models", _cell(", ".join(r["unknownModels"]) or "-"))
        grid.add_row("errors", _cell("; ".join(r["errors"]) or "-"))
        if r.get("views"):
            _view_rows(grid, r["views"])
        console.print(grid)
        console.print()
    return 0


def _view_rows(grid: Any, views: dict[str, Any]) -> None:
    """OpenClaw's other views of its usage: the gateway-log fallback and the gateway's RPC totals
    beside the transcripts' (shown for reconciliation, never added)."""
    fb = views.get("logFallback")
    if fb is not None:
        grid.add_row("log fallback", f"{_fmt_int(fb['requests'])} run(s), {_fmt_int(fb['tokens'])} tokens in "
                     f"{fb['sessions']} session(s) without a transcript")  # fmt: skip
    gw = views.get("gateway")
    if gw is None:
        return
    where = f" ({_cell(gw['url'])})" if gw.get("url") else ""
    grid.add_row("gateway view", _cell(gw["state"]) + where)
    if gw.get("error"):
        grid.add_row("gateway error", _cell(gw["error"]))
    if gw["state"] != "ok":
        return
    names = ("input", "output", "cacheRead", "cacheWrite", "totalTokens")

    def line(d: dict[str, Any]) -> str:
        return ", ".join(f"{n} {_fmt_int(d[n])}" for n in names)

    grid.add_row("gateway totals", line(gw["totals"]) + f", cost {gw['totals']['totalCost']}")
    grid.add_row("transcripts", line(gw["transcripts"]) + f", cost {gw['transcripts']['totalCost']}")
    grid.add_row("difference", ", ".join(f"{n} {gw['difference'][n]:+,}" for n in names))
    s = gw["sessions"]
    grid.add_row("sessions", f"{s['gateway']} at the gateway, {s['differing']} differ")
    for d in gw["differingSessions"]:
        grid.add_row("", _cell(f"{d['session']}: gateway {d['gateway']:,}, transcripts {d['transcripts']:,}"))


def _polled_rows(grid: Any, r: dict[str, Any], poll: dict[str, Any]) -> None:
    """A provider API source: its state, whether its key is set (never the key), its schedule."""
    grid.add_row(_cell(r["name"]), poll["state"] + (", enabled" if r["enabled"] else ", disabled"))
    grid.add_row("key", f"{poll['keyEnv']} " + ("set" if poll["configured"] else "not set"))
    grid.add_row("endpoint", _cell(poll["baseUrl"]))
    notes = [n for n in r["errors"] if not n.startswith("not configured")]
    if not poll["configured"]:
        grid.add_row("notes", _cell("; ".join(notes) or "-"))
        return
    health = r["health"] or {}
    grid.add_row("last poll", poll["lastPoll"] or "-")
    grid.add_row("last success", poll["lastSuccess"] or "-")
    if health.get("consecutiveFailures"):
        # The provider's own message is in it: escaped like every other cell.
        grid.add_row("last error", _cell(f"{health['lastErrorKind']}: {health['lastError']}"))
    grid.add_row("next poll", poll["nextPoll"] or "now")
    if poll["balances"]:
        grid.add_row("balance", ", ".join(f"{b['amount']} {b['currency']}" for b in poll["balances"]))
    grid.add_row("notes", _cell("; ".join(notes) or "-"))


def _delegated(target: str) -> Callable[[argparse.Namespace], int]:
    """A command implemented in its own module as ``cmd(settings, args)``."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        module, func = target.split(":")
        command: Callable[[config.Settings, argparse.Namespace], int] = getattr(importlib.import_module(module), func)
        return command(_settings(args), args)

    return run


def _lazy(target: str) -> Callable[[argparse.Namespace], int]:
    """A command ``cmd(args)`` of its own module, imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        module, func = target.split(":")
        command: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), func)
        return command(args)

    return run


_COMMANDS = {
    "sync": cmd_sync,
    "run": cmd_run,
    "report": cmd_report,
    "sources": cmd_sources,
    "serve": cmd_serve,
    "backfill": _lazy("bridge.backfill:cmd"),
    "statusline": _lazy("bridge.statusline:cmd_statusline"),
    "status": _lazy("bridge.status:cmd_status"),
    "wrap": _delegated("bridge.wrap:cmd_wrap"),
    "parse": _delegated("bridge.wrap:cmd_parse"),
    "capture": _delegated("bridge.wrap:cmd_capture"),
    "log": _delegated("bridge.manual:cmd_log"),
    "export": _delegated("bridge.textfile:cmd_export"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.debug)
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        if args.debug:
            raise
        _err(f"tokenbridge: config error: {exc}")
        return 2
    except TokenbridgeError as exc:
        if args.debug:
            raise
        _err(f"tokenbridge: error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        if args.debug:
            raise
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        _err(f"tokenbridge: error:{where}: {exc.strerror or exc}")
        return 1
    except Exception as exc:  # a bug: still one line, the traceback with --debug
        if args.debug:
            raise
        _err(f"tokenbridge: error: unexpected {type(exc).__name__}: {exc} (run with --debug for details)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
