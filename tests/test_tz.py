"""The system's time zone: TZ, /etc/localtime, /etc/timezone, each with the zone's DST rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge._tz import system_tz


@pytest.mark.parametrize(
    ("tz", "key"),
    [
        ("Europe/Berlin", "Europe/Berlin"),
        (":Asia/Tokyo", "Asia/Tokyo"),
        ("/usr/share/zoneinfo/Asia/Kolkata", "Asia/Kolkata"),
    ],
)
def test_tz_variable_names_the_zone(tz, key):
    assert system_tz({"TZ": tz}) == ZoneInfo(key)


def test_empty_tz_is_utc_as_for_the_c_library():
    assert system_tz({"TZ": ""}) is UTC


def test_tz_that_is_no_zone_name_falls_back_to_an_offset_with_a_warning(caplog, tz_env):
    tz_env("UTC")
    with caplog.at_level("WARNING", logger="tokenbridge"):
        zone = system_tz({"TZ": "CET-1CEST,M3.5.0,M10.5.0/3"})
    assert zone.utcoffset(datetime(2026, 7, 1)) is not None and not isinstance(zone, ZoneInfo)
    assert "TZ='CET-1CEST,M3.5.0,M10.5.0/3' is not an IANA zone name" in caplog.text


def test_localtime_symlink_names_the_zone(tmp_path):
    zoneinfo = tmp_path / "usr" / "share" / "zoneinfo"
    for key in ("America/New_York", "posix/Europe/Berlin"):
        (zoneinfo / key).parent.mkdir(parents=True, exist_ok=True)
        (zoneinfo / key).write_bytes(b"")  # only the link's name matters
    absolute, relative, posix = tmp_path / "lt1", tmp_path / "etc" / "lt2", tmp_path / "lt3"
    relative.parent.mkdir()
    absolute.symlink_to(zoneinfo / "America/New_York")
    relative.symlink_to("../usr/share/zoneinfo/America/New_York")
    posix.symlink_to(zoneinfo / "posix/Europe/Berlin")
    absent = tmp_path / "no-timezone"
    assert system_tz({}, absolute, absent) == ZoneInfo("America/New_York")
    assert system_tz({}, relative, absent) == ZoneInfo("America/New_York")
    assert system_tz({}, posix, absent) == ZoneInfo("Europe/Berlin")


def test_etc_timezone_then_the_rules_in_localtime_then_an_offset(tmp_path):
    named = tmp_path / "timezone"
    named.write_text("Asia/Kolkata\n")
    assert system_tz({}, tmp_path / "absent", named) == ZoneInfo("Asia/Kolkata")
    copied = tmp_path / "localtime"  # a copy, not a link: the rules without a name
    copied.write_bytes(Path("/usr/share/zoneinfo/Europe/Berlin").read_bytes())
    zone = system_tz({}, copied, tmp_path / "absent")
    assert zone.utcoffset(datetime(2026, 1, 15)) == timedelta(hours=1)
    assert zone.utcoffset(datetime(2026, 7, 15)) == timedelta(hours=2)
    last = system_tz({}, tmp_path / "absent", tmp_path / "absent")
    assert last.utcoffset(None) is not None
