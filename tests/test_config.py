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
        ("[export]\ninterval_seconds = true\n", {}, "config.toml: export.interval_seconds"),
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


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e-9", "0.05", "86401", "1e300"])
def test_export_interval_outside_one_second_to_one_day_names_the_file_key(tmp_path, value):
    cfg = write(tmp_path, f"[export]\ninterval_seconds = {value}\n")
    with pytest.raises(ConfigError) as err:
        load({}, config=cfg)
    assert err.value.key == "config.toml: export.interval_seconds"
    assert "from 0.1 to 86400 seconds" in str(err.value)


@pytest.mark.parametrize("key", ["TOKENBRIDGE_EXPORT_INTERVAL", "TOKENBRIDGE_RESCAN_INTERVAL"])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "Infinity", "1e-9", "0", "1e9"])
def test_interval_variables_must_be_finite_and_in_range(tmp_path, key, value):
    with pytest.raises(ConfigError) as err:
        load({key: value}, config=tmp_path / "absent.toml")
    assert err.value.key == key
    assert "from 0.1 to 86400 seconds" in str(err.value)


def test_interval_bounds_are_inclusive(tmp_path):
    s = load({"TOKENBRIDGE_EXPORT_INTERVAL": "0.1", "TOKENBRIDGE_RESCAN_INTERVAL": "86400"}, config=tmp_path / "x")
    assert (s.interval_s, s.rescan_s) == (0.1, 86400.0)
    s = load({}, config=write(tmp_path, "[export]\ninterval_seconds = 86400\n"))
    assert s.interval_s == 86400.0


# ------------------------------------------------------------------ team mode


def test_team_mode_is_off_unless_asked(tmp_path):
    assert load({"TOKENBRIDGE_USER": "alice"}, config=tmp_path / "absent.toml").team is None
    cfg = write(tmp_path, "[team]\nenabled = true\n")
    assert load({"TOKENBRIDGE_TEAM": "0"}, config=cfg).team is None


def test_team_names_default_to_the_login_and_the_short_host_name(tmp_path, monkeypatch):
    import getpass
    import socket

    monkeypatch.setattr(getpass, "getuser", lambda: "jdoe")
    monkeypatch.setattr(socket, "gethostname", lambda: "laptop-7.corp.example.com")
    team = load({"TOKENBRIDGE_TEAM": "1"}, config=tmp_path / "absent.toml").team
    assert team is not None and (team.user, team.machine) == ("jdoe", "laptop-7")


def test_team_names_environment_over_file(tmp_path):
    cfg = write(tmp_path, '[team]\nenabled = true\nuser = "ann"\nmachine = "box-1"\n')
    team = load({}, config=cfg).team
    assert team is not None and (team.user, team.machine) == ("ann", "box-1")
    team = load({"TOKENBRIDGE_USER": "bo.b@eng", "TOKENBRIDGE_MACHINE": "ci_2"}, config=cfg).team
    assert team is not None and (team.user, team.machine) == ("bo.b@eng", "ci_2")


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        ("", {"TOKENBRIDGE_TEAM": "1", "TOKENBRIDGE_USER": "a b"}, "TOKENBRIDGE_USER"),
        ("", {"TOKENBRIDGE_TEAM": "1", "TOKENBRIDGE_MACHINE": "x" * 65}, "TOKENBRIDGE_MACHINE"),
        ("", {"TOKENBRIDGE_TEAM": "yes please"}, "TOKENBRIDGE_TEAM"),
        ('[team]\nenabled = true\nuser = "-x"\n', {}, "config.toml: team.user"),
        ("[team]\nenabled = 1\n", {}, "config.toml: team.enabled"),
    ],
)
def test_bad_team_names_name_the_key(tmp_path, text, env, key):
    with pytest.raises(ConfigError) as err:
        load(env, config=write(tmp_path, text))
    assert err.value.key.endswith(key)


TEAM_TOKEN = "tok-0123456789abcdef"


def test_team_token_file_from_the_variable_over_the_file(tmp_path):
    env_file, cfg_file = tmp_path / "env-token", tmp_path / "cfg-token"
    env_file.write_text(TEAM_TOKEN + "\n")
    cfg_file.write_text(TEAM_TOKEN + "\n")
    cfg = write(tmp_path, f'[team]\nenabled = true\ntoken_file = "{cfg_file}"\n')
    home = {"HOME": str(tmp_path / "home")}
    assert load(home, config=cfg).team.token_file == cfg_file  # type: ignore[union-attr]
    team = load({**home, "TOKENBRIDGE_TEAM_TOKEN_FILE": str(env_file)}, config=cfg).team
    assert team is not None and team.token_file == env_file


def test_team_default_token_file_only_without_an_authorization_header(tmp_path):
    default = tmp_path / "home/.config/tokenbridge/team-token"
    env = {"TOKENBRIDGE_TEAM": "1", "HOME": str(tmp_path / "home")}
    absent = tmp_path / "absent.toml"
    assert load(env, config=absent).team.token_file is None  # type: ignore[union-attr]  # no file: none
    default.parent.mkdir(parents=True)
    default.write_text(TEAM_TOKEN + "\n")
    assert load(env, config=absent).team.token_file == default  # type: ignore[union-attr]
    header = {"OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{TEAM_TOKEN}"}
    assert load({**env, **header}, config=absent).team.token_file is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read it"),
        ("\n" + TEAM_TOKEN, "first line is empty"),
        (f"{TEAM_TOKEN} trailing", "characters a header cannot carry"),
        (f'"{TEAM_TOKEN}"', "characters a header cannot carry"),
    ],
)
def test_bad_team_token_file_names_the_variable_never_the_token(tmp_path, content, problem):
    token_file = tmp_path / "team-token"
    if content is not None:
        token_file.write_text(content)
    env = {"TOKENBRIDGE_TEAM": "1", "TOKENBRIDGE_TEAM_TOKEN_FILE": str(token_file)}
    with pytest.raises(ConfigError) as err:
        load(env, config=tmp_path / "absent.toml")
    assert err.value.key == "TOKENBRIDGE_TEAM_TOKEN_FILE"
    assert problem in str(err.value) and str(token_file) in str(err.value)
    assert TEAM_TOKEN not in str(err.value)
