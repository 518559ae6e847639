"""scripts/loadgen.py end to end at a tiny scale: real team collector and VictoriaMetrics, every token sent is stored
exactly once (bridge totals and Claude Code deltas), every measured field present, no process left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from tests._stack import REPO, team_otelcol_bin, victoriametrics_bin

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def test_a_short_run_stores_exactly_what_was_sent_and_measures_everything(tmp_path):
    mark = f"loadgen-{os.getpid()}-{id(tmp_path)}"  # inherited by everything loadgen starts
    env = {**os.environ, "TOKENBRIDGE_TEAM_OTELCOL_BIN": team_otelcol_bin(),
           "TOKENBRIDGE_VICTORIAMETRICS_BIN": victoriametrics_bin(), "PYTHONPATH": str(REPO),
           "TB_LOADGEN_TEST_MARK": mark}  # fmt: skip
    out = tmp_path / "result.json"
    before = {p.pid for p in psutil.process_iter()}
    args = ["--users", "4", "--duration", "6", "--interval", "2", "--settle", "3", "--history-days", "0.02"]
    proc = subprocess.run([sys.executable, str(REPO / "scripts/loadgen.py"), *args, "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["users"] == 4 and r["clients"] == 8 and r["failed_requests"] == 0 and r["requests"] >= 8
    for kind in ("bridge", "cc"):
        assert r["exact"][kind]["sent"] > 0 and r["exact"][kind]["sent"] == r["exact"][kind]["stored"], r["exact"]
    assert r["samples_per_s"] > 0 and r["active_series"] > 4 * 20 and r["history_samples"] > 0
    assert set(r["cpu_percent"]) == set(r["peak_rss_mb"]) == {"victoriametrics", "collector", "loadgen"}
    assert r["dashboard"]["panels"] >= 10 and r["dashboard"]["refused"] == 0
    assert proc.stdout.strip().splitlines()[-1].startswith("| 4 |")  # the Markdown row for docs/team.md
    # Only what this run started (other tests or tools on the machine may run their own collectors).
    left = []
    for p in psutil.process_iter():
        if p.pid in before:
            continue
        try:
            if p.environ().get("TB_LOADGEN_TEST_MARK") == mark:
                left.append(p.name())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    assert not left, left
