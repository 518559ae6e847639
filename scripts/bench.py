#!/usr/bin/env python3
"""Benchmark tokenbridge against ccusage on a synthetic Claude Code history; check both against the truth.

Usage::

    python scripts/bench.py                      # 1 GB corpus in a temp dir, removed afterwards
    python scripts/bench.py --size 200MB --keep  # keep (and reuse) the corpus under --cache-dir
    python scripts/bench.py --keep --write docs/benchmarks.md

Measures, on a corpus made by scripts/gen_history.py (which also writes the exact truth.json):

(a) cold-scan throughput of ``tokenbridge sync --no-export`` (fresh ``TOKENBRIDGE_STATE_DIR``,
    ``CLAUDE_CONFIG_DIR=<corpus>``, ``HOME`` an empty dir), corpus bytes / process wall time;
(b) peak memory of that command: the largest SUM of RSS over its whole process tree (the CLI, the parse
    worker it spawns for a large scan, multiprocessing's resource tracker), sampled every 20 ms, and each
    process' own peak (VmHWM); CPU time is the whole tree's (``RUSAGE_CHILDREN`` delta, the tree waited for);
(c) incremental update after appending N lines (default 1,000) to one session file: a second
    ``tokenbridge sync --no-export`` (process wall time, and the in-process time if the CLI prints one),
    and the daemon path: ``tokenbridge run`` picking the append up, time until ``tokenbridge report daily
    --json`` shows the new totals;
(d) idle CPU of ``tokenbridge run`` over 30 s with nothing changing;
(e) ccusage (npm package, pinned, its native linux-x64 binary run directly, ``--offline``) on the same corpus:
    throughput, peak RSS and our ratio;
(f) correctness: ``tokenbridge report daily --json --timezone UTC`` and ccusage's daily JSON against truth.json.

The page cache is warmed (every file read once) before the timed runs, so both tools read from memory:
the figures are parse/ingest speed, not disk speed. Appended lines are removed at the end (the session file is
truncated back and truth.json restored), so a kept corpus stays reusable.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

try:
    import psutil  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # optional: /proc is read instead
    psutil = None

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {
    "input": "inputTokens",
    "output": "outputTokens",
    "cacheRead": "cacheReadTokens",
    "cacheCreation": "cacheCreationTokens",
}


def _load_gen() -> Any:
    spec = importlib.util.spec_from_file_location("gen_history", ROOT / "scripts" / "gen_history.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_history"] = mod
    spec.loader.exec_module(mod)
    return mod


gen_history = _load_gen()


# ------------------------------------------------------------------------------------------ running


@dataclass
class Run:
    cmd: list[str]
    wall: float
    user: float  # CPU seconds of the whole process tree (see run_measured)
    sys: float
    maxrss_mb: float  # peak of the SUM of RSS over the process tree (sampled); see TreeSampler
    rc: int
    stdout: str
    stderr: str
    main_rss_mb: float = 0.0  # peak RSS of the command's own process (kernel high-water mark, VmHWM)
    other_rss_mb: float = 0.0  # largest peak RSS among its descendants (the parse worker, ...)
    wait4_maxrss_mb: float = 0.0  # os.wait4 ru_maxrss: the largest single process, not a sum
    procs: list[str] = field(default_factory=list)  # processes seen in the tree (pid + short command)
    samples: int = 0
    sampler_cpu: float = 0.0  # CPU seconds the sampling thread itself used
    other_cpu: float | None = None  # CPU seconds used by everything else on the machine meanwhile
    sampled_cpu: dict[str, float] = field(default_factory=dict)  # per process, last seen by the sampler

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def _mb(kib: int) -> float:
    return kib / 1024


def _set_subreaper() -> bool:
    """Become a child subreaper (Linux prctl): descendants orphaned by the measured command (e.g.
    multiprocessing's resource tracker, which outlives its parent by a moment) are re-parented to this
    process, so they can be waited for and their CPU time lands in RUSAGE_CHILDREN."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(36, 1, 0, 0, 0) == 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


SUBREAPER = sys.platform.startswith("linux") and _set_subreaper()


def _read_proc(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 8192)
    except OSError:
        return None
    finally:
        os.close(fd)


def _kib_field(text: bytes, name: bytes) -> int:
    i = text.find(name)
    if i < 0:
        return -1
    j = text.find(b"\n", i + len(name))
    return int(text[i + len(name) : j].split()[0])


def _status_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a process in KiB, from /proc/PID/status; None once it is gone or a zombie."""
    text = _read_proc(f"/proc/{pid}/status")
    if not text:
        return None
    rss = _kib_field(text, b"\nVmRSS:")
    return (rss, _kib_field(text, b"\nVmHWM:")) if rss >= 0 else None


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process so far (its own, not its children's), from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_of(pid: int) -> list[int]:
    if psutil is not None:
        with contextlib.suppress(psutil.Error):
            return [c.pid for c in psutil.Process(pid).children(recursive=True)]
        return []
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _cmd_of(pid: int) -> str:
    with contextlib.suppress(OSError):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        words = [a.decode(errors="replace") for a in argv if a]
        if words:
            words[0] = Path(words[0]).name
        return " ".join(words)[:90]
    return "?"


class TreeSampler:
    """Samples the RSS of a process and all its descendants every ``interval`` seconds, in a thread.

    ``peak_sum_kib`` is the largest SUM of the current RSS (VmRSS) over the tree at one sample: with the
    parse worker, the memory the command needs is main + worker at the same time, which neither
    ``ru_maxrss`` (one process) nor ``RUSAGE_CHILDREN`` (the largest child) tells. RSS counts pages shared
    between processes (the interpreter, shared libraries) once per process, so the sum is an upper bound.
    Per process, the kernel's high-water mark (VmHWM) is kept as well. The list of descendants is refreshed
    every ``rescan`` seconds (a /proc walk, ~1.5 ms) and on the first 5 samples; reading RSS is ~20 µs a process.
    Each rescan also records every process' own CPU seconds so far (``cpu_seen``, a lower bound, to cross-check
    the ``RUSAGE_CHILDREN`` figure).
    """

    def __init__(self, pid: int, interval: float = 0.02, rescan: float = 0.25) -> None:
        self.root = pid
        self.interval = interval
        self.rescan = rescan
        self.peak_sum_kib = 0
        self.hwm_kib: dict[int, int] = {}
        self.cpu_seen: dict[int, float] = {}  # last CPU seconds seen per process: a lower bound, a cross-check
        self.cmds: dict[int, str] = {}
        self.samples = 0
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_kib(self) -> int:
        """The peak of the tree's summed RSS: the largest sampled sum, or one process' own high-water mark if
        that is larger (a peak between two samples; the true peak of the sum is at least either)."""
        return max(self.peak_sum_kib, *self.hwm_kib.values(), 0)

    def sample(self, pids: list[int]) -> None:
        total = 0
        for pid in pids:
            st = _status_kib(pid)
            if st is None:
                continue
            total += st[0]
            if st[1] > self.hwm_kib.get(pid, -1):
                self.hwm_kib[pid] = st[1]
        self.samples += 1
        self.peak_sum_kib = max(self.peak_sum_kib, total)

    def _loop(self) -> None:
        t_cpu = time.thread_time()
        pids = [self.root]
        next_scan = 0.0
        scans = 0
        while True:
            now = time.monotonic()
            if now >= next_scan or scans < 5:
                pids = [self.root, *_children_of(self.root)]
                for pid in pids:
                    if pid not in self.cmds:
                        self.cmds[pid] = _cmd_of(pid)
                    cpu = _cpu_seconds(pid)
                    if cpu is not None:
                        self.cpu_seen[pid] = cpu
                next_scan = now + self.rescan
                scans += 1
            self.sample(pids)
            if self._stop.wait(self.interval):
                break
        self.cpu = time.thread_time() - t_cpu


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes on the machine have used since boot (/proc/stat, all but idle/iowait)."""
    try:
        vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(vals[:8]) - vals[3] - vals[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def machine_busy_pct(window: float = 2.0) -> float | None:
    """Share of all CPUs busy (any process) over the next ``window`` seconds, in %."""
    b0, t0 = _machine_busy_seconds(), time.monotonic()
    time.sleep(window)
    b1, t1 = _machine_busy_seconds(), time.monotonic()
    if b0 is None or b1 is None:
        return None
    return 100 * (b1 - b0) / ((t1 - t0) * (os.cpu_count() or 1))


def wait_quiet(args: argparse.Namespace, res: Results, label: str) -> None:
    """With --quiet-cpu: before a timed run, wait (up to --quiet-wait s) until the machine's CPUs were less
    than that busy over 2 s. Other sessions on a shared machine come and go; the 1-minute load average
    reacts too slowly to catch them. What was seen is kept in the JSON (meta.quietChecks)."""
    if args.quiet_cpu <= 0:
        return
    t0 = time.monotonic()
    busy = machine_busy_pct()
    while busy is not None and busy > args.quiet_cpu and time.monotonic() - t0 < args.quiet_wait:
        print(f"{label}: CPUs {busy:.0f} % busy, waiting for <= {args.quiet_cpu:.0f} % ...", file=sys.stderr)
        busy = machine_busy_pct()
    seen = None if busy is None else round(busy, 1)
    res.meta.setdefault("quietChecks", []).append(
        {"before": label, "busyPct": seen, "waited": round(time.monotonic() - t0, 1)}
    )


def _reap(pids: list[int], timeout: float = 10) -> list[str]:
    """Wait for descendants that were orphaned (re-parented to this subreaper); return what was left over."""
    left = []
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not (or no longer) our child: its parent waited for it
                break
            if done:
                break
            if time.monotonic() > deadline:
                left.append(str(pid))
                break
            time.sleep(0.005)
    return left


def run_measured(cmd: list[str], env: dict[str, str], timeout: float = 1800, sample: bool = True) -> Run:
    """Run ``cmd`` and measure its whole process tree.

    Wall time: start to the exit of ``cmd``'s own process. CPU time: the ``RUSAGE_CHILDREN`` delta of this
    process, which holds ``cmd`` and every descendant that was waited for (``cmd`` waits for its parse
    worker; orphans are re-parented here and waited for too, see ``SUBREAPER``); nothing else runs children
    of this process meanwhile. Peak RSS: ``TreeSampler`` (sum over the tree, sampled every 20 ms)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0 = _machine_busy_seconds()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        sampler = TreeSampler(p.pid).start() if sample else None
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        if sampler is not None:
            sampler.stop()
        p.returncode = os.waitstatus_to_exitcode(status)
        others = sorted(set(sampler.cmds) - {p.pid}) if sampler else []
        left = _reap(others) if SUBREAPER else []
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1 = _machine_busy_seconds()
        user, sys_ = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
        out.seek(0)
        err.seek(0)
        hwm = sampler.hwm_kib if sampler else {}
        main_hwm = hwm.get(p.pid, ru.ru_maxrss)
        other_cpu = None
        if busy0 is not None and busy1 is not None:
            other_cpu = max(0.0, (busy1 - busy0) - (user + sys_) - (sampler.cpu if sampler else 0.0))
        procs = [f"{pid}: {sampler.cmds[pid]}" for pid in sorted(sampler.cmds)] if sampler else []
        if left:
            procs.append(f"still running after the command exited: {', '.join(left)}")
        return Run(
            cmd,
            wall,
            user,
            sys_,
            _mb(max(sampler.peak_kib, ru.ru_maxrss)) if sampler else ru.ru_maxrss / 1024,
            p.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            main_rss_mb=_mb(main_hwm),
            other_rss_mb=_mb(max((v for k, v in hwm.items() if k != p.pid), default=0)),
            wait4_maxrss_mb=ru.ru_maxrss / 1024,
            procs=procs,
            samples=sampler.samples if sampler else 0,
            sampler_cpu=sampler.cpu if sampler else 0.0,
            other_cpu=other_cpu,
            sampled_cpu={str(k): round(v, 2) for k, v in sampler.cpu_seen.items()} if sampler else {},
        )


def clean_env(home: Path, corpus: Path, state: Path | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "CLAUDE_", "TOKENBRIDGE_", "OTEL_", "CODEX_", "OPENCLAW_"))
        # Bytecode cached as after `pip install` (a workspace may turn it off: +50 ms per start).
        and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(HOME=str(home), CLAUDE_CONFIG_DIR=str(corpus), NO_COLOR="1", TERM="dumb", LC_ALL="C.UTF-8")
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env["XDG_DATA_HOME"] = str(home / ".local" / "share")
    env["XDG_STATE_HOME"] = str(home / ".local" / "state")
    env["XDG_CACHE_HOME"] = str(home / ".cache")
    if state is not None:
        env["TOKENBRIDGE_STATE_DIR"] = str(state)
    return env


def warm_cache(corpus: Path) -> int:
    total = 0
    for p in sorted((corpus / "projects").rglob("*.jsonl")):
        with p.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                total += len(chunk)
    return total


def corpus_bytes(corpus: Path) -> int:
    return sum(p.stat().st_size for p in (corpus / "projects").rglob("*.jsonl"))


# ------------------------------------------------------------------------------------------ ccusage


def ensure_ccusage(version: str, cache: Path) -> Path:
    prefix = cache / f"ccusage-{version}"
    native = prefix / "node_modules" / "@ccusage" / "ccusage-linux-x64" / "bin" / "ccusage"
    if not native.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm not found: cannot install ccusage")
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"ccusage@{version}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if native.exists():
        native.chmod(0o755)
        return native
    wrapper = prefix / "node_modules" / ".bin" / "ccusage"
    if wrapper.exists():
        return wrapper
    raise RuntimeError(f"ccusage {version}: no linux-x64 binary under {prefix}")


def ccusage_cmd(binary: Path) -> list[str]:
    return [str(binary), "claude", "daily", "--json", "--offline", "--timezone", "UTC", "--breakdown"]


# ------------------------------------------------------------------------------------------ correctness


def truth_cells(truth: dict[str, Any], with_requests: bool = False) -> dict[tuple[str, str], dict[str, int]]:
    fields = [*FIELDS, "requests"] if with_requests else list(FIELDS)
    return {
        (d, m): {f: row[f] for f in fields} for d, day in truth["daily"].items() for m, row in day["models"].items()
    }


def truth_in_timezone(truth: dict[str, Any], tz: str) -> dict[str, Any] | None:
    """truth.json re-bucketed into local days of ``tz`` from its per-UTC-hour totals.

    None when the zone has an offset that is not a whole number of hours in the corpus' range."""
    zone = ZoneInfo(tz)
    fields = truth["hourlyFields"]
    daily: dict[str, Any] = {}
    totals = dict.fromkeys(fields, 0)
    for hour, row in truth["hourly"].items():
        local = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC).astimezone(zone)
        off = local.utcoffset()
        if off is None or off.total_seconds() % 3600:
            return None
        day = daily.setdefault(local.date().isoformat(), {"totals": dict.fromkeys(fields, 0), "models": {}})
        for model, values in row.items():
            cell = day["models"].setdefault(model, dict.fromkeys(fields, 0))
            for f, v in zip(fields, values, strict=True):
                cell[f] += v
                day["totals"][f] += v
                totals[f] += v
    return {"daily": dict(sorted(daily.items())), "totals": totals}


def _num(v: Any) -> int:
    if v is None:
        return 0
    return int(v)


def report_cells(doc: dict[str, Any]) -> tuple[dict[tuple[str, str], dict[str, int]], dict[str, dict[str, int]]]:
    """Per (day, model) cells and per-day totals from a tokenbridge or ccusage daily JSON document."""
    cells: dict[tuple[str, str], dict[str, int]] = {}
    days: dict[str, dict[str, int]] = {}
    for row in doc.get("daily", []):
        d = row.get("date") or row.get("day")
        days[d] = {f: _num(row.get(k)) for f, k in FIELDS.items()}
        if "requests" in row:
            days[d]["requests"] = _num(row["requests"])
        parts = row.get("breakdown") or row.get("modelBreakdowns") or []
        for part in parts:
            model = part.get("model") or part.get("modelName")
            cell = cells.setdefault((d, model), dict.fromkeys(FIELDS, 0))
            for f, k in FIELDS.items():
                cell[f] += _num(part.get(k))
            if "requests" in part:
                cell["requests"] = cell.get("requests", 0) + _num(part["requests"])
    return cells, days


def compare(doc: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    """Compare a daily JSON report with truth.json: token fields, and ``requests`` when the report has it."""
    cells, days = report_cells(doc)
    fields = list(FIELDS)
    if days and all("requests" in v for v in days.values()):
        fields.append("requests")
    want_cells = {k: {f: v[f] for f in fields} for k, v in truth_cells(truth, with_requests=True).items()}
    want_days = {d: {f: day["totals"][f] for f in fields} for d, day in truth["daily"].items()}
    zero = dict.fromkeys(fields, 0)
    days = {d: {f: v.get(f, 0) for f in fields} for d, v in days.items()}
    cells = {k: {f: v.get(f, 0) for f in fields} for k, v in cells.items()}
    got_tot = {f: sum(v[f] for v in days.values()) for f in fields}
    want_tot = {f: truth["totals"][f] for f in fields}
    day_bad = sorted(d for d in set(days) | set(want_days) if days.get(d, zero) != want_days.get(d, zero))
    cell_bad = []
    if cells:
        for key in sorted(set(cells) | set(want_cells), key=lambda k: (k[0], k[1] or "")):
            g = cells.get(key, zero)
            w = want_cells.get(key, zero)
            if g != w:
                cell_bad.append(
                    {"date": key[0], "model": key[1], "diff": {f: g[f] - w[f] for f in fields if g[f] != w[f]}}
                )
    return {
        "exact": got_tot == want_tot and not day_bad and not cell_bad,
        "totals": got_tot,
        "diff": {f: got_tot[f] - want_tot[f] for f in fields},
        "fields": fields,
        "daysCompared": len(want_days),
        "daysWrong": len(day_bad),
        "firstWrongDays": day_bad[:5],
        "modelCellsChecked": bool(cells),
        "modelCellsWrong": len(cell_bad),
        "firstWrongCells": cell_bad[:5],
    }


def cost_check(doc: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    """Old ``costUSD`` lines keep their reported cost (the only requests of the old models), and the unknown
    model's cost is unknown (null / unpriced), never a silent 0."""
    reported = Decimal(0)
    unknown_costs = set()
    unknown_unpriced = 0
    floats = False
    for row in doc.get("daily", []):
        for part in row.get("breakdown") or row.get("modelBreakdowns") or []:
            model = part.get("model") or part.get("modelName")
            cost = part.get("totalCost", part.get("cost"))
            if model in gen_history.OLD_MODELS and cost is not None:
                reported += Decimal(str(cost))
                floats = floats or isinstance(cost, float)
            if model == gen_history.UNKNOWN_MODEL:
                unknown_costs.add(None if cost is None else str(cost))
                unknown_unpriced += int(part.get("unpricedRequests") or 0)
    want = Decimal(truth["reportedCostUSD"])
    return {
        "reportedCost": str(reported),
        "truthReportedCost": str(want),
        # JSON numbers are binary floats (ccusage): equal within rounding counts as exact
        "reportedExact": reported == want or (floats and abs(reported - want) < Decimal("1e-6")),
        "floatCosts": floats,
        "unknownModelCosts": sorted(unknown_costs, key=str),
        "unknownModelUnpricedRequests": unknown_unpriced,
    }


def _cost(c: dict[str, Any] | None) -> str:
    if not c:
        return "pending"
    unknown = ", ".join("null" if v is None else v for v in c["unknownModelCosts"]) or "absent"
    return (
        f"{'exact' if c['reportedExact'] else 'WRONG'}{' (float)' if c.get('floatCosts') else ''}: "
        f"{c['reportedCost']} (truth {c['truthReportedCost']}); "
        f"{gen_history.UNKNOWN_MODEL}: cost {unknown}, {c['unknownModelUnpricedRequests']} unpriced requests"
    )


def fmt_compare(c: dict[str, Any] | None) -> str:
    if c is None:
        return "not run"
    if c["exact"]:
        extra = "" if c["modelCellsChecked"] else ", per-day only: no per-model breakdown in JSON"
        what = "tokens and request counts" if "requests" in c["fields"] else "tokens"
        return f"exact ({what}, {c['daysCompared']} days x model{extra})"
    diffs = ", ".join(f"{k} {v:+,}" for k, v in c["diff"].items() if v)
    return (
        f"WRONG: totals {diffs or 'equal'}; {c['daysWrong']} days wrong; {c['modelCellsWrong']} day/model cells wrong"
    )


# ------------------------------------------------------------------------------------------ tokenbridge


def tokenbridge_cmd(explicit: str | None) -> list[str] | None:
    if explicit:
        return explicit.split()
    beside = Path(sys.executable).parent / "tokenbridge"  # avoid pyenv shims (they add ~100 ms)
    if beside.exists():
        return [str(beside)]
    found = shutil.which("tokenbridge")
    return [found] if found else None


_TIME_RE = re.compile(r"(?P<v>\d+(?:\.\d+)?)\s*(?P<u>ms|s)\b")


def in_process_time(text: str) -> float | None:
    """Seconds of an ingest/scan duration printed by the CLI, if any (e.g. 'ingested ... in 12.3 ms')."""
    for line in text.splitlines():
        low = line.lower()
        if any(w in low for w in ("ingest", "scan", "sync", "took", "elapsed", " in ")):
            found = list(_TIME_RE.finditer(line))
            if found:
                v = float(found[-1].group("v"))
                return v / 1000 if found[-1].group("u") == "ms" else v
    return None


def report_json(tb: list[str], env: dict[str, str], tz: str = "UTC") -> tuple[dict[str, Any] | None, Run]:
    r = run_measured([*tb, "report", "daily", "--json", "--timezone", tz], env, timeout=600)
    if r.rc != 0:
        return None, r
    try:
        return json.loads(r.stdout), r
    except ValueError:
        return None, r


def totals_of(doc: dict[str, Any]) -> dict[str, int]:
    _, days = report_cells(doc)
    return {f: sum(v[f] for v in days.values()) for f in FIELDS}


# ------------------------------------------------------------------------------------------ results


@dataclass
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    cc: dict[str, Any] = field(default_factory=dict)
    tb: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _size(n: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / 1e6 / seconds if seconds > 0 else float("nan")


def tree_figures(runs: list[Run]) -> dict[str, Any]:
    """Memory and CPU figures of repeated runs of one command (peaks: the largest over the runs)."""
    biggest = max(runs, key=lambda r: r.maxrss_mb)
    ncpu = os.cpu_count() or 1
    others = [r.other_cpu / (r.wall * ncpu) for r in runs if r.other_cpu is not None and r.wall > 0]
    return {
        "rssMB": biggest.maxrss_mb,
        "rssMainMB": max(r.main_rss_mb for r in runs),
        "rssOtherMB": max(r.other_rss_mb for r in runs),
        "wait4MaxrssMB": max(r.wait4_maxrss_mb for r in runs),
        "procs": biggest.procs,
        "rssSamples": biggest.samples,
        "samplerCpuPct": 100 * max(r.sampler_cpu / r.wall for r in runs if r.wall > 0),
        "otherLoadPct": 100 * max(others) if others else None,
        "runs": [
            {
                "wall": r.wall,
                "cpu": r.cpu,
                "treeRssMB": r.maxrss_mb,
                "mainRssMB": r.main_rss_mb,
                "otherRssMB": r.other_rss_mb,
                "otherCpu": r.other_cpu,
                "sampledCpuPerProcess": r.sampled_cpu,
            }
            for r in runs
        ],
    }


def measure_ccusage(args: argparse.Namespace, res: Results, corpus: Path, home: Path, truth: dict[str, Any]) -> None:
    binary = ensure_ccusage(args.ccusage_version, args.cache_dir)
    env = clean_env(home, corpus)
    res.meta["ccusageCommand"] = " ".join(["ccusage", *ccusage_cmd(binary)[1:]])
    runs = []
    for i in range(args.repeat):
        wait_quiet(args, res, f"ccusage cold run {i + 1}")
        r = run_measured(ccusage_cmd(binary), env)
        if r.rc != 0:
            res.notes.append(f"ccusage exited {r.rc}: {r.stderr.strip()[:300]}")
            return
        runs.append(r)
    walls = [r.wall for r in runs]
    nbytes = res.meta["corpusBytes"]
    res.cc.update(
        version=args.ccusage_version,
        wall=statistics.median(walls),
        wallBest=min(walls),
        cpu=statistics.median(r.cpu for r in runs),
        mbps=mbps(nbytes, statistics.median(walls)),
        mbpsBest=mbps(nbytes, min(walls)),
        **tree_figures(runs),
        correctness=compare(json.loads(runs[-1].stdout), truth),
        cost=cost_check(json.loads(runs[-1].stdout), truth),
    )
    res.cc["timezones"] = {}
    for tz in args.timezones:
        want = truth_in_timezone(truth, tz)
        if want is None:
            continue
        cmd = ccusage_cmd(binary)
        cmd[cmd.index("UTC")] = tz
        r = run_measured(cmd, env)
        res.cc["timezones"][tz] = compare(json.loads(r.stdout), want) if r.rc == 0 else None


REPORT_KINDS = ("daily", "monthly", "session", "models")


def measure_reports(args: argparse.Namespace, res: Results, tb: list[str], env: dict[str, str]) -> None:
    """Process wall time of `tokenbridge report KIND --json` on the cold-scanned ledger (median of 3)."""
    wait_quiet(args, res, "reports")
    out: dict[str, Any] = {}
    for kind in REPORT_KINDS:
        runs = [run_measured([*tb, "report", kind, "--json", "--timezone", "UTC"], env, timeout=600) for _ in range(3)]
        ok = all(r.rc == 0 for r in runs)
        out[kind] = statistics.median(r.wall for r in runs) if ok else None
        if not ok:
            res.notes.append(f"tokenbridge report {kind} --json failed: {(runs[-1].stderr or runs[-1].stdout)[-300:]}")
    res.tb["reportLatency"] = out


def measure_tokenbridge(
    args: argparse.Namespace,
    res: Results,
    corpus: Path,
    home: Path,
    work: Path,
    truth: dict[str, Any],
    full: bool = True,
) -> None:
    """Everything about tokenbridge on ``corpus``; ``full=False`` (the scaling runs): cold scans,
    reports and correctness only."""
    tb = tokenbridge_cmd(args.tokenbridge)
    if tb is None:
        res.notes.append("tokenbridge CLI not found: its figures are pending")
        return
    nbytes = res.meta["corpusBytes"]
    code = subprocess.run(
        [sys.executable, "-c", "import bridge; print(bridge.__file__)"],
        env=clean_env(home, corpus),
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    res.meta["tokenbridgeCode"] = code
    if code and not Path(code).resolve().is_relative_to(ROOT):
        res.notes.append(f"the tokenbridge measured is {code}, not this checkout ({ROOT}): set PYTHONPATH={ROOT}")
    ver = run_measured([*tb, "--version"], clean_env(home, corpus))
    res.meta["tokenbridgeVersion"] = (
        (ver.stdout.strip() or ver.stderr.strip()).splitlines()[-1:] if ver.rc == 0 else None
    )
    # (a)(b) cold scans, each with a fresh state dir
    runs = []
    state = work / "state-0"
    for i in range(args.repeat):
        state = work / f"state-{i}"
        shutil.rmtree(state, ignore_errors=True)
        wait_quiet(args, res, f"tokenbridge cold run {i + 1}")
        r = run_measured([*tb, "sync", "--no-export"], clean_env(home, corpus, state))
        if r.rc != 0:
            res.notes.append(f"tokenbridge sync exited {r.rc}: {(r.stderr or r.stdout).strip()[-600:]}")
            return
        runs.append(r)
    walls = [r.wall for r in runs]
    res.tb.update(
        wall=statistics.median(walls),
        wallBest=min(walls),
        cpu=statistics.median(r.cpu for r in runs),
        mbps=mbps(nbytes, statistics.median(walls)),
        mbpsBest=mbps(nbytes, min(walls)),
        **tree_figures(runs),
        coldInProcess=in_process_time(runs[-1].stdout + "\n" + runs[-1].stderr),
        coldOutput=(runs[-1].stdout + runs[-1].stderr)[-1500:],
    )
    env = clean_env(home, corpus, state)
    doc, rr = report_json(tb, env)
    if doc is None:
        res.notes.append(f"tokenbridge report daily --json failed ({rr.rc}): {(rr.stderr or rr.stdout)[-400:]}")
    else:
        res.tb["correctness"] = compare(doc, truth)
        res.tb["cost"] = cost_check(doc, truth)
        res.tb["reportWall"] = rr.wall
        res.tb["reportSample"] = json.dumps(doc)[:1200]
    res.tb["timezones"] = {}
    for tz in args.timezones:
        want = truth_in_timezone(truth, tz)
        if want is None:
            res.notes.append(f"{tz}: offset not a whole hour, not compared")
            continue
        doc, _ = report_json(tb, env, tz)
        res.tb["timezones"][tz] = compare(doc, want) if doc is not None else None
    # `tokenbridge sources --json`: skipped (malformed) lines and request count against the truth
    sr = run_measured([*tb, "sources", "--json"], env, timeout=600)
    try:
        src = next(x for x in json.loads(sr.stdout)["sources"] if x["name"] == "claude_transcripts")
        res.tb["sources"] = {
            "skippedLines": src.get("skippedLines"),
            "truthMalformed": truth["malformedLines"],
            "files": src.get("files"),
            "truthFiles": truth["files"],
            "requests": src.get("requests"),
            "truthRequests": truth["totals"]["requests"],
            "unknownModels": src.get("unknownModels"),
        }
    except (ValueError, KeyError, StopIteration) as exc:
        res.notes.append(f"tokenbridge sources --json unreadable ({sr.rc}): {exc}; {(sr.stderr or sr.stdout)[-300:]}")
    measure_reports(args, res, tb, env)
    if not full:
        return
    # no-change sync (startup + stat of every file)
    wait_quiet(args, res, "syncs with nothing new")
    nochange = [run_measured([*tb, "sync", "--no-export"], env) for _ in range(3)]
    res.tb["noChangeWall"] = statistics.median(r.wall for r in nochange)
    res.tb["noChangeRssMB"] = max(r.maxrss_mb for r in nochange)
    res.tb["noChangeInProcess"] = in_process_time(nochange[-1].stdout + "\n" + nochange[-1].stderr)
    # (c) incremental sync after appending N lines, --incr-repeat times (each append, then one sync)
    incr: list[Run] = []
    infos = []
    for i in range(args.incr_repeat):
        infos.append(gen_history.append_lines(corpus, args.append_lines, None, None))
        wait_quiet(args, res, f"incremental sync {i + 1}")
        r = run_measured([*tb, "sync", "--no-export"], env)
        incr.append(r)
        if r.rc != 0:
            res.notes.append(f"incremental sync exited {r.rc}: {(r.stderr or r.stdout)[-400:]}")
    truth2 = json.loads((corpus / "truth.json").read_text())
    in_proc = [t for t in (in_process_time(r.stdout + "\n" + r.stderr) for r in incr) if t is not None]
    res.tb["appendBytes"] = statistics.mean(x["bytes"] for x in infos)
    res.tb["appendRequests"] = [x["requests"] for x in infos]
    res.tb["incrRepeat"] = len(incr)
    res.tb["incrWall"] = statistics.median(r.wall for r in incr)
    res.tb["incrWallMax"] = max(r.wall for r in incr)
    res.tb["incrWalls"] = [r.wall for r in incr]
    res.tb["incrRssMB"] = max(r.maxrss_mb for r in incr)
    res.tb["incrProcs"] = incr[-1].procs
    res.tb["incrCpu"] = statistics.median(r.cpu for r in incr)
    res.tb["incrInProcess"] = statistics.median(in_proc) if in_proc else None
    res.tb["incrInProcessAll"] = in_proc
    res.tb["incrOutput"] = (incr[-1].stdout + incr[-1].stderr)[-800:]
    doc, _ = report_json(tb, env)
    if doc is not None:
        res.tb["correctnessAfterAppend"] = compare(doc, truth2)
    if not args.skip_daemon:
        measure_daemon(args, res, tb, env, corpus)


def partial_line_check(
    args: argparse.Namespace, res: Results, tb: list[str], env: dict[str, str], corpus: Path
) -> None:
    """A line written in two parts while `tokenbridge run` watches: nothing may count twice or be lost,
    and the half line must not be counted as malformed."""
    before = json.loads((corpus / "truth.json").read_text())
    sink = io.BytesIO()
    gen_history.append_lines(corpus, 50, None, None, sink=sink)
    after = json.loads((corpus / "truth.json").read_text())
    data = sink.getvalue()
    # cut inside the last assistant line (the final line of the last request: it carries the final usage)
    start = data.rfind(b"\n", 0, data.rfind(b'"type":"assistant"')) + 1
    end = data.index(b"\n", start)
    cut = (start + end) // 2
    target = corpus / before["appendTarget"]
    probe = LedgerProbe.find(Path(env["TOKENBRIDGE_STATE_DIR"]))
    with target.open("ab") as fh:
        fh.write(data[:cut])
    time.sleep(args.partial_wait)
    mid = probe.totals() if probe else None
    with target.open("ab") as fh:
        fh.write(data[cut:])
    t0 = time.perf_counter()
    want = {f: after["totals"][f] for f in FIELDS}
    done = None
    while probe and time.perf_counter() - t0 < args.daemon_timeout:
        if probe.totals() == want:
            done = time.perf_counter() - t0
            break
        time.sleep(0.005)
    if probe:
        probe.close()
    doc, _ = report_json(tb, env)
    sr = run_measured([*tb, "sources", "--json"], env, timeout=600)
    skipped = None
    with contextlib.suppress(ValueError, KeyError, StopIteration):
        skipped = next(x for x in json.loads(sr.stdout)["sources"] if x["name"] == "claude_transcripts")["skippedLines"]
    old = {f: before["totals"][f] for f in FIELDS}
    res.tb["partialLine"] = {
        "midTotalsWithinBounds": None if mid is None else all(old[f] <= mid[f] <= want[f] for f in FIELDS),
        "midTotalsBelowFinal": None if mid is None else mid != want,
        "completedAfterMs": None if done is None else done * 1000,
        "reportExact": None if doc is None else compare(doc, after)["exact"],
        "skippedLines": skipped,
        "truthMalformed": after["malformedLines"],
    }


def _partial(p: dict[str, Any] | None, skipped: bool = False) -> str:
    if not p:
        return "not measured" if skipped else "pending"
    ok = p["reportExact"] and p["midTotalsWithinBounds"] is not False and p["skippedLines"] == p["truthMalformed"]
    after_ms = _f(p["completedAfterMs"], pending="never")
    return (
        f"{'ok' if ok else 'WRONG'}: totals exact after completion: {p['reportExact']}; partial state within "
        f"bounds: {p['midTotalsWithinBounds']} (below final: {p.get('midTotalsBelowFinal')}); picked up {after_ms} "
        f"ms after the rest of the line; skipped lines {p['skippedLines']} (truth {p['truthMalformed']})"
    )


class LedgerProbe:
    """Read-only view of tokenbridge's SQLite ledger (internal schema: ``usage`` table), for fine-grained timing."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)

    @classmethod
    def find(cls, state: Path) -> LedgerProbe | None:
        for path in sorted(state.glob("*")):
            with contextlib.suppress(OSError):
                if path.is_file() and path.open("rb").read(16) == b"SQLite format 3\x00":
                    try:
                        probe = cls(path)
                        probe.totals()
                    except sqlite3.Error:
                        continue
                    return probe
        return None

    def totals(self) -> dict[str, int]:
        row = self.db.execute(
            "SELECT SUM(input), SUM(output), SUM(cache_read), SUM(cache_creation) FROM usage"
        ).fetchone()
        return {f: int(v or 0) for f, v in zip(FIELDS, row, strict=True)}

    def close(self) -> None:
        self.db.close()


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (from /proc, no psutil needed)."""
    if psutil is None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        return sum(int(x) for x in fields[11:15]) / tck
    p = psutil.Process(pid)
    total = sum(p.cpu_times()[:4])
    for c in p.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(c.cpu_times()[:2])
    return float(total)


def measure_daemon(args: argparse.Namespace, res: Results, tb: list[str], env: dict[str, str], corpus: Path) -> None:
    log = tempfile.NamedTemporaryFile(prefix="tb-run-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [*tb, "run", *args.run_args.split()]
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    sampler = TreeSampler(p.pid, interval=0.02, rescan=0.5).start()
    res.meta["daemonCommand"] = " ".join(["tokenbridge", *cmd[len(tb) :]])
    try:
        time.sleep(args.settle)
        if p.poll() is not None:
            res.notes.append(f"tokenbridge run exited early ({p.returncode}): {Path(log.name).read_text()[-600:]}")
            return
        # (d) idle CPU
        if args.idle_seconds > 0:
            c0, t0 = _proc_cpu(p.pid), time.monotonic()
            time.sleep(args.idle_seconds)
            c1, t1 = _proc_cpu(p.pid), time.monotonic()
            res.tb["idleCpuPct"] = 100 * (c1 - c0) / (t1 - t0)
            res.tb["idleSeconds"] = round(t1 - t0, 1)
        # (c') daemon latency: append, then watch the ledger (read-only) until it holds the new totals;
        # then confirm with `report daily --json`. Falls back to polling the report when the ledger's
        # internal schema is not the one known here.
        # Repeated (--incr-repeat): each append waits for the previous one to be in the ledger.
        probe = LedgerProbe.find(Path(env["TOKENBRIDGE_STATE_DIR"]))
        latencies: list[float] = []
        t_append = time.perf_counter()
        for i in range(args.incr_repeat if probe is not None else 1):  # without the probe: report bounds, once
            wait_quiet(args, res, f"daemon append {i + 1}")
            gen_history.append_lines(corpus, args.append_lines, None, None)
            t_append = time.perf_counter()
            want = {f: json.loads((corpus / "truth.json").read_text())["totals"][f] for f in FIELDS}
            deadline = t_append + args.daemon_timeout
            while probe is not None and time.perf_counter() < deadline:
                if probe.totals() == want:
                    latencies.append(time.perf_counter() - t_append)
                    break
                time.sleep(0.005)
        if probe is not None:
            probe.close()
        if latencies and len(latencies) == args.incr_repeat:
            res.tb["daemonLatency"] = statistics.median(latencies)
            res.tb["daemonLatencyMax"] = max(latencies)
            res.tb["daemonLatencies"] = latencies
        prev_start = t_append
        polls = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            doc, _ = report_json(tb, env)
            end = time.perf_counter()
            polls += 1
            if doc is not None and totals_of(doc) == want:
                res.tb["daemonLatencyLow"] = max(0.0, prev_start - t_append)
                res.tb["daemonLatencyHigh"] = end - t_append
                res.tb["daemonPolls"] = polls
                res.tb["daemonPollWall"] = end - start
                break
            prev_start = start
        else:
            res.notes.append(f"daemon did not show the new totals within {args.daemon_timeout}s")
        partial_line_check(args, res, tb, env, corpus)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=30)
            res.tb["daemonExit"] = rc
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            res.notes.append("tokenbridge run did not exit within 30 s of SIGTERM")
        sampler.stop()
        if SUBREAPER:
            _reap(sorted(set(sampler.cmds) - {p.pid}))
        res.tb["daemonRssMB"] = _mb(sampler.peak_kib)
        res.tb["daemonProcs"] = [f"{pid}: {c}" for pid, c in sorted(sampler.cmds.items())]
        res.tb["daemonLogTail"] = Path(log.name).read_text(errors="replace")[-1500:]
        Path(log.name).unlink()


# ------------------------------------------------------------------------------------------ output


def _f(v: Any, fmt: str = "{:.0f}", pending: str = "pending") -> str:
    if v is None:
        return pending
    return fmt.format(v)


def machine_info() -> dict[str, Any]:
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "bridge", "pyproject.toml"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if dirty:
        commit += " + uncommitted changes"
    return {
        "nproc": os.cpu_count(),
        "ramGiB": round(mem / 2**30, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": commit,
    }


def _gen(v: Any) -> str:
    return f"generated in {v} s" if isinstance(v, int | float) else "corpus generated earlier"


def _sources(s: dict[str, Any] | None) -> str:
    if not s:
        return "pending"
    return (
        f"{s['skippedLines']} ({s['truthMalformed']}) / {s['files']} ({s['truthFiles']}) / "
        f"{s['requests']} ({s['truthRequests']}); unknown models: {', '.join(s['unknownModels'] or []) or 'none'}"
    )


def _quiet(m: dict[str, Any]) -> str:
    checks = [c for c in m.get("quietChecks") or [] if c.get("busyPct") is not None]
    if not checks:
        return ""
    worst = max(c["busyPct"] for c in checks)
    waited = sum(c["waited"] for c in checks)
    return (
        f" Before each of the {len(checks)} timed runs the script waited for the CPUs to be at most "
        f"{m.get('quietCpu', 0):.0f} % busy over 2 s (`--quiet-cpu`): busiest seen {worst:.0f} %, "
        f"{waited:.0f} s of waiting in all."
    )


def _roles(procs: list[str] | None, pending: str = "pending") -> str:
    """Short names of the processes seen in a measured tree (from 'PID: command' strings)."""
    if not procs:
        return pending
    names = []
    for i, entry in enumerate(p for p in procs if ": " in p):
        cmd = entry.split(": ", 1)[1]
        if i == 0:
            names.append("main")
        elif "import pickle,struct,sys" in cmd:  # bridge/sources/_parallel.py's child
            names.append("parse worker")
        elif "spawn_main" in cmd:
            names.append("parse worker (spawn)")
        elif "resource_tracker" in cmd:
            names.append("multiprocessing resource tracker")
        else:
            names.append(cmd.split()[0] if cmd.split() else "?")
    return f"{len(names)}: " + " + ".join(names)


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000


def _per_cpu(nbytes: int, cpu: float | None) -> float | None:
    return None if not cpu else nbytes / 1e6 / cpu


def _latencies(lat: dict[str, Any] | None) -> str:
    if not lat:
        return "pending"
    return " / ".join(_f(_ms(lat.get(k)), pending="failed") for k in REPORT_KINDS)


def scale_row(res: Results) -> dict[str, Any]:
    """One point of the size curve: what a corpus' cold scans, reports and checks gave."""
    m, cc, tb = res.meta, res.cc, res.tb
    nb = m["corpusBytes"]
    return {
        "corpusBytes": nb,
        "files": m["files"],
        "genCommand": m["genCommand"],
        "tbWall": tb.get("wall"),
        "tbMBps": tb.get("mbps"),
        "tbCpuPerGB": tb["cpu"] / (nb / 1e9) if tb.get("cpu") else None,
        "tbRssMB": tb.get("rssMB"),
        "tbRssMainMB": tb.get("rssMainMB"),
        "tbRssOtherMB": tb.get("rssOtherMB"),
        "otherLoadPct": tb.get("otherLoadPct"),
        "ccWall": cc.get("wall"),
        "ccRssMB": cc.get("rssMB"),
        "ccCpuPerGB": cc["cpu"] / (nb / 1e9) if cc.get("cpu") else None,
        "reportLatency": tb.get("reportLatency"),
        "exact": bool(tb.get("correctness", {}).get("exact")),
        "ccExact": bool(cc.get("correctness", {}).get("exact")),
        "sources": tb.get("sources"),
        "repeat": m.get("repeat"),
    }


def curve_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"From the same run as the table above ({meta['date']}, commit `{meta['machine']['commit']}`); the first row "
        "is that table's corpus. Cold scans: median of the runs shown (xN); peak RSS: the largest over them.",
        "",
        "| Corpus | Files | tokenbridge cold scan, s (median) | MB/s | CPU-s per GB | Peak RSS of the tree, MB "
        "(main; worker) | ccusage, s | ccusage peak RSS, MB | Wall ratio tokenbridge / ccusage | Reports daily / "
        "monthly / session / models, ms | Totals vs truth (tokenbridge; ccusage) | Other load, % of CPUs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["tbWall"] / r["ccWall"] if r.get("tbWall") and r.get("ccWall") else None
        src = r.get("sources") or {}
        counts = src.get("skippedLines") == src.get("truthMalformed") and src.get("requests") == src.get(
            "truthRequests"
        )
        lines.append(
            f"| {r['corpusBytes'] / 1e9:.1f} GB | {r['files']:,} | {_f(r.get('tbWall'), '{:.2f}')} "
            f"(x{r.get('repeat')}) | {_f(r.get('tbMBps'))} | {_f(r.get('tbCpuPerGB'), '{:.2f}')} | "
            f"{_f(r.get('tbRssMB'))} ({_f(r.get('tbRssMainMB'))}; {_f(r.get('tbRssOtherMB'))}) | "
            f"{_f(r.get('ccWall'), '{:.2f}', 'not run')} | {_f(r.get('ccRssMB'), pending='not run')} | "
            f"{_f(ratio, '{:.2f}')} | {_latencies(r.get('reportLatency'))} | "
            f"{'exact' if r['exact'] and counts else 'NOT exact'}; {'exact' if r['ccExact'] else 'not exact'} | "
            f"{_f(r.get('otherLoadPct'), '{:.0f}')} |"
        )
    lines += ["", "Corpora: " + "; ".join(f"`{r['genCommand']}`" for r in rows) + "."]
    return "\n".join(lines)


def markdown(res: Results) -> str:
    m, cc, tb = res.meta, res.cc, res.tb
    ratio = tb["mbps"] / cc["mbps"] if tb.get("mbps") and cc.get("mbps") else None
    cpu_ratio = (cc["cpu"] / tb["cpu"]) if tb.get("cpu") and cc.get("cpu") else None
    nb = m["corpusBytes"]
    mach = m["machine"]
    ccn = "not run"
    incr_ip = _f(_ms(tb.get("incrInProcess")), pending="not printed" if tb.get("incrWall") else "pending")
    n_incr = tb.get("incrRepeat", 1)
    if tb.get("daemonLatency") is not None:
        daemon = f"{tb['daemonLatency'] * 1000:.0f}"
        if tb.get("daemonLatencyMax") is not None:
            daemon += f" (max {tb['daemonLatencyMax'] * 1000:.0f})"
        daemon += " (ledger polled every 5 ms; report confirmed)"
        if tb.get("daemonLatencyHigh") is None:
            daemon = f"{tb['daemonLatency'] * 1000:.0f} (ledger) but `report` never showed the new totals"
    elif tb.get("daemonLatencyHigh") is not None:
        daemon = (
            f"{tb['daemonLatencyLow'] * 1000:.0f} - {tb['daemonLatencyHigh'] * 1000:.0f} "
            f"(bounds; one report poll = {tb['daemonPollWall'] * 1000:.0f} ms)"
        )
    elif m.get("skipDaemon"):
        daemon = "not measured (--skip-daemon)"
    else:
        daemon = "pending"
    lines = [
        f"Run {m['date']} on {mach['nproc']} CPUs ({mach['cpu']}), {mach['ramGiB']} GiB RAM, "
        f"Python {mach['python']}, Linux {mach['kernel']}, tokenbridge commit `{mach['commit']}`.",
        "",
        f"Corpus: `{m['genCommand']}` — {nb / 1e6:,.0f} MB in {m['files']:,} files, "
        f"{m['truthRequests']:,} unique requests, {m['malformed']} malformed lines "
        f"({_gen(m['genSeconds'])}).",
        "",
        f"Command: `{m['command']}`. Load average (1/5/15 min) before the runs: {m['loadBefore']}, "
        f"after: {m.get('loadAfter', '?')}.{_quiet(m)}",
        "",
        f"| Measure | tokenbridge | ccusage {cc.get('version', m.get('ccusageVersion', ''))} | Target |",
        "|---|---|---|---|",
        f"| Cold scan throughput, MB/s (median of {m['repeat']}; best) | {_f(tb.get('mbps'))} "
        f"({_f(tb.get('mbpsBest'))}) | {_f(cc.get('mbps'), pending=ccn)} ({_f(cc.get('mbpsBest'), pending='-')}) "
        "| >= 250 (stretch: >= ccusage) |",
        f"| Cold scan wall time, s (median) | {_f(tb.get('wall'), '{:.2f}')} | {_f(cc.get('wall'), '{:.2f}', ccn)} | |",
        f"| Cold scan CPU time user+sys of the whole process tree, s (median) | {_f(tb.get('cpu'), '{:.2f}')} | "
        f"{_f(cc.get('cpu'), '{:.2f}', ccn)} | |",
        f"| Corpus MB per CPU-second (independent of machine load) | {_f(_per_cpu(nb, tb.get('cpu')))} | "
        f"{_f(_per_cpu(nb, cc.get('cpu')), pending=ccn)} | |",
        f"| tokenbridge vs ccusage: wall throughput ratio; CPU-time ratio | {_f(ratio, '{:.2f}x')}; "
        f"{_f(cpu_ratio, '{:.2f}x')} | 1x | >= 1x |",
        f"| Cold scan wall time / ccusage's (median walls; issue #11: <= 1.0, stretch 0.8) | "
        f"{_f(tb['wall'] / cc['wall'] if tb.get('wall') and cc.get('wall') else None, '{:.2f}')} | 1 | <= 1.0 |",
        f"| CPU-seconds per GB of corpus (whole process tree, median) | "
        f"{_f(tb['cpu'] / (nb / 1e9) if tb.get('cpu') else None, '{:.2f}')} | "
        f"{_f(cc['cpu'] / (nb / 1e9) if cc.get('cpu') else None, '{:.2f}', ccn)} | |",
        "| Peak RSS of the cold scan, MB: sum over the process tree, sampled every 20 ms (max of the runs) | "
        f"{_f(tb.get('rssMB'))} | {_f(cc.get('rssMB'), pending=ccn)} | < 150 |",
        "| Peak RSS per process (kernel high-water mark), MB: main process; largest other process | "
        f"{_f(tb.get('rssMainMB'))}; {_f(tb.get('rssOtherMB'), pending='-')} | "
        f"{_f(cc.get('rssMainMB'), pending=ccn)}; {_f(cc.get('rssOtherMB') or None, pending='-')} | |",
        f"| Processes in the cold-scan tree | {_roles(tb.get('procs'))} | {_roles(cc.get('procs'), ccn)} | |",
        "| Load from other processes during the cold scans, % of the machine's CPUs (worst run) | "
        f"{_f(tb.get('otherLoadPct'), '{:.0f} %')} | {_f(cc.get('otherLoadPct'), '{:.0f} %', ccn)} | |",
        f"| Incremental sync after +{m['appendLines']:,} lines ({_f(tb.get('appendBytes'), '{:,.0f}', '?')} bytes"
        f"{' on average' if n_incr > 1 else ''}): process wall, ms (median of {n_incr}; max) | "
        f"{_f(_ms(tb.get('incrWall')))} ({_f(_ms(tb.get('incrWallMax')), pending='-')}) | n/a | < 200 |",
        f"| Incremental sync: ingest time printed by the CLI, ms (median) | {incr_ip} | n/a | < 200 |",
        f"| Sync with nothing new: process wall, ms (median of 3) | {_f(_ms(tb.get('noChangeWall')))} | n/a | |",
        "| `tokenbridge report daily / monthly / session / models --json` on the cold-scanned ledger: process "
        f"wall, ms (median of 3 each) | {_latencies(tb.get('reportLatency'))} | n/a | < 150 |",
        "| Peak RSS (process tree), MB: incremental sync; sync with nothing new; `tokenbridge run` during the "
        f"daemon tests | {_f(tb.get('incrRssMB'))}; {_f(tb.get('noChangeRssMB'))}; "
        f"{_f(tb.get('daemonRssMB'), pending='not measured' if m.get('skipDaemon') else 'pending')} | n/a | < 150 |",
        f"| Daemon (`{m.get('daemonCommand', 'tokenbridge run')}`): append of {m['appendLines']:,} lines -> "
        f"the ledger holds the new totals, ms (median of {n_incr}; max) | {daemon} | n/a | < 200 |",
        f"| Daemon: a line written in two parts ({m.get('partialWait', 2)} s apart) | "
        f"{_partial(tb.get('partialLine'), bool(m.get('skipDaemon')))} | n/a | ok |",
        f"| Idle CPU of `tokenbridge run` over {tb.get('idleSeconds', 30)} s, % of one core | "
        f"{_f(tb.get('idleCpuPct'), '{:.2f}', 'not measured' if m.get('skipDaemon') else 'pending')} | n/a | ~0 |",
        f"| Daily totals vs truth.json after the cold scan | {fmt_compare(tb.get('correctness')) if tb else 'pending'} "
        f"| {fmt_compare(cc.get('correctness'))} | exact |",
        *(
            f"| Daily totals vs truth.json in {tz} (`--timezone {tz}`) | "
            f"{fmt_compare((tb.get('timezones') or {}).get(tz))} | {fmt_compare((cc.get('timezones') or {}).get(tz))} "
            "| exact |"
            for tz in sorted(set(tb.get("timezones") or {}) | set(cc.get("timezones") or {}))
        ),
        f"| Cost of the old `costUSD` lines kept as reported; unknown model's cost | {_cost(tb.get('cost'))} | "
        f"{_cost(cc.get('cost'))} | exact; not 0 |",
        f"| `tokenbridge sources --json` after the cold scan: skipped lines / files / requests (truth) | "
        f"{_sources(tb.get('sources'))} | n/a | equal |",
        f"| Daily totals vs truth.json after the incremental sync | "
        f"{fmt_compare(tb.get('correctnessAfterAppend')) if tb else 'pending'} | n/a | exact |",
    ]
    if res.notes:
        lines += ["", "Notes:", *[f"- {n}" for n in res.notes]]
    for name, c in (
        ("tokenbridge", tb.get("correctness")),
        ("tokenbridge after append", tb.get("correctnessAfterAppend")),
        ("ccusage", cc.get("correctness")),
    ):
        if c and not c["exact"]:
            lines += [
                "",
                f"{name} differences from truth (got - truth): totals {c['diff']}; first wrong days "
                f"{c['firstWrongDays']}; first wrong cells {c['firstWrongCells'][:3]}",
            ]
    return "\n".join(lines)


def write_doc(path: Path, text: str, section: str = "results") -> None:
    """Replace the text between ``<!-- bench:SECTION:start -->`` and ``<!-- bench:SECTION:end -->``."""
    start, end = f"<!-- bench:{section}:start -->", f"<!-- bench:{section}:end -->"
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if start not in doc:
        doc += f"\n{start}\n{end}\n"
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}", encoding="utf-8")


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GB", help="corpus size (default 1GB)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--start", default="2026-01-01")
    ap.add_argument("--corpus", type=Path, help="use this generated corpus (must hold truth.json)")
    ap.add_argument("--keep", action="store_true", help="keep the corpus under --cache-dir and reuse it next time")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tokenbridge-bench",
    )
    ap.add_argument("--repeat", type=int, default=3, help="cold-scan repetitions per tool (median reported)")
    ap.add_argument("--append-lines", type=int, default=1000)
    ap.add_argument(
        "--incr-repeat", type=int, default=3, help="appends (and incremental syncs / daemon pick-ups) measured"
    )
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--settle", type=float, default=5, help="seconds to let `tokenbridge run` start before measuring")
    ap.add_argument("--daemon-timeout", type=float, default=60)
    ap.add_argument("--partial-wait", type=float, default=2, help="seconds a half-written line is left alone")
    ap.add_argument("--run-args", default="--no-otlp --no-progress", help="arguments for `tokenbridge run`")
    ap.add_argument(
        "--timezones",
        type=lambda v: [z for z in v.split(",") if z],
        default=["America/Los_Angeles", "Asia/Tokyo"],
        help="also compare `report daily --timezone TZ` with the truth re-bucketed into these zones (comma list)",
    )
    ap.add_argument("--ccusage-version", default="20.0.24")
    ap.add_argument("--tokenbridge", help="tokenbridge command (default: the script beside this Python)")
    ap.add_argument("--skip-ccusage", action="store_true")
    ap.add_argument("--skip-tokenbridge", action="store_true")
    ap.add_argument("--skip-daemon", action="store_true")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        help="wait up to this many seconds for the 1-min load average to drop below --idle-load",
    )
    ap.add_argument("--idle-load", type=float, default=0.5)
    ap.add_argument(
        "--quiet-cpu",
        type=float,
        default=0,
        help="before each timed run, wait until the machine's CPUs were at most this %% busy over 2 s (0: off)",
    )
    ap.add_argument("--quiet-wait", type=float, default=120, help="with --quiet-cpu: longest wait per run, seconds")
    ap.add_argument(
        "--scale-corpora",
        type=lambda v: [Path(x) for x in v.split(",") if x],
        default=[],
        help="more generated corpora (comma list, e.g. 3 GB and 10 GB): cold scans of both tools, reports and "
        "totals on each, shown as a size curve (section bench:curve)",
    )
    ap.add_argument("--scale-repeat", type=int, default=2, help="cold-scan repetitions per tool on --scale-corpora")
    ap.add_argument(
        "--agent-corpora",
        type=lambda v: [x for x in v.split(",") if x],
        default=[],
        help="AGENT=DIR,... corpora of scripts/gen_agent_history.py (codex, openclaw, gemini): their sources' cold "
        "scans next to the Claude corpus' (--scale-repeat runs each)",
    )
    ap.add_argument("--write", type=Path, help="update the results section of this markdown file")
    ap.add_argument("--section", default="results", help="with --write: which bench:SECTION markers to fill")
    ap.add_argument("--json", type=Path, help="write all raw results as JSON here")
    ap.add_argument("--from-json", type=Path, help="only render (and --write) the results saved by --json")
    args = ap.parse_args(argv)
    args.incr_repeat = max(1, args.incr_repeat)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        res = Results(meta=saved["meta"], cc=saved["ccusage"], tb=saved["tokenbridge"], notes=saved["notes"])
        return emit(args, res)
    size = gen_history.parse_size(args.size)

    res = Results()
    res.meta["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    res.meta["machine"] = machine_info()
    res.meta["command"] = "python scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res.meta["repeat"] = args.repeat
    res.meta["appendLines"] = args.append_lines
    res.meta["ccusageVersion"] = args.ccusage_version
    res.meta["skipDaemon"] = args.skip_daemon
    res.meta["partialWait"] = args.partial_wait
    res.meta["quietCpu"] = args.quiet_cpu

    work = Path(tempfile.mkdtemp(prefix="tokenbridge-bench-"))
    home = work / "home"
    home.mkdir()
    if args.corpus:
        corpus = args.corpus
    elif args.keep:
        corpus = args.cache_dir / f"corpus-{size}-s{args.seed}-d{args.days}-{args.start}"
    else:
        corpus = work / "corpus"
    if not (corpus / "truth.json").exists():
        print(f"generating {args.size} corpus in {corpus} ...", file=sys.stderr)
        shutil.rmtree(corpus, ignore_errors=True)
        meta = gen_history.generate(
            corpus, size, args.seed, args.days, datetime.strptime(args.start, "%Y-%m-%d").date()
        )
        res.meta["genSeconds"] = meta["seconds"]
    else:
        res.meta["genSeconds"] = "(reused)"
    truth = json.loads((corpus / "truth.json").read_text())
    truth_backup = (corpus / "truth.json").read_bytes()
    target = corpus / truth["appendTarget"]
    target_size = target.stat().st_size
    gen_cmd = (
        f"python scripts/gen_history.py --out DIR --size {_size(truth['requestedSize'])} --seed {truth['seed']} "
        f"--days {truth['days']} --start {truth['start']}"
    )
    res.meta.update(
        genCommand=gen_cmd,
        corpusBytes=corpus_bytes(corpus),
        files=truth["files"],
        truthRequests=truth["totals"]["requests"],
        malformed=truth["malformedLines"],
        truthTotals=truth["totals"],
        traps=truth["traps"],
    )
    if args.wait_idle > 0:
        deadline = time.monotonic() + args.wait_idle
        while os.getloadavg()[0] > args.idle_load and time.monotonic() < deadline:
            print(f"waiting for load {os.getloadavg()[0]:.1f} <= {args.idle_load} ...", file=sys.stderr)
            time.sleep(15)
    res.meta["loadBefore"] = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    try:
        print(f"warming page cache ({res.meta['corpusBytes'] / 1e6:,.0f} MB) ...", file=sys.stderr)
        warm_cache(corpus)
        if not args.skip_ccusage:
            print("ccusage ...", file=sys.stderr)
            try:
                measure_ccusage(args, res, corpus, home, truth)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                res.notes.append(f"ccusage not measured: {exc}")
        if not args.skip_tokenbridge:
            print("tokenbridge ...", file=sys.stderr)
            measure_tokenbridge(args, res, corpus, home, work, truth)
        else:
            res.notes.append("tokenbridge skipped (--skip-tokenbridge): its figures are pending")
        res.meta["scaling"] = [scale_row(res)]
        for extra in args.scale_corpora:
            print(f"scaling: {extra} ...", file=sys.stderr)
            res.meta["scaling"].append(measure_scale(args, extra, home, work))
        if args.agent_corpora and not args.skip_tokenbridge:
            print("other sources ...", file=sys.stderr)
            res.meta["agents"] = measure_agents(args, corpus)
    finally:
        # Undo the appends so the corpus and its truth stay as generated.
        with target.open("r+b") as fh:
            fh.truncate(target_size)
        (corpus / "truth.json").write_bytes(truth_backup)
        shutil.rmtree(work, ignore_errors=True)
    res.meta["loadAfter"] = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    after = machine_info()["commit"]
    if after != res.meta["machine"]["commit"]:
        res.notes.append(
            f"the tokenbridge code changed during the run ({res.meta['machine']['commit']} -> {after}): "
            "the figures mix both; re-run"
        )

    return emit(args, res)


def measure_scale(args: argparse.Namespace, corpus: Path, home: Path, work: Path) -> dict[str, Any]:
    """Cold scans of both tools, reports and correctness (UTC) on a larger corpus: one curve point."""
    truth = json.loads((corpus / "truth.json").read_text())
    sub = Results()
    sub.meta.update(
        date="",
        repeat=args.scale_repeat,
        corpusBytes=corpus_bytes(corpus),
        files=truth["files"],
        genCommand=(
            f"python scripts/gen_history.py --out DIR --size {_size(truth['requestedSize'])} --seed {truth['seed']} "
            f"--days {truth['days']} --start {truth['start']}"
        ),
    )
    one = argparse.Namespace(**{**vars(args), "repeat": args.scale_repeat, "timezones": []})
    warm_cache(corpus)
    if not args.skip_ccusage:
        try:
            measure_ccusage(one, sub, corpus, home, truth)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            sub.notes.append(f"ccusage not measured: {exc}")
    scale_work = work / f"scale-{corpus.name}"
    scale_work.mkdir(exist_ok=True)
    measure_tokenbridge(one, sub, corpus, home, scale_work, truth, full=False)
    shutil.rmtree(scale_work, ignore_errors=True)
    row = scale_row(sub)
    row["notes"] = sub.notes
    row["quietChecks"] = sub.meta.get("quietChecks")
    return row


def _bench_agents() -> Any:
    spec = importlib.util.spec_from_file_location("bench_agents", Path(__file__).resolve().parent / "bench_agents.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure_agents(args: argparse.Namespace, claude_corpus: Path) -> list[dict[str, Any]]:
    """Cold scans of the Codex / OpenClaw / Gemini CLI corpora next to this run's Claude corpus
    (scripts/bench_agents.py; issue #11 item 5: each at >= half the Claude rate)."""
    agents = _bench_agents()
    tb = tokenbridge_cmd(args.tokenbridge)
    if tb is None:
        return []
    corpora = [("claude", claude_corpus), *agents.parse_corpora(args.agent_corpora)]
    return list(agents.run(corpora, tb, args.scale_repeat))


def emit(args: argparse.Namespace, res: Results) -> int:
    text = markdown(res)
    print(text)
    if len(res.meta.get("scaling") or []) > 1:
        print("\n" + curve_markdown(res.meta["scaling"], res.meta))
    if res.meta.get("agents"):
        print("\n" + _bench_agents().table(res.meta["agents"]))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"meta": res.meta, "ccusage": res.cc, "tokenbridge": res.tb, "notes": res.notes}, indent=1, default=str
            )
            + "\n"
        )
    if args.write:
        write_doc(args.write, text, args.section)
        if len(res.meta.get("scaling") or []) > 1:
            write_doc(args.write, curve_markdown(res.meta["scaling"], res.meta), "curve")
        print(f"updated {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
