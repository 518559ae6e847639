"""Official release downloads (scripts/_lib.sh tb_fetch_release, used by start.sh and scripts/get-grafana.sh):
archives served by a real HTTP server on loopback, verified against a checksums file the test pins; a good archive is
unpacked and run, a tampered one deleted and never run; without a download the Go build is announced first."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import platform
import re
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._stack import REPO, free_port, http_get, native_ports, otelcol_bin, prometheus_bin


def _platform() -> str:
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine().lower()]
    return f"{platform.system().lower()}-{arch}"


class _Server:
    """Serves files from a directory on 127.0.0.1 and records the paths asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        served = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):
                served.requests.append(self.path)
                super().do_GET()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path) -> Iterator[_Server]:
    root = tmp_path / "www"
    root.mkdir()
    s = _Server(root)
    yield s
    s.close()


def _targz(dest: Path, members: dict[str, str | Path]) -> str:
    """Write a tar.gz: str values become executable files with that text, Path values symlinks to that path.
    Returns the archive's SHA-256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, Path):
                info.type, info.linkname = tarfile.SYMTYPE, str(content)
                tar.addfile(info)
            else:
                data = content.encode()
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
    dest.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def _checksums(path: Path, lines: list[tuple[str, str, str, str]]) -> Path:
    """A checksums file like scripts/release-checksums.txt: (name, version, sha256, file name)."""
    text = "# test pins\n" + "".join(
        f"{n} {v} {_platform()} {sha} https://example.invalid/download/{f}  # test\n" for n, v, sha, f in lines
    )
    path.write_text(text)
    return path


COLLECTOR_TGZ = f"otelcol-contrib_0.159.0_{_platform().replace('-', '_')}.tar.gz"


@pytest.fixture
def native_env(tmp_path, server):
    ports = native_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOKENBRIDGE_", "GRAFANA_"))}
    env.update(ports)
    env.update(
        {
            "HOME": str(tmp_path / "home"),
            "TOKENBRIDGE_MODE": "native",
            "TOKENBRIDGE_NATIVE_DIR": str(tmp_path / "native"),
            "TOKENBRIDGE_CACHE_DIR": str(tmp_path / "cache"),
            "TOKENBRIDGE_DOWNLOAD_BASE": server.base,
            "TOKENBRIDGE_PROMETHEUS_BIN": prometheus_bin(),
            "TOKENBRIDGE_NO_BROWSER": "1",
        }
    )
    yield env
    subprocess.run([str(REPO / "scripts/stop.sh"), "--native"], env=env, capture_output=True, timeout=60)


def _start(env: dict[str, str], tmp_path: Path, path: str | None = None) -> subprocess.CompletedProcess:
    e = {**env, "PATH": path or env["PATH"]}
    return subprocess.run(
        [str(REPO / "start.sh"), "--no-bridge"], capture_output=True, text=True, env=e, cwd=str(tmp_path), timeout=180
    )


def test_verified_collector_archive_is_unpacked_once_and_run(native_env, server, tmp_path):
    # The archive holds `otelcol-contrib` as a link to the real collector built for the tests: the download,
    # verification, unpacking and start are the real code path; only the archive's payload is not the release's.
    sha = _targz(server.root / COLLECTOR_TGZ, {"otelcol-contrib": Path(otelcol_bin())})
    env = {
        **native_env,
        "TOKENBRIDGE_CHECKSUMS_FILE": str(
            _checksums(tmp_path / "sums.txt", [("otelcol-contrib", "0.159.0", sha, COLLECTOR_TGZ)])
        ),
    }
    start = _start(env, tmp_path)
    assert start.returncode == 0, start.stdout + start.stderr
    assert f"downloading the official release {server.base}/{COLLECTOR_TGZ}" in start.stderr
    assert "SHA-256 verified" in start.stderr
    unpacked = Path(env["TOKENBRIDGE_CACHE_DIR"]) / "bin" / f"otelcol-contrib-0.159.0-{_platform()}-{sha[:12]}"
    pid_line = (Path(env["TOKENBRIDGE_NATIVE_DIR"]) / "run/otel-collector.pid").read_text().split()
    assert pid_line[1] == str(unpacked / "otelcol-contrib")
    code, _ = http_get(f"http://127.0.0.1:{env['OTELCOL_HEALTH_PORT']}/")
    assert code == 200
    assert not list((Path(env["TOKENBRIDGE_CACHE_DIR"]) / "downloads").iterdir())  # unpacked, archive not kept

    # Downloaded once: the next start uses the cache without asking the server.
    subprocess.run([str(REPO / "scripts/stop.sh")], env=env, capture_output=True, timeout=60, check=True)
    asked = len(server.requests)
    again = _start(env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == asked and "downloading" not in again.stderr
    assert re.search(r"  otel-collector started \(pid \d+", again.stdout)


def test_tampered_archive_is_deleted_reported_and_never_run(native_env, server, tmp_path):
    ran = tmp_path / "tampered-binary-ran"
    good = _targz(tmp_path / "good.tgz", {"otelcol-contrib": "#!/bin/sh\nexit 0\n"})
    _targz(server.root / COLLECTOR_TGZ, {"otelcol-contrib": f"#!/bin/sh\ntouch {ran}\nsleep 300\n"})
    env = {
        **native_env,
        "TOKENBRIDGE_CHECKSUMS_FILE": str(
            _checksums(tmp_path / "sums.txt", [("otelcol-contrib", "0.159.0", good, COLLECTOR_TGZ)])
        ),
    }
    start = _start(env, tmp_path)
    assert start.returncode == 1
    assert "FAILED checksum verification" in start.stderr and f"pinned {good}" in start.stderr
    assert "deleted, not unpacked, not run" in start.stderr
    assert "refusing the download that failed verification" in start.stderr
    cache = Path(env["TOKENBRIDGE_CACHE_DIR"])
    assert not list((cache / "downloads").iterdir())
    assert not list(cache.glob("bin/otelcol-contrib-*"))
    assert not ran.exists()
    assert not (Path(env["TOKENBRIDGE_NATIVE_DIR"]) / "run/otel-collector.pid").exists()


_TOOLS = (
    "bash", "env", "dirname", "basename", "sed", "head", "tail", "sha256sum", "cut", "mktemp", "cp", "chmod", "rm",
    "mv", "mkdir", "cat", "tr", "grep", "printf", "sleep", "id", "od", "hostname", "seq", "python3", "curl", "tar",
    "gzip", "uname", "nohup", "kill", "touch", "ls", "date", "wc", "sort",
)  # fmt: skip


def _path_with(tmp_path: Path, fake_go: bool) -> str:
    """A PATH with the tools the scripts use but no go, collector or Prometheus (even where Go is in /usr/bin);
    optionally a stand-in `go` that only reports that it was called."""
    bindir = tmp_path / ("bin-fake-go" if fake_go else "bin-no-go")
    bindir.mkdir()
    for tool in _TOOLS:
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    if fake_go:
        go = bindir / "go"
        go.write_text('#!/bin/sh\necho "FAKE-GO $*" >&2\nexit 1\n')
        go.chmod(0o755)
    return str(bindir)


def test_without_a_download_the_go_build_is_announced_first(native_env, tmp_path):
    closed = free_port()
    env = {**native_env, "TOKENBRIDGE_DOWNLOAD_BASE": f"http://127.0.0.1:{closed}"}
    start = _start(env, tmp_path, _path_with(tmp_path, fake_go=True))
    assert start.returncode == 1
    err = start.stderr
    failed = err.index("otelcol-contrib 0.159.0: download failed")
    announce = err.index(
        "the official download failed (no network?): building the collector (otelcol-contrib 0.159.0) from source"
    )
    go_ran = err.index("FAKE-GO ")
    assert failed < announce < go_ran
    assert "This takes several minutes and ~5 GB of disk" in err
    # Without Go the error names both missing routes.
    start = _start(env, tmp_path, _path_with(tmp_path, fake_go=False))
    assert start.returncode == 1
    assert (
        "error: cannot get the collector (otelcol-contrib 0.159.0): the official download failed (no network?), "
        "and Go is not installed to build it from source"
    ) in start.stderr


def test_a_platform_without_a_pinned_checksum_falls_back_to_go(native_env, tmp_path):
    env = {**native_env, "TOKENBRIDGE_CHECKSUMS_FILE": str(_checksums(tmp_path / "empty.txt", []))}
    start = _start(env, tmp_path, _path_with(tmp_path, fake_go=True))
    assert start.returncode == 1
    assert f"no official archive with a pinned checksum for {_platform()}" in start.stderr
    assert "FAKE-GO " in start.stderr


# ------------------------------------------------------------------ Grafana


GRAFANA_TGZ = f"grafana-13.2.0.{_platform()}.tar.gz"


def _get_grafana(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "scripts/get-grafana.sh")], capture_output=True, text=True, env=env, timeout=60)


def test_get_grafana_fetches_the_verified_archive_that_start_then_uses(server, tmp_path):
    sha = _targz(server.root / GRAFANA_TGZ, {"grafana-13.2.0/bin/grafana": "#!/bin/sh\necho grafana stand-in\n"})
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TOKENBRIDGE_", "GRAFANA_"))},
        "HOME": str(tmp_path),
        "TOKENBRIDGE_CACHE_DIR": str(tmp_path / "cache"),
        "TOKENBRIDGE_GRAFANA_DOWNLOAD_BASE": server.base,
        "TOKENBRIDGE_CHECKSUMS_FILE": str(_checksums(tmp_path / "sums.txt", [("grafana", "13.2.0", sha, GRAFANA_TGZ)])),
    }
    got = _get_grafana(env)
    assert got.returncode == 0, got.stderr
    home = Path(got.stdout.strip().splitlines()[-1])
    assert home == tmp_path / "cache/bin" / f"grafana-13.2.0-{_platform()}-{sha[:12]}" / "grafana-13.2.0"
    assert (home / "bin/grafana").is_file() and server.requests == [f"/{GRAFANA_TGZ}"]
    # start.sh finds it through the same lookup (no GRAFANA_HOME needed) ...
    lib = subprocess.run(
        ["bash", "-c", f"source {REPO / 'scripts/_lib.sh'}; tb_grafana_home"], capture_output=True, text=True, env=env
    )
    assert lib.stdout.strip() == str(home)
    # ... and a second get-grafana.sh is a cache hit.
    assert _get_grafana(env).stdout.strip().splitlines()[-1] == str(home) and len(server.requests) == 1


def test_get_grafana_refuses_a_tampered_archive(server, tmp_path):
    _targz(server.root / GRAFANA_TGZ, {"grafana-13.2.0/bin/grafana": "#!/bin/sh\necho evil\n"})
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TOKENBRIDGE_", "GRAFANA_"))},
        "HOME": str(tmp_path),
        "TOKENBRIDGE_CACHE_DIR": str(tmp_path / "cache"),
        "TOKENBRIDGE_DOWNLOAD_BASE": server.base,
        "TOKENBRIDGE_CHECKSUMS_FILE": str(
            _checksums(tmp_path / "sums.txt", [("grafana", "13.2.0", "0" * 64, GRAFANA_TGZ)])
        ),
    }
    got = _get_grafana(env)
    assert got.returncode == 1
    assert "FAILED checksum verification" in got.stderr
    assert "error: Grafana 13.2.0: the download failed checksum verification and was deleted" in got.stderr
    assert not list((tmp_path / "cache/downloads").iterdir())
    assert not list(tmp_path.glob("cache/bin/*"))


# ------------------------------------------------------------------ the pinned checksums


def test_pinned_checksums_cover_the_compose_versions_and_name_their_source():
    text = (REPO / "scripts/release-checksums.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for name, version, plat, sha, url in rows:
        assert re.fullmatch(r"[0-9a-f]{64}", sha), (name, plat)
        assert url.startswith(("https://github.com/", "https://dl.grafana.com/oss/release/")), url
        assert version in url and url.endswith(".tar.gz")
    versions = {(r[0], r[1]) for r in rows}
    compose = (REPO / "docker-compose.yml").read_text()
    for name, version in versions:
        image = {
            "otelcol-contrib": "otel/opentelemetry-collector-contrib:",
            "prometheus": "prom/prometheus:v",
            "grafana": "grafana/grafana:",
        }[name]
        assert f"{image}{version}" in compose
    # Every group of pins says, in its comment, where its values come from.
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        if any(not line.startswith("#") for line in lines):
            assert any(line.startswith("#") and "https://" in line for line in lines), block
    assert "https://github.com/mvrpl/unix-apps/blob/" in text and "sha256sums.txt" in text
