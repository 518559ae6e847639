"""pytest hooks: no process started by the test session may outlive it.

At the start the session becomes a child subreaper (Linux ``prctl``): a process orphaned by a
test (a daemon whose parent was killed, a parse worker, multiprocessing's resource tracker) is
re-parented to pytest instead of init, so it stays visible. At the end every descendant still
running after a short grace period is named, killed, and the session fails.

Used by ``conftest.py`` (which imports the two hooks) and, as a plugin, by the test of the check.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Any

import pytest

_PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 5.0  # multiprocessing's resource tracker exits a moment after the process it served


def _set_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _reap_zombies() -> None:
    """Wait for exited orphans re-parented here (nobody else will)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _running_descendants() -> list[Any]:
    import psutil

    out = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
    return out


def _stop_own_resource_tracker() -> None:
    """multiprocessing's resource tracker of this very process (tests that scan in-process start
    it) lives until this process exits, by design: end it now, as the exit would."""
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


def survivors(grace: float = GRACE_S) -> list[str]:
    """Descendants still running after ``grace`` seconds ("pid: command"); they are killed."""
    import psutil

    _stop_own_resource_tracker()
    deadline = time.monotonic() + grace
    while True:
        _reap_zombies()
        left = _running_descendants()
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    names = []
    for proc in left:
        with contextlib.suppress(psutil.Error):
            names.append(f"{proc.pid}: {' '.join(proc.cmdline())[:160]}")
            proc.send_signal(signal.SIGKILL)
    _reap_zombies()
    return names


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_ACTIVE] = _set_subreaper()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not session.config.stash.get(_ACTIVE, False):
        return
    left = survivors()
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


_ACTIVE = pytest.StashKey[bool]()
