"""Settings: file, then environment; every bad value names its exact key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load
from bridge.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_file_then_environment(tmp_path):
    cfg = write(
        tmp_path,
        '[export]\ninterval_seconds = 30\ninclude_session_id = true\n[sources]\nenabled = ["claude_transcripts"]\n',
    )
    s = load({"TOKENBRIDGE_STATE_DIR": str(tmp_path / "st")}, config=cfg)
    assert (s.interval_s, s.include_session_id, s.enabled_sources) == (30.0, True, ("claude_transcripts",))
    s = load({"TOKENBRIDGE_EXPORT_INTERVAL": "5", "TOKENBRIDGE_INCLUDE_SESSION_ID": "0"}, config=cfg)
    assert (s.interval_s, s.include_session_id) == (5.0, False)
    assert s.state_dir != tmp_path / "st"


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        ("[export]\ninterval_seconds = 0\n", {}, "config.toml: export.interval_seconds"),
        ("[export]\ninterval_seconds = 'x'\n", {}, "config.toml: export.interval_seconds"),
        ("[exprt]\n", {}, "config.toml: exprt"),
        ("[sources]\nenabled = ['no_such_tool']\n", {}, "config.toml: sources.enabled"),
        ("not toml = = \n", {}, "config.toml"),
        ("", {"TOKENBRIDGE_RESCAN_INTERVAL": "-1"}, "TOKENBRIDGE_RESCAN_INTERVAL"),
        ("", {"TOKENBRIDGE_INCLUDE_SESSION_ID": "maybe"}, "TOKENBRIDGE_INCLUDE_SESSION_ID"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, env, key):
    cfg = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(env, config=cfg)
    assert err.value.key.endswith(key)


def test_missing_file_means_defaults(tmp_path):
    s = load({}, config=tmp_path / "absent.toml")
    assert s.interval_s == 60.0 and s.otlp and s.rescan_s == 600.0
