"""The suite's own check (tests/_no_orphans.py): a process a test leaves running fails the session."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc: Linux only")


def _run_session(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_inner.py"
    test.write_text(textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_TB_SESSION"}  # the inner session sets its own
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests._no_orphans", "-p", "no:cacheprovider", str(test)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_process_orphaned_by_a_test_fails_the_session_and_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    out = _run_session(
        tmp_path,
        f"""
        import subprocess, sys
        def test_leaves_a_grandchild():
            # The child starts a long sleeper and exits at once: the sleeper is orphaned.
            code = (
                "import subprocess as s; d = s.DEVNULL; "
                "print(s.Popen(['sleep', '300'], stdout=d, stderr=d).pid)"
            )
            pid = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
            open({str(marker)!r}, "w").write(pid)
        """,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "outlived the test session" in out.stdout
    pid = int(marker.read_text())
    assert f"{pid}: sleep 300" in out.stdout
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_session_whose_processes_all_end_passes(tmp_path: Path) -> None:
    out = _run_session(
        tmp_path,
        """
        import subprocess
        def test_waits_for_its_child():
            subprocess.run(["sleep", "0.1"], check=True)
        """,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "outlived" not in out.stdout
