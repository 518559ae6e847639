"""The parse worker process: it never outlives the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ClaudeHome, assistant_line, user_tool_result

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc, no third-party package)."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _history(home: ClaudeHome, files: int = 8) -> None:
    """A few MB of real-shaped transcripts: enough that the worker has results in flight."""
    filler = user_tool_result("x" * 4000)
    for f in range(files):
        session = f"{f:08d}-1d2f-4c55-9a0e-7f1b2c3d4e5f"
        lines = []
        for i in range(400):
            lines += [assistant_line(f"msg_{f}_{i}", f"req_{f}_{i}", session=session, output=i + 1), filler]
        home.append(home.session_file(session), *lines)


@pytest.mark.parametrize(
    "command", [["sync", "--no-export"], ["run", "--no-otlp", "--no-progress"]], ids=["sync", "run"]
)
def test_sigkilled_process_leaves_no_parse_worker(cli_env, claude_home, command):
    _history(claude_home)
    env = {**cli_env, "TOKENBRIDGE_PARALLEL_MIN_BYTES": "1"}  # always parse in the worker
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _children(proc.pid)
            lines = [_cmdline(p) for p in seen]
            if any("_parallel import serve" in c for c in lines):
                break
            time.sleep(0.005)
        else:
            pytest.fail("the sync never started its parse worker")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in seen):
            time.sleep(0.05)
        survivors = {p: _cmdline(p) for p in seen if _alive(p)}
        assert not survivors, f"still running after their parent was killed: {survivors}"
    finally:
        for p in seen:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


def test_worker_whose_parent_died_before_it_started_exits_at_once():
    """The gap before the death signal is armed: the start-up check sees a different parent."""
    from bridge.sources._parallel import _die_with_parent

    pid = os.fork()
    if pid == 0:  # the "worker"
        try:
            _die_with_parent(os.getppid() + 1_000_000)  # not its parent: as if re-parented
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
