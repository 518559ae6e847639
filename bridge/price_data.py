"""The price table's data: genai-prices' bundled snapshot, or a newer one fetched by its update mechanism.

``tokenbridge run`` keeps the table current where the network allows: genai-prices' ``UpdatePrices`` (its shared
background thread, its default URL — the project's ``prices/new_data/v2/data.json`` on GitHub — and its parser)
fetches the document every ``REFRESH_S``. ``Refresher.fetch`` also stores what it fetched, validated, in the state
directory (``price-data.json``) so every tokenbridge process prices with the same table: a process installs the
stored document when it loads prices (``install``), and the table's identity is part of the rate cache's and the
pricer's fingerprint, so costs cached under the old table are recomputed.

* Opt-out: ``[pricing] refresh = false`` in the config file or ``TOKENBRIDGE_PRICES_REFRESH=0``. The URL can be
  pointed elsewhere (a mirror) with ``TOKENBRIDGE_PRICES_URL``.
* Offline or refused: one info line; an HTTP error or a document genai-prices cannot parse: one warning. Either
  way the table in use stays (the stored document, else the bundled data). A stored document that cannot be read
  is set aside with a warning and the bundled data is used.
* Only rows priced after the change use the new table (a stored cost is not rewritten, except unknown → known as
  for a new override): exported cost counters never go down.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("tokenbridge.pricing")

DATA_FILE = "price-data.json"
REFRESH_S = 6 * 3600.0
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class TableInfo:
    """Which table prices requests, for ``tokenbridge sources``."""

    origin: str  # "bundled" or "refreshed"
    version: str  # genai-prices' version (the bundled data's, and the parser's)
    fetched_at: str | None = None  # ISO 8601 UTC, for a refreshed table
    url: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "genaiPrices": self.version, "fetchedAt": self.fetched_at, "url": self.url}

    def describe(self) -> str:
        if self.origin == "refreshed":
            return f"fetched {self.fetched_at} from {self.url}"
        return f"bundled with genai-prices {self.version}"


def _path(state_dir: Path) -> Path:
    return state_dir / DATA_FILE


def identity(state_dir: Path) -> str:
    """What the stored table is, from one ``stat`` (no read): part of the rate cache's inputs."""
    try:
        st = _path(state_dir).stat()
    except OSError:
        return "bundled"
    return f"data:{st.st_size}:{st.st_mtime_ns}"


def _version() -> str:
    from bridge._ratecache import package_version

    return package_version()


def _read(state_dir: Path) -> dict[str, Any] | None:
    path = _path(state_dir)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        _set_aside(path, f"cannot be read ({exc})")
        return None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("providers"), list):
        _set_aside(path, "is not a price-data document of this tokenbridge")
        return None
    return doc


def _set_aside(path: Path, why: str) -> None:
    log.warning("price table %s %s: set aside as %s.bad; using the bundled prices", path, why, path.name)
    with contextlib.suppress(OSError):
        path.replace(path.with_name(path.name + ".bad"))


def info(state_dir: Path) -> TableInfo:
    """The table a process would price with now (reads the stored document's header, not its prices)."""
    doc = _read(state_dir)
    if doc is None:
        return TableInfo("bundled", _version())
    return TableInfo("refreshed", _version(), str(doc.get("fetched_at")), str(doc.get("url")))


def install(state_dir: Path) -> TableInfo:
    """Price this process's requests with the stored table, if there is a valid one; else the bundled data."""
    from genai_prices import data_snapshot

    doc = _read(state_dir)
    if doc is not None:
        try:
            providers = _parse(doc["providers"])
        except Exception as exc:  # pydantic's ValidationError and whatever a newer document trips
            _set_aside(_path(state_dir), f"is not valid for genai-prices {_version()} ({type(exc).__name__})")
        else:
            data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot(providers, from_auto_update=True))
            return TableInfo("refreshed", _version(), str(doc.get("fetched_at")), str(doc.get("url")))
    data_snapshot.set_custom_snapshot(None)
    return TableInfo("bundled", _version())


def _parse(raw: Any) -> Any:
    """genai-prices' own parser and validation of a fetched document (what ``UpdatePrices.fetch`` uses)."""
    from genai_prices.types import _providers_from_raw

    if not isinstance(raw, list):
        raise ValueError("expected a list of providers")
    return _providers_from_raw(raw)


def _write(state_dir: Path, raw: list[Any], url: str, digest: str) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": _FORMAT,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "url": url,
        "sha256": digest,
        "providers": raw,
    }
    fd, tmp = tempfile.mkstemp(prefix=".price-data.", dir=state_dir)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, separators=(",", ":"))
        Path(tmp).replace(_path(state_dir))  # readers see the old document or the new one, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refresher(
    state_dir: Path, url: str | None = None, interval_s: float = REFRESH_S, on_update: Callable[[], None] | None = None
) -> Any:
    """A started-when-you-say ``genai_prices.UpdatePrices`` that stores what it fetches (see the module doc)."""
    from genai_prices import data_snapshot
    from genai_prices.update_prices import DEFAULT_UPDATE_URL, UpdatePrices

    @dataclass
    class Refresher(UpdatePrices):
        state: Path = field(default_factory=Path)
        notify: Callable[[], None] | None = None
        failed: bool = False

        def fetch(self) -> Any:
            import httpx  # the project's HTTP client (genai-prices' own fetch uses its httpx2 the same way)

            current = data_snapshot._custom_snapshot  # what stays in use when this fetch fails
            try:
                r = httpx.get(self.url, timeout=httpx.Timeout(10.0, connect=5.0), follow_redirects=True)
                r.raise_for_status()
                raw = json.loads(r.content)
                providers = _parse(raw)
            except Exception as exc:  # offline, refused, HTTP error, a document genai-prices cannot read
                if not self.failed:  # once per failing streak: offline machines are not nagged every 6 h
                    # No network is an expected state (info); an answer that is not a price table is a problem.
                    level = logging.INFO if isinstance(exc, httpx.TransportError) else logging.WARNING
                    log.log(
                        level, "price table not refreshed from %s (%s); using the %s prices",
                        shown(self.url), _reason(exc), "stored" if current is not None else "bundled",
                    )  # fmt: skip
                self.failed = True
                return current
            self.failed = False
            digest = hashlib.sha256(r.content).hexdigest()
            stored = _read(self.state)
            if stored is not None and stored.get("sha256") == digest and current is not None:
                return current  # unchanged: nothing to store or reprice
            _write(self.state, raw, shown(self.url), digest)
            log.info("price table refreshed from %s (%d providers)", shown(self.url), len(providers))
            if self.notify is not None:
                self.notify()
            return data_snapshot.DataSnapshot(providers, from_auto_update=True)

    return Refresher(update_interval=interval_s, url=url or DEFAULT_UPDATE_URL, state=state_dir, notify=on_update)


def shown(url: str) -> str:
    """``url`` without credentials or query (a mirror's URL may carry a token): what logs and ``sources`` show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _reason(exc: Exception) -> str:
    """A short cause without the response body (a URL may carry a token: the URL is the user's, the body not)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    return type(exc).__name__
