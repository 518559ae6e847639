#!/usr/bin/env python3
"""Cold-scan rate of the Codex, OpenClaw and Gemini CLI sources next to the Claude transcripts' (issue #11 item 5).

Usage::

    python scripts/gen_agent_history.py --agent codex --out /tmp/b/codex --size 1GB   # likewise openclaw, gemini
    PYTHONPATH=$PWD python scripts/bench_agents.py --corpus codex=/tmp/b/codex --corpus openclaw=/tmp/b/openclaw \\
        --corpus gemini=/tmp/b/gemini --corpus claude=/work/bench/c1g --repeat 3 [--json out.json]

Also reachable as ``scripts/bench.py --agent-corpora codex=DIR,...``. For each corpus (made by
scripts/gen_agent_history.py, or scripts/gen_history.py for ``claude``): the page cache is warmed, then
``tokenbridge sync --no-export --source <its source>`` runs ``--repeat`` times, each with a fresh state dir
and ``HOME`` an empty dir, with only that source's setting pointing at the corpus. Reported: corpus bytes /
median process wall time (MB/s), the process tree's CPU seconds per GB (median), the ratio to the ``claude``
row when there is one (the target: at least 0.5), and whether ``report daily --json --timezone UTC`` equals the
corpus' truth.json exactly (every day x model cell, token fields and requests). The 1-minute load average is
recorded before each corpus: the machine is shared, so the figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

# agent -> (the setting that names the corpus, source name for --source)
AGENTS = {
    "claude": ("CLAUDE_CONFIG_DIR", "claude_transcripts"),
    "codex": ("CODEX_HOME", "codex"),
    "openclaw": ("OPENCLAW_DIR", "openclaw"),
    "gemini": ("GEMINI_DATA_DIR", "gemini_cli"),
}
_SCRUB = ("XDG_", "CLAUDE_", "TOKENBRIDGE_", "OTEL_", "CODEX_", "OPENCLAW_", "GEMINI_", "OPENCODE_", "AMP_")


def _bench() -> Any:
    """scripts/bench.py (its measuring and comparing helpers), loaded once by path."""
    if "bench" not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parent / "bench.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench"]


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.is_file() and p.name != "truth.json")


def env_for(agent: str, corpus: Path, home: Path, state: Path) -> dict[str, str]:
    # Bytecode cached as after `pip install` (like bench.py's clean_env).
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB) and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(HOME=str(home), NO_COLOR="1", TERM="dumb", LC_ALL="C.UTF-8", TZ="UTC")
    env.update(TOKENBRIDGE_STATE_DIR=str(state), TOKENBRIDGE_CONFIG=str(home / "no-config.toml"))
    env[AGENTS[agent][0]] = str(corpus)
    return env


def measure(agent: str, corpus: Path, tb: list[str], repeat: int, work: Path) -> dict[str, Any]:
    """Cold scans of one corpus and the exactness of its daily report."""
    b = _bench()
    source = AGENTS[agent][1]
    files = corpus_files(corpus)
    nbytes = 0
    for p in files:  # warm the page cache: the figures are parse speed, not disk speed
        with p.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                nbytes += len(chunk)
    home = work / f"home-{agent}"
    home.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"agent": agent, "source": source, "bytes": nbytes, "files": len(files)}
    row["load1"] = round(os.getloadavg()[0], 2)
    runs = []
    for i in range(repeat):
        state = work / f"state-{agent}-{i}"
        shutil.rmtree(state, ignore_errors=True)
        r = b.run_measured([*tb, "sync", "--no-export", "--source", source], env_for(agent, corpus, home, state))
        if r.rc != 0:
            row["error"] = f"sync exited {r.rc}: {(r.stderr or r.stdout).strip()[-400:]}"
            return row
        runs.append(r)
    wall = statistics.median(r.wall for r in runs)
    cpu = statistics.median(r.cpu for r in runs)
    row.update(wall=wall, wallBest=min(r.wall for r in runs), mbps=b.mbps(nbytes, wall), cpuPerGB=cpu / (nbytes / 1e9))
    row["rssMB"] = max(r.maxrss_mb for r in runs)
    env = env_for(agent, corpus, home, state)
    rep = b.run_measured([*tb, "report", "daily", "--json", "--timezone", "UTC", "--source", source], env)
    truth_path = corpus / "truth.json"
    if rep.rc != 0 or not truth_path.exists():
        row["exact"] = None
        row["error"] = f"report exited {rep.rc}: {rep.stderr[-300:]}" if rep.rc else "no truth.json"
        return row
    cmp = b.compare(json.loads(rep.stdout), json.loads(truth_path.read_text()))
    row.update(exact=cmp["exact"], requests=cmp["totals"].get("requests"), diff=cmp["diff"])
    return row


def table(rows: list[dict[str, Any]]) -> str:
    ref = next((r.get("mbps") for r in rows if r["agent"] == "claude"), None)
    out = [
        "| source | corpus | files | cold scan (median) | MB/s | × Claude rate | CPU-s/GB | peak RSS | load1 | exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "wall" not in r:
            out.append(f"| {r['source']} | {r['bytes'] / 1e9:.2f} GB | {r['files']} | {r.get('error')} | | | | | | |")
            continue
        ratio = f"{r['mbps'] / ref:.2f}" if ref else "n/a"
        exact = {True: "yes", False: f"**NO** {r.get('diff')}", None: "n/a"}[r.get("exact")]
        out.append(
            f"| {r['source']} | {r['bytes'] / 1e9:.2f} GB | {r['files']} | {r['wall']:.2f} s | {r['mbps']:.0f} | "
            f"{ratio} | {r['cpuPerGB']:.2f} | {r['rssMB']:.0f} MB | {r['load1']} | {exact} |"
        )
    return "\n".join(out)


def parse_corpora(items: list[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        agent, _, path = item.partition("=")
        if agent not in AGENTS or not path:
            raise SystemExit(f"bad corpus {item!r}: expected AGENT=DIR with AGENT one of {', '.join(AGENTS)}")
        out.append((agent, Path(path)))
    return out


def run(corpora: list[tuple[str, Path]], tb: list[str], repeat: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="tb-bench-agents-") as tmp:
        return [measure(agent, corpus, tb, repeat, Path(tmp)) for agent, corpus in corpora]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", action="append", required=True, help="AGENT=DIR (repeatable)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tokenbridge", help="tokenbridge command (default: the script beside this Python)")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    tb = _bench().tokenbridge_cmd(args.tokenbridge)
    if tb is None:
        raise SystemExit("tokenbridge CLI not found (install the checkout, or pass --tokenbridge)")
    rows = run(parse_corpora(args.corpus), tb, args.repeat)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(table(rows))
    return 0 if all(r.get("exact") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
