"""Tests of the Codex / OpenClaw / Gemini CLI history generator (scripts/gen_agent_history.py).

The key test runs the real CLI (``sync`` then ``report daily --json``) on a small generated corpus and checks
the report equals truth.json cell by cell (day x model, every token field and the request count): the
generator's truth is computed from what it meant to count, the bridge's from the files, so agreement checks
both the truth and each source's handling of the traps.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _SCRIPTS / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


gen = _load("gen_agent_history")
bench = _load("bench")

# agent -> (setting naming the corpus, source name, traps that must appear)
AGENTS = {
    "codex": (
        "CODEX_HOME",
        "codex",
        ("reemittedTokenCounts", "rateLimitOnlyEvents", "syntheticTotals", "totalResets", "modelSwitches",
         "forkedSessions", "forkReplayedLines", "archivedCopies"),
    ),
    "openclaw": (
        "OPENCLAW_DIR",
        "openclaw",
        ("otherUsageNames", "modelFromModelChange", "zeroCostEntries", "resetArchives"),
    ),
    "gemini": (
        "GEMINI_DATA_DIR",
        "gemini_cli",
        ("tokensLaterLines", "restatedHistories", "rewinds", "legacyDocuments"),
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(AGENTS))
def corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param)
    gen.generate(request.param, out, 4_000_000, seed=5, days=20)
    return request.param, out


def _env(tmp: Path, var: str, root: Path) -> dict[str, str]:
    skip = ("OTEL_", "TOKENBRIDGE_", "CLAUDE_", "CODEX_", "OPENCLAW_", "GEMINI_", "OPENCODE_", "AMP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(HOME=str(tmp / "home"), TOKENBRIDGE_STATE_DIR=str(tmp / "state"), TZ="UTC")
    env.update(TOKENBRIDGE_CONFIG=str(tmp / "no-config.toml"), PYTHONPATH=str(_SCRIPTS.parent))
    env[var] = str(root)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], env=env, capture_output=True, text=True)


def test_report_daily_equals_truth(corpus: tuple[str, Path], tmp_path: Path) -> None:
    agent, root = corpus
    var, source, _ = AGENTS[agent]
    env = _env(tmp_path, var, root)
    sync = _cli(env, "sync", "--no-export", "--source", source)
    assert sync.returncode == 0, sync.stderr
    rep = _cli(env, "report", "daily", "--json", "--timezone", "UTC", "--source", source)
    assert rep.returncode == 0, rep.stderr
    truth = json.loads((root / "truth.json").read_text())
    result = bench.compare(json.loads(rep.stdout), truth)
    assert result["exact"], result
    assert "requests" in result["fields"] and result["modelCellsChecked"]
    assert result["totals"]["requests"] == truth["traps"]["requests"] > 100


def test_every_trap_present(corpus: tuple[str, Path]) -> None:
    agent, root = corpus
    traps = json.loads((root / "truth.json").read_text())["traps"]
    missing = [t for t in AGENTS[agent][2] if not traps.get(t)]
    assert not missing, traps


def test_size_near_request_and_deterministic(corpus: tuple[str, Path], tmp_path: Path) -> None:
    agent, root = corpus
    truth = json.loads((root / "truth.json").read_text())
    on_disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != "truth.json")
    assert on_disk == truth["bytes"]
    assert 4_000_000 <= on_disk < 4_000_000 * 1.5
    again = tmp_path / "again"
    gen.generate(agent, again, 4_000_000, seed=5, days=20)
    assert json.loads((again / "truth.json").read_text())["totals"] == truth["totals"]


def test_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "other.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit, match="not empty"):
        gen.generate("codex", tmp_path, 1000)
