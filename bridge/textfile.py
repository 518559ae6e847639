"""``tokenbridge export --textfile PATH``: the ledger's totals for node_exporter's textfile
collector, for hosts that run tokenbridge from cron instead of a daemon.

The file holds the same series, under the same names, as the Prometheus view of the OTLP export
(``claude_code_token_usage_tokens_total``, ``claude_code_cost_usage_USD_total``,
``tokenbridge_unpriced_requests_total``; ``session.id`` becomes the label ``session_id``). It goes
through the one series model (``bridge.series``): a value never goes below one already exported
by any process sharing the ledger. It is written atomically: a temporary file in the same
directory, flushed to disk, then renamed over PATH, so the collector never reads half a file.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bridge.errors import ExportError
from bridge.ledger import Ledger
from bridge.series import COST_METRIC, TOKEN_METRIC, UNPRICED_METRIC, Point, export_lock, guarded_points

# OTLP metric → its name in Prometheus (name, unit and counter suffix, as the collector writes it).
NAMES = {
    TOKEN_METRIC: ("claude_code_token_usage_tokens_total", "Number of tokens used"),
    COST_METRIC: ("claude_code_cost_usage_USD_total", "Cost of usage"),
    UNPRICED_METRIC: (
        "tokenbridge_unpriced_requests_total",
        "Requests whose model has no known price (their cost is unknown, not zero)",
    ),
}


def _label(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(v: Decimal) -> str:
    text = format(v.normalize(), "f")
    return text if text not in ("-0", "") else "0"


def render(points: list[Point]) -> str:
    """Prometheus text exposition format (0.0.4), one block per metric, lines sorted."""
    out: list[str] = []
    for metric, (name, help_text) in NAMES.items():
        lines = sorted(
            "{}{{{}}} {}".format(name, ",".join(f'{_label(k)}="{_escape(v)}"' for k, v in p.attrs), _number(p.value))
            for p in points
            if p.metric == metric
        )
        if lines:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", *lines]
    return "\n".join(out) + "\n" if out else ""


def write_atomically(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).chmod(0o644)  # the collector may run as another user
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_export(settings: Any, args: Any) -> int:
    path = Path(args.textfile)
    if not path.name.endswith(".prom"):
        print("tokenbridge: warning: node_exporter only reads files named *.prom", file=sys.stderr)
    with Ledger.open(settings.state_dir) as ledger, export_lock(ledger.path):
        points = guarded_points(ledger, settings.include_session_id, time.time_ns(), settings.include_project)
    try:
        write_atomically(path, render(points))
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"wrote {len(points)} series to {path}", file=sys.stderr)
    return 0
