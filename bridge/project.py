"""Project attribution: which project a record belongs to.

Sources that know the agent's working directory record it as written (Claude Code's ``cwd``,
OpenCode's ``path.root``, ...). Records made here (terminal capture, manual entries) use, in
order: an explicit label (``--project``), ``TOKENBRIDGE_PROJECT``, the git root above the
working directory, the working directory itself.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "TOKENBRIDGE_PROJECT"


def git_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding ``.git`` (a directory, or a file
    for worktrees and submodules)."""
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return None


def project_for(label: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    if label and label.strip():
        return label.strip()
    env = dict(os.environ) if env is None else env
    if env.get(ENV, "").strip():
        return env[ENV].strip()
    here = cwd if cwd is not None else Path.cwd()
    return str(git_root(here) or here)
