"""Tests of the synthetic history generator (scripts/gen_history.py).

The key test recomputes the totals from the written files with a straightforward parser that applies the
spec's dedup rules (shared/spec/local-formats.md §1.4-1.5) and checks they equal truth.json, which the
generator computed from what it intended to write. Agreement of the two proves the truth is right.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "gen_history", Path(__file__).resolve().parents[1] / "scripts" / "gen_history.py"
)
assert _SPEC and _SPEC.loader
gen_history = importlib.util.module_from_spec(_SPEC)
sys.modules["gen_history"] = gen_history
_SPEC.loader.exec_module(gen_history)

FIELDS = ("input", "output", "cacheRead", "cacheCreation", "cacheCreation1h", "requests")


def _files(root: Path) -> list[Path]:
    return sorted((root / "projects").rglob("*.jsonl"))


def recompute(root: Path) -> tuple[dict[str, dict[str, dict[str, int]]], dict[str, int], int]:
    """Independent recomputation: (per UTC day/model totals, malformed lines per file, synthetic lines)."""
    return _recompute(root, 10)


def recompute_hourly(root: Path) -> dict[str, dict[str, dict[str, int]]]:
    return _recompute(root, 13)[0]


def _recompute(root: Path, key_len: int) -> tuple[dict[str, dict[str, dict[str, int]]], dict[str, int], int]:
    malformed: dict[str, int] = defaultdict(int)
    synthetic = 0
    # (message.id, requestId) -> (is_sidechain, usage, model, timestamp); max output wins
    by_key: dict[tuple[str, str], tuple[bool, dict[str, Any], str, str]] = {}
    for path in _files(root):
        rel = str(path.relative_to(root))
        with path.open("rb") as fh:
            for raw in fh:
                try:
                    obj = json.loads(raw)
                except ValueError:
                    malformed[rel] += 1
                    continue
                if obj.get("type") != "assistant":
                    continue
                msg = obj.get("message")
                if not isinstance(msg, dict) or not isinstance(msg.get("usage"), dict):
                    continue
                if msg.get("model") == "<synthetic>":
                    synthetic += 1
                    continue
                key = (msg["id"], obj["requestId"])
                entry = (bool(obj.get("isSidechain")), msg["usage"], msg["model"], obj["timestamp"])
                old = by_key.get(key)
                if old is None or entry[1]["output_tokens"] > old[1]["output_tokens"]:
                    by_key[key] = entry
    # Sidechain replays: a message.id that also exists as a non-sidechain entry counts only as that one.
    main_ids = {mid for (mid, _), e in by_key.items() if not e[0]}
    days: dict[str, dict[str, dict[str, int]]] = {}
    for (mid, _), (side, usage, model, ts) in by_key.items():
        if side and mid in main_ids:
            continue
        row = days.setdefault(ts[:key_len], {}).setdefault(model, dict.fromkeys(FIELDS, 0))
        cc = usage.get("cache_creation")
        row["input"] += usage["input_tokens"]
        row["output"] += usage["output_tokens"]
        row["cacheRead"] += usage["cache_read_input_tokens"]
        if cc:
            row["cacheCreation"] += cc["ephemeral_5m_input_tokens"] + cc["ephemeral_1h_input_tokens"]
            row["cacheCreation1h"] += cc["ephemeral_1h_input_tokens"]
        else:
            row["cacheCreation"] += usage["cache_creation_input_tokens"]
        row["requests"] += 1
    return days, dict(malformed), synthetic


def truth_days(truth: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    return {d: {m: {k: r[k] for k in FIELDS} for m, r in day["models"].items()} for d, day in truth["daily"].items()}


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in _files(root):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    h.update((root / "truth.json").read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hist")
    gen_history.generate(root, 4_000_000, seed=7, days=10)
    return root


def test_parse_size() -> None:
    assert gen_history.parse_size("50MB") == 50_000_000
    assert gen_history.parse_size("1GB") == 10**9
    assert gen_history.parse_size("2MiB") == 2 * 2**20
    assert gen_history.parse_size("1.5KB") == 1500
    assert gen_history.parse_size("123") == 123


def test_deterministic_with_seed(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    gen_history.generate(a, 600_000, seed=11)
    gen_history.generate(b, 600_000, seed=11)
    gen_history.generate(c, 600_000, seed=12)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_size_near_request(corpus: Path) -> None:
    total = sum(p.stat().st_size for p in _files(corpus))
    truth = json.loads((corpus / "truth.json").read_text())
    assert truth["bytes"] == total
    assert 4_000_000 <= total <= 4_000_000 * 1.10


def test_every_line_valid_json_except_malformed(corpus: Path) -> None:
    truth = json.loads((corpus / "truth.json").read_text())
    _, malformed, _ = recompute(corpus)
    assert malformed == truth["malformedByFile"]
    assert truth["malformedLines"] == sum(malformed.values()) >= 1
    lines = sum(1 for p in _files(corpus) for _ in p.open("rb"))
    assert lines == truth["lines"]


def test_truth_equals_independent_recomputation(corpus: Path) -> None:
    truth = json.loads((corpus / "truth.json").read_text())
    days, _, synthetic = recompute(corpus)
    assert days == truth_days(truth)
    assert synthetic == truth["traps"]["syntheticLines"]
    assert sum(r["requests"] for d in days.values() for r in d.values()) == truth["totals"]["requests"]


def test_hourly_truth(corpus: Path) -> None:
    truth = json.loads((corpus / "truth.json").read_text())
    fields = truth["hourlyFields"]
    hourly = {h: {m: dict(zip(fields, v, strict=True)) for m, v in row.items()} for h, row in truth["hourly"].items()}
    want = {h: {m: {f: r[f] for f in fields} for m, r in row.items()} for h, row in recompute_hourly(corpus).items()}
    assert hourly == want
    # hours add up to days
    days: dict[str, dict[str, dict[str, int]]] = {}
    for h, row in hourly.items():
        for m, r in row.items():
            cell = days.setdefault(h[:10], {}).setdefault(m, dict.fromkeys(fields, 0))
            for f in fields:
                cell[f] += r[f]
    assert days == {d: {m: {f: r[f] for f in fields} for m, r in row.items()} for d, row in truth_days(truth).items()}


def test_every_trap_present(corpus: Path) -> None:
    truth = json.loads((corpus / "truth.json").read_text())
    traps = truth["traps"]
    for name in (
        "streamedMessages",
        "streamingDuplicateLines",
        "resumedSessions",
        "resumedCopiedRequests",
        "sidechainFiles",
        "sidechainRequests",
        "sidechainReplays",
        "syntheticLines",
        "costUSDLines",
        "toolUseResultUsageDecoys",
        "malformedAssistantLines",
    ):
        assert traps.get(name, 0) > 0, name
    assert float(truth["reportedCostUSD"]) > 0
    assert any(p.parts[-2] == "subagents" for p in _files(corpus))
    # Most bytes are not usage lines.
    usage_bytes = sum(len(raw) for p in _files(corpus) for raw in p.open("rb") if b'"type":"assistant"' in raw[-200:])
    assert usage_bytes < 0.4 * truth["bytes"]


def test_shapes_follow_spec(corpus: Path) -> None:
    """Field order and nesting of a final streamed assistant line, as in spec Example A."""
    seen = set()
    for p in _files(corpus):
        for raw in p.open("rb"):
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            t = obj.get("type")
            seen.add(t)
            if t == "assistant" and obj["message"]["model"] != "<synthetic>" and "costUSD" not in obj:
                keys = list(obj)
                assert keys[:2] == ["parentUuid", "isSidechain"]
                assert keys[-4:] == ["requestId", "type", "uuid", "timestamp"]
                usage = obj["message"]["usage"]
                cc = usage["cache_creation"]
                assert (
                    cc["ephemeral_5m_input_tokens"] + cc["ephemeral_1h_input_tokens"]
                    == usage["cache_creation_input_tokens"]
                )
                assert obj["timestamp"].endswith("Z") and len(obj["timestamp"]) == 24
            if obj.get("isSidechain"):
                assert p.parts[-2] == "subagents"
    assert {"user", "assistant", "file-history-snapshot"} <= seen


def test_decoys_contain_literal_usage_bytes(corpus: Path) -> None:
    hits = 0
    for p in _files(corpus):
        for raw in p.open("rb"):
            if raw.startswith(b'{"parentUuid"') and b'"type":"user"' in raw and b'"usage":{' in raw:
                hits += 1
    assert hits == json.loads((corpus / "truth.json").read_text())["traps"]["toolUseResultUsageDecoys"]


def test_append_updates_truth(tmp_path: Path) -> None:
    root = tmp_path / "h"
    gen_history.generate(root, 800_000, seed=5)
    before = json.loads((root / "truth.json").read_text())
    target = root / before["appendTarget"]
    n_before = sum(1 for _ in target.open("rb"))
    info = gen_history.append_lines(root, 300, None, None)
    after = json.loads((root / "truth.json").read_text())
    assert sum(1 for _ in target.open("rb")) == n_before + 300
    assert info["requests"] > 0
    assert after["totals"]["requests"] == before["totals"]["requests"] + info["requests"]
    assert after["traps"]["appendedLines"] == 300
    days, _, _ = recompute(root)
    assert days == truth_days(after)
    # a second append continues deterministically and stays exact
    gen_history.append_lines(root, 7, None, None)
    days, _, _ = recompute(root)
    assert days == truth_days(json.loads((root / "truth.json").read_text()))


def test_one_response_stays_in_one_utc_hour(corpus: Path) -> None:
    """Streamed lines of one response never straddle an hour, so every timezone puts them on one day."""
    hours: dict[tuple[str, str], set[str]] = defaultdict(set)
    for p in _files(corpus):
        for raw in p.open("rb"):
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if obj.get("type") == "assistant" and obj.get("requestId"):
                hours[(obj["message"]["id"], obj["requestId"])].add(obj["timestamp"][:13])
    assert hours
    assert all(len(h) == 1 for h in hours.values())
