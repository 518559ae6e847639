"""A real VictoriaMetrics single-node on loopback for the team tests: start it, import known samples, query it.

Binary: tests/_stack.victoriametrics_bin (env TOKENBRIDGE_VICTORIAMETRICS_BIN, else scripts/build-victoriametrics.sh).
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests._stack import Prometheus, _binary, free_port, http_get, spawn, victoriametrics_bin, wait_until


@dataclass
class VictoriaMetrics(Prometheus):
    """Prometheus' query helpers work unchanged: VictoriaMetrics serves the same API."""

    def import_series(self, series: list[dict]) -> None:
        """``/api/v1/import`` JSON lines: {"metric": {...}, "values": [...], "timestamps": [ms, ...]}, then make
        them searchable at once."""
        body = "".join(json.dumps(s) + "\n" for s in series).encode()
        req = urllib.request.Request(f"{self.url}/api/v1/import", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 204, r.status
        self.flush()

    def flush(self) -> None:
        code, body = http_get(f"{self.url}/internal/force_flush", timeout=30)
        assert code == 200, body


def start_victoriametrics(workdir: Path, extra_flags: list[str] | None = None) -> VictoriaMetrics:
    port = free_port()
    data = workdir / "vm-data"
    argv = [
        victoriametrics_bin(),
        f"-storageDataPath={data}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=100y",
        # Tests import samples and query them at once: no 30 s visibility delay, no cached partial results.
        "-search.latencyOffset=0s",
        "-search.disableCache",
        "-loggerLevel=WARN",
        *(extra_flags or []),
    ]
    proc = spawn("victoria-metrics", argv, workdir / "victoria-metrics.log")
    vm = VictoriaMetrics(proc, port, data)
    try:
        wait_until(lambda: proc.alive() and http_get(f"{vm.url}/health")[0] == 200, 60, "VictoriaMetrics ready")
    except AssertionError:
        proc.stop()
        raise AssertionError(f"VictoriaMetrics did not become ready:\n{proc.tail()}") from None
    return vm


def vmalert_bin() -> str:
    return _binary("TOKENBRIDGE_VMALERT_BIN", "build-vmalert.sh")
