"""The team token, read from a file and re-read before every export (docs/team.md).

The OTLP exporters take their headers once, so a token given in ``OTEL_EXPORTER_OTLP_HEADERS``
stays until the bridge restarts. A token file (``TOKENBRIDGE_TEAM_TOKEN_FILE``, the same file
``telemetry.sh --team`` and ``scripts/team-headers.sh`` read) is read again before each export:
replacing it rotates the bridge's token without a restart. A file that becomes unreadable, empty
or malformed keeps the last good token in use (a half-written edit must not stop the exports)
and is reported once per problem. The token itself is never logged or put in a message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.metrics.export import MetricExporter

from bridge.errors import ConfigError

log = logging.getLogger("tokenbridge.export")

# What a header value can carry unencoded: the alphabet telemetry.sh and team-headers.sh accept.
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")


def read_token(path: Path) -> str:
    """The token on the file's first line. Raises ``ValueError`` saying what is wrong (never the token)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror or type(exc).__name__})") from None
    token = first.strip()
    if not token:
        raise ValueError("its first line is empty")
    if not _TOKEN.fullmatch(token):
        raise ValueError("the token has characters a header cannot carry (A-Z a-z 0-9 . _ ~ + / = -; not shown)")
    return token


class TokenFile:
    """The current token of a token file: ``current()`` re-reads it, keeping the last good one."""

    def __init__(self, path: Path, setting: str = "TOKENBRIDGE_TEAM_TOKEN_FILE") -> None:
        self.path = path
        try:
            self._token = read_token(path)
        except ValueError as exc:  # at start there is no previous token to fall back on
            raise ConfigError(setting, f"team token file {path}: {exc}") from None
        self._problem = ""

    def current(self) -> str:
        try:
            token = read_token(self.path)
        except ValueError as exc:
            if str(exc) != self._problem:  # once per problem, not once per export
                self._problem = str(exc)
                log.warning("team token file %s: %s; still sending the previous token", self.path, exc)
            return self._token
        if self._problem:
            log.info("team token file %s is readable again", self.path)
            self._problem = ""
        self._token = token
        return token


def headers_with_token(env: dict[str, str], token: str) -> dict[str, str]:
    """The environment's OTLP headers (the metrics variable first, as the SDK reads them) with the
    Authorization replaced by the team token: the gRPC exporter drops the environment's headers when
    given its own, so they are carried over here."""
    from opentelemetry.util.re import parse_env_headers

    raw = env.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    headers = {k.lower(): v for k, v in parse_env_headers(raw, liberal=True).items() if k.lower() != "authorization"}
    headers["authorization"] = f"Bearer {token}"
    return headers


class TokenRotation:
    """Re-reads the token file before each export; a new token gets a new exporter from ``make`` (the
    SDK's OTLP exporters keep their headers for life)."""

    def __init__(self, path: Path, make: Callable[[str], MetricExporter]) -> None:
        self._file = TokenFile(path)
        self._token = self._file.current()
        self._make = make
        self.source = f"the team token file {path}"

    def headers(self, env: dict[str, str]) -> dict[str, str]:
        return headers_with_token(env, self._token)

    def exporter(self, inner: MetricExporter) -> MetricExporter:
        """``inner``, or a new exporter when the file holds a new token (``inner`` is then shut down)."""
        token = self._file.current()
        if token == self._token:
            return inner
        fresh = self._make(token)
        self._token = token
        try:
            inner.shutdown(timeout_millis=1_000)
        except Exception:  # closing the old channel must not stop the export with the new token
            log.debug("closing the exporter of the previous team token failed", exc_info=True)
        log.info("team token file %s changed: exporting with the new token", self._file.path)
        return fresh
