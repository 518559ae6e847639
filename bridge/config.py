"""Settings: defaults, then the config file, then environment variables, then CLI flags.

Config errors fail fast with the exact key (``config.toml: export.interval_seconds: ...``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from bridge.errors import ConfigError

_PROVIDERS = ("openai", "anthropic", "openrouter", "moonshot", "deepseek")
_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "export": {
        "interval_seconds": (int, float),
        "include_session_id": bool,
        "prometheus_port": int,
        "otlp": bool,
        "include_project": bool,
    },
    "sources": {"enabled": list},
    "pricing": {"overrides": str},
    # Provider APIs: base URLs, poll intervals, and the *name* of the environment variable that
    # holds each key (a secret never goes into the config file).
    "providers": {
        **{f"{p}_{k}": t for p in _PROVIDERS for k, t in (("base_url", str), ("key_env", str))},
        **{f"{p}_poll_interval_seconds": (int, float) for p in _PROVIDERS},
        "openrouter_management_key_env": str,
        "moonshot_currency": str,
    },
    "terminal": {"patterns": list},
}


@dataclass(slots=True)
class Settings:
    state_dir: Path
    config_path: Path | None = None
    interval_s: float = 60.0
    include_session_id: bool = False
    include_project: bool = False  # the ``project`` metric attribute (cardinality: one per project)
    prometheus_port: int | None = None
    otlp: bool = True
    enabled_sources: tuple[str, ...] | None = None  # None: every source enabled by default
    prices_path: Path | None = None
    rescan_s: float = 600.0
    env: dict[str, str] = field(default_factory=dict)
    providers: dict[str, Any] = field(default_factory=dict)  # the config file's [providers] table
    terminal_patterns: list[Any] = field(default_factory=list)  # user patterns (bridge.terminal)


def default_state_dir(env: dict[str, str]) -> Path:
    explicit = env.get("TOKENBRIDGE_STATE_DIR", "").strip()
    if explicit:
        return Path(os.path.expanduser(explicit))
    return Path(platformdirs.user_state_dir("tokenbridge"))


def default_overrides_path() -> Path:
    """The price override file: ``$TOKENBRIDGE_PRICES_FILE``, else ``<user config dir>/prices.toml``."""
    env = os.environ.get("TOKENBRIDGE_PRICES_FILE")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir("tokenbridge")) / "prices.toml"


def default_config_path(env: dict[str, str]) -> Path:
    explicit = env.get("TOKENBRIDGE_CONFIG", "").strip()
    if explicit:
        return Path(os.path.expanduser(explicit))
    return Path(platformdirs.user_config_dir("tokenbridge")) / "config.toml"


def _bool_env(env: dict[str, str], key: str) -> bool | None:
    raw = env.get(key)
    if raw is None or raw == "":
        return None
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, f"expected true/false, got {raw!r}")


# Both intervals: at least 0.1 s (less spins the CPU and floods the collector; tests use 0.5 s), at most
# a day (longer looks like a dead exporter to any alert on staleness).
INTERVAL_RANGE = (0.1, 86400.0)


def seconds(key: str, raw: object) -> float:
    """An interval in seconds from a file, variable or flag: finite and within ``INTERVAL_RANGE``."""
    if isinstance(raw, bool):  # TOML true is an int to Python
        raise ConfigError(key, f"not a number of seconds: {raw!r}")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(key, f"not a number of seconds: {raw!r}") from None
    lo, hi = INTERVAL_RANGE
    if not (math.isfinite(value) and lo <= value <= hi):  # also false for nan
        raise ConfigError(key, f"must be a finite number from {lo:g} to {hi:g} seconds, got {raw}")
    return value


def _seconds_env(env: dict[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if not raw:
        return default
    return seconds(key, raw.strip())


# Public name for source modules (poll intervals are read the same way).
seconds_env = _seconds_env


def _read_file(path: Path) -> dict[str, Any]:
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return {}
    import tomllib  # only with a config file: a one-off sync without one skips this 7 ms import

    try:
        with fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    for section, body in data.items():
        if section not in _SCHEMA:
            raise ConfigError(f"{path.name}: {section}", f"unknown section (known: {', '.join(_SCHEMA)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{path.name}: {section}", "must be a table")
        for key, value in body.items():
            want = _SCHEMA[section].get(key)
            if want is None:
                raise ConfigError(
                    f"{path.name}: {section}.{key}", f"unknown key (known: {', '.join(_SCHEMA[section])})"
                )
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ConfigError(f"{path.name}: {section}.{key}", f"wrong type {type(value).__name__}")
    return data


def load(env: dict[str, str] | None = None, state_dir: Path | None = None, config: Path | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    cfg_path = config or default_config_path(env)
    data = _read_file(cfg_path)
    s = Settings(state_dir=state_dir or default_state_dir(env), config_path=cfg_path, env=env)
    export = data.get("export", {})
    if "interval_seconds" in export:
        s.interval_s = seconds(f"{cfg_path.name}: export.interval_seconds", export["interval_seconds"])
    s.include_session_id = bool(export.get("include_session_id", False))
    s.include_project = bool(export.get("include_project", False))
    s.prometheus_port = export.get("prometheus_port")
    s.otlp = bool(export.get("otlp", True))
    enabled = data.get("sources", {}).get("enabled")
    if enabled is not None:
        from bridge.sources import _registry

        try:
            s.enabled_sources = _registry.resolve([str(n) for n in enabled])
        except ValueError as exc:
            known = ", ".join(_registry.selectors())
            raise ConfigError(
                f"{cfg_path.name}: sources.enabled", f"unknown source {exc.args[0]!r} (known: {known})"
            ) from None
    s.providers = dict(data.get("providers", {}))
    for key, value in s.providers.items():
        if key.endswith("_poll_interval_seconds") and not (isinstance(value, int | float) and 0 < value < float("inf")):
            raise ConfigError(f"{cfg_path.name}: providers.{key}", "must be > 0 seconds")
    overrides = data.get("pricing", {}).get("overrides")
    if overrides:
        s.prices_path = Path(os.path.expanduser(overrides))
    patterns = data.get("terminal", {}).get("patterns")
    if patterns:
        from bridge.terminal import load_patterns

        load_patterns(patterns, f"{cfg_path.name}: terminal.patterns")  # fail fast, naming the entry
        s.terminal_patterns = patterns
    s.interval_s = _seconds_env(env, "TOKENBRIDGE_EXPORT_INTERVAL", s.interval_s)
    s.rescan_s = _seconds_env(env, "TOKENBRIDGE_RESCAN_INTERVAL", s.rescan_s)
    session = _bool_env(env, "TOKENBRIDGE_INCLUDE_SESSION_ID")
    if session is not None:
        s.include_session_id = session
    project = _bool_env(env, "TOKENBRIDGE_INCLUDE_PROJECT")
    if project is not None:
        s.include_project = project
    prices_env = env.get("TOKENBRIDGE_PRICES_FILE")
    if prices_env:
        s.prices_path = Path(os.path.expanduser(prices_env))
    return s
