"""pytest hooks: no process started by the test session may outlive it.

At the start the session puts a marker of its own in its environment (``PYTEST_TB_SESSION``):
every process a test starts inherits it, even one orphaned and re-parented to init (a daemon
whose parent was killed, a parse worker). At the end every process still running that is a
descendant of the session or carries its marker is named, killed, and the session fails.

The session does not make itself a child subreaper (that would find orphans without a marker):
it would then have to reap them, and zombies it left unreaped would look alive to the tests that
wait for a process to stop (``/proc/PID`` stays until the reaping).

Used by ``conftest.py`` (which imports the two hooks) and, as a plugin, by the test of the check.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import uuid
from typing import Any

import pytest

MARKER = "PYTEST_TB_SESSION"
GRACE_S = 5.0  # a process may still be on its way out when the last test ends


def _stop_own_resource_tracker() -> None:
    """multiprocessing's resource tracker of this very process (started by any test that uses
    multiprocessing) lives until this process exits, by design: end it now, as the exit would."""
    module = sys.modules.get("multiprocessing.resource_tracker")
    tracker = getattr(module, "_resource_tracker", None)
    fd, pid = getattr(tracker, "_fd", None), getattr(tracker, "_pid", None)
    if tracker is None or fd is None or pid is None:
        return
    with contextlib.suppress(OSError):
        os.close(fd)  # the tracker exits when its pipe closes
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    tracker._fd = tracker._pid = None


def _marked(marker: str) -> list[int]:
    """Running processes whose environment holds this session's marker."""
    needle = f"{MARKER}={marker}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    out.append(int(entry))
        except OSError:
            continue
    return out


def _running(marker: str) -> list[Any]:
    import psutil

    pids = {p.pid for p in psutil.Process().children(recursive=True)} | set(_marked(marker))
    out = []
    for pid in sorted(pids):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
    return out


def survivors(marker: str, grace: float = GRACE_S) -> list[str]:
    """Processes of this session still running after ``grace`` seconds ("pid: command"); they
    are killed."""
    import psutil

    _stop_own_resource_tracker()
    deadline = time.monotonic() + grace
    while True:
        left = _running(marker)
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    names = []
    for proc in left:
        with contextlib.suppress(psutil.Error):
            names.append(f"{proc.pid}: {' '.join(proc.cmdline())[:160]}")
            proc.send_signal(signal.SIGKILL)
    return names


def pytest_sessionstart(session: pytest.Session) -> None:
    if sys.platform.startswith("linux"):
        marker = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        os.environ[MARKER] = marker
        session.config.stash[_MARK] = marker


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    marker = session.config.stash.get(_MARK, None)
    if marker is None:
        return
    left = survivors(marker)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    text = "processes started by the tests outlived the test session (killed now):\n  " + "\n  ".join(left)
    if reporter is not None:
        reporter.write_sep("=", "leftover processes", red=True)
        reporter.write_line(text)
    else:
        print(text, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


_MARK = pytest.StashKey[str]()
