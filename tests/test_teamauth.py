"""collector/teamauth (the team collector's bearer-token authenticator, Go): its own `go test`, run from pytest so
the suite covers it. Its behaviour inside the real collector is tested in tests/test_team_e2e.py."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests._stack import IN_CI, REPO


def test_go_tests_of_the_teamauth_extension_pass():
    go = shutil.which("go")
    if go is None:
        if IN_CI:
            pytest.fail("go not found: CI needs Go for the team collector")
        pytest.skip("Go missing (never skipped in CI)")
    r = subprocess.run(
        [go, "test", "-count=1", "./..."],
        cwd=REPO / "collector" / "teamauth",
        env={**os.environ, "GOFLAGS": "-mod=mod", "GOWORK": "off"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, f"go test failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert "ok" in r.stdout
