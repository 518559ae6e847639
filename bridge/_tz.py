"""The system's time zone with its rules, for local days (reports, the stats cache's dates).

``datetime.now().astimezone().tzinfo`` is today's fixed offset: every day on the other side of a
DST change would be bucketed an hour off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger("tokenbridge.tz")


def system_tz(
    env: Mapping[str, str] | None = None,
    localtime: Path = Path("/etc/localtime"),
    timezone_file: Path = Path("/etc/timezone"),
) -> tzinfo:
    """The system's time zone *with its rules*, so days on both sides of a DST change are right.

    ``TZ`` (an IANA name, ``:name`` or a zoneinfo file path) wins, as for the C library; else the
    name under ``zoneinfo/`` that ``/etc/localtime`` links to, else ``/etc/timezone``, else the
    rules in ``/etc/localtime`` itself. Today's fixed UTC offset is only the last resort.
    """
    env = os.environ if env is None else env
    raw = env.get("TZ")
    if raw is not None:
        spec = raw.strip().removeprefix(":")
        if not spec:
            return UTC  # the C library reads an empty TZ as UTC
        zone = _zone_from_path(Path(spec)) if spec.startswith("/") else _zone(spec)
        if zone is not None:
            return zone
        log.warning("TZ=%r is not an IANA zone name (like Europe/Berlin): using today's UTC offset", raw)
        return _fixed_offset()
    zone = _zone_from_path(localtime)
    if zone is None:
        try:
            zone = _zone(timezone_file.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            zone = None
    return zone if zone is not None else _fixed_offset()


def _zone(key: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(key) if key else None
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _zone_from_path(path: Path) -> ZoneInfo | None:
    """A zone named by where ``path`` (a symlink into a zoneinfo tree) points, else its rules."""
    try:
        target = str(path.readlink()) if path.is_symlink() else str(path)
    except OSError:
        return None
    _, sep, key = target.partition("zoneinfo/")
    if sep:
        for variant in ("posix/", "right/"):
            key = key.removeprefix(variant)
        zone = _zone(key)
        if zone is not None:
            return zone
    try:
        with path.open("rb") as fh:  # a copied zone file: its rules without a name
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return None


def _fixed_offset() -> tzinfo:
    local = datetime.now().astimezone().tzinfo
    return local if local is not None else UTC
