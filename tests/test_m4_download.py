"""M4 download against a loopback HTTP server (never any other address)."""

from __future__ import annotations

import functools
import shutil
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from specdifftree.errors import ConfigError, DataError
from specdifftree.tasks.m4_download import DEFAULT_BASE_URL, download_m4, file_url
from specdifftree.tasks.sources import load_series

from conftest import m4_files as m4_root

REPO = Path(__file__).resolve().parents[1]




@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any connection to a host other than 127.0.0.1 fails the test."""
    real = socket.create_connection

    def guarded(address, *a, **kw):
        assert address[0] == "127.0.0.1", f"test tried to reach {address}"
        return real(address, *a, **kw)
    monkeypatch.setattr(socket, "create_connection", guarded)


class Handler(SimpleHTTPRequestHandler):
    """Static files; under /cut/ the body stops halfway although Content-Length promises it all."""

    requests: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        Handler.requests.append(self.path)
        if self.path.startswith("/cut/"):
            path = Path(self.translate_path(self.path.replace("/cut/", "/ok/", 1)))
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """Serves <tmp>/www: ok/{Train,Test}/Hourly-*.csv (copies of the official files),
    short/{Train,Test}/ (well-formed files cut to 200 series), html/{Train,Test}/ (not CSV)."""
    src = m4_root("Hourly-train.csv", "Hourly-test.csv")
    www = tmp_path / "www"
    for split, name in (("Train", "Hourly-train.csv"), ("Test", "Hourly-test.csv")):
        for d in ("ok", "short", "html"):
            (www / d / split).mkdir(parents=True)
        shutil.copy(src / name, www / "ok" / split / name)
        (www / "html" / split / name).write_text("<html><body>Not here</body></html>\n")
    for split, name in (("Train", "Hourly-train.csv"), ("Test", "Hourly-test.csv")):
        lines = (src / name).read_text().splitlines(keepends=True)
        (www / "short" / split / name).write_text("".join(lines[:201]))  # header + 200 series
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    Handler.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}", src
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_file_url_template():
    assert file_url(DEFAULT_BASE_URL, "train", "hourly") == \
        "https://raw.githubusercontent.com/Mcompetitions/M4-methods/master/Dataset/Train/Hourly-train.csv"
    assert file_url(DEFAULT_BASE_URL, "test", "Weekly").endswith("/Dataset/Test/Weekly-test.csv")
    assert file_url("http://h/m4", "test", "daily") == "http://h/m4/Daily-test.csv"
    assert file_url("http://h/{frequency}/{file}?raw=1", "train", "yearly") == \
        "http://h/Yearly/Yearly-train.csv?raw=1"
    with pytest.raises(ConfigError, match="base_url"):
        file_url("http://h/{nope}/", "train", "yearly")


def test_download_then_load(server, tmp_path):
    base, src = server
    root = tmp_path / "data" / "m4"
    cfg = OmegaConf.create({"_target_": "specdifftree.tasks.sources.M4CsvSource", "frequency": "Hourly", "root": str(root),
                            "download": True, "base_url": base + "/ok/{split}/"})
    series = load_series(cfg)
    assert len(series) == 414 and series[0].id == "H1"
    assert leftovers(root) == ["Hourly-test.csv", "Hourly-train.csv"]
    for name in leftovers(root):
        assert (root / name).read_bytes() == (src / name).read_bytes()
    assert sorted(Handler.requests) == ["/ok/Test/Hourly-test.csv", "/ok/Train/Hourly-train.csv"]
    # present files are not fetched again; a missing one alone is
    Handler.requests = []
    assert len(load_series(cfg)) == 414 and Handler.requests == []
    (root / "Hourly-test.csv").unlink()
    assert len(load_series(cfg)) == 414
    assert Handler.requests == ["/ok/Test/Hourly-test.csv"]


@pytest.mark.parametrize("prefix,match", [
    ("/missing/{split}/", r"HTTP 404"),
    ("/cut/{split}/", r"cut off \(\d+ of \d+ bytes\)"),
    ("/short/{split}/", r"hold 200 series, expected 414"),
    ("/html/{split}/", r"malformed: .*Hourly-train.csv, row 1 \(series <html><body>Not here</body></html>\)"),
])
def test_bad_responses_leave_nothing(server, tmp_path, prefix, match):
    base, _ = server
    root = tmp_path / "m4"
    with pytest.raises(DataError, match=match) as e:
        download_m4("hourly", root, base_url=base + prefix, timeout=10)
    msg = str(e.value)
    assert base in msg and str(root) in msg and "by hand" in msg
    assert leftovers(root) == []


def test_offline(tmp_path):
    with socket.socket() as s:          # a free port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "m4"
    root.mkdir()
    (root / "Weekly-train.csv").write_text("keep me\n")
    cfg = {"_target_": "specdifftree.tasks.sources.M4CsvSource", "frequency": "Weekly", "root": str(root), "download": True,
           "base_url": f"http://127.0.0.1:{port}/{{split}}/", "download_timeout": 5}
    with pytest.raises(DataError) as e:
        load_series(cfg)
    msg = str(e.value)
    assert f"http://127.0.0.1:{port}/Test/Weekly-test.csv" in msg and "cannot connect" in msg
    assert str(root) in msg
    assert leftovers(root) == ["Weekly-train.csv"]   # only the file that was already there
