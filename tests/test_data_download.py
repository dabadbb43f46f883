"""download: resume with HTTP Range and the sha256 check, against a local http.server on
127.0.0.1 serving an archive built by the test (no external host is ever contacted)."""

from __future__ import annotations

import hashlib
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tinyalex.data.__main__ import main
from tinyalex.data.download import download
from tinyalex.data.errors import DataError
from tinyalex.data.readers import open_source

sys.path.insert(0, str(Path(__file__).parent))
from test_data_readers import layout, materialise  # noqa: E402


class Server:
    """Serves one payload; can cut the first response short and ignore Range."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.cut_first_at = None
        self.honour_range = True
        self.ranges: list[str | None] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                srv.ranges.append(rng)
                start = 0
                if rng and srv.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(srv.payload):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(srv.payload) - 1}/{len(srv.payload)}")
                else:
                    self.send_response(200)
                body = srv.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if srv.cut_first_at is not None:
                    body, srv.cut_first_at = body[:srv.cut_first_at], None
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/tiny-imagenet-200.zip"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive(tmp_path):
    return materialise(layout("tiny", n_train=3, n_val=2, top="tiny-imagenet-200/"),
                       tmp_path / "src", "zip").read_bytes()


@pytest.fixture
def server(archive):
    s = Server(archive)
    yield s
    s.close()


def quiet(m):
    pass


def test_download_checks_sha256_and_is_a_dataset(tmp_path, server, archive):
    """A full download lands as <to>/tiny-imagenet-200.zip with its sha256 verified and saved;
    the file is then found as Tiny ImageNet; a second call does nothing."""
    digest = hashlib.sha256(archive).hexdigest()
    path = download("tiny-imagenet", tmp_path / "data", url=server.url, sha256=digest,
                    log=quiet, progress=False)
    assert path.read_bytes() == archive and not path.with_name(path.name + ".part").exists()
    assert (tmp_path / "data" / "tiny-imagenet-200.zip.sha256").read_text().startswith(digest)
    assert open_source(path).kind == "tiny-imagenet"
    messages = []
    download("tiny-imagenet", tmp_path / "data", url=server.url, sha256=digest,
             log=messages.append, progress=False)
    assert "already there" in messages[0] and len(server.ranges) == 1


def test_interrupted_download_resumes_with_range(tmp_path, server, archive):
    """The connection drops halfway: a DataError says to run again, the .part stays; the next
    call asks for 'bytes=<have>-' and completes the identical file."""
    half = len(archive) // 2
    server.cut_first_at = half
    with pytest.raises(DataError, match="run the same command again to resume"):
        download("tiny-imagenet", tmp_path, url=server.url, log=quiet, progress=False)
    assert (tmp_path / "tiny-imagenet-200.zip.part").stat().st_size == half
    path = download("tiny-imagenet", tmp_path, url=server.url,
                    sha256=hashlib.sha256(archive).hexdigest(), log=quiet, progress=False)
    assert server.ranges == [None, f"bytes={half}-"]
    assert path.read_bytes() == archive


def test_server_without_range_restarts_cleanly(tmp_path, server, archive):
    """A server that ignores Range (200) makes the download start over, not append garbage."""
    (tmp_path / "tiny-imagenet-200.zip.part").write_bytes(archive[:100])
    server.honour_range = False
    path = download("tiny-imagenet", tmp_path, url=server.url, log=quiet, progress=False)
    assert path.read_bytes() == archive


def test_sha256_mismatch_is_an_error_and_keeps_nothing(tmp_path, server, monkeypatch):
    """A wrong digest (here from the environment variable) is a DataError; no file is kept."""
    monkeypatch.setenv("TINYALEX_SHA256_TINY_IMAGENET", "0" * 64)
    with pytest.raises(DataError, match="does not match"):
        download("tiny-imagenet", tmp_path / "d", url=server.url, log=quiet, progress=False)
    assert list((tmp_path / "d").iterdir()) == []


def test_cli_download_with_env_url_and_unreachable_host(tmp_path, server, archive, monkeypatch,
                                                        capsys):
    """The CLI uses TINYALEX_URL_<NAME>; a refused connection (closed local port) is exit 2
    with one line."""
    monkeypatch.setenv("TINYALEX_URL_TINY_IMAGENET", server.url)
    assert main(["download", "tiny-imagenet", "--to", str(tmp_path / "d"), "--quiet"]) == 0
    assert (tmp_path / "d" / "tiny-imagenet-200.zip").read_bytes() == archive
    capsys.readouterr()
    monkeypatch.setenv("TINYALEX_URL_IMAGENETTE", "http://127.0.0.1:9/none.tgz")
    assert main(["download", "imagenette", "--to", str(tmp_path / "e"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: download of http://127.0.0.1:9/none.tgz failed")
    assert err.count("\n") == 1
