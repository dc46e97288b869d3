"""download_movielens: local folder, real download + checksum + extraction from a local HTTP
server, cache reuse without network, checksum failure leaving nothing, unsafe archives."""

from __future__ import annotations

import functools
import http.server
import os
import threading
import zipfile
from pathlib import Path

import pytest

from minifast.collab import ChecksumError, download_movielens, movielens_cache_dir, safe_extract

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens"
OFFICIAL = SHARED / "zips" / "official" / "ml-latest-small.zip"
needs_data = pytest.mark.skipif(not OFFICIAL.is_file(), reason="shared MovieLens data absent")
CLOSED_URL = "http://127.0.0.1:9/nothing-listens-here"


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def serve():
    """serve(folder) -> base URL of a local HTTP server for `folder` (stopped after the test)."""
    servers = []

    def start(folder: Path) -> str:
        srv = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
        srv.requests = []
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in ("MINIFAST_MOVIELENS_DIR", "MINIFAST_MOVIELENS_URL", "MINIFAST_CACHE"):
        monkeypatch.delenv(k, raising=False)


@needs_data
def test_local_folder_env_is_used_without_network(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIFAST_MOVIELENS_DIR", str(SHARED))
    monkeypatch.setenv("MINIFAST_MOVIELENS_URL", CLOSED_URL)
    assert download_movielens("ml-latest-small", dest=tmp_path) == SHARED / "ml-latest-small"
    assert download_movielens("ml-latest-small-2016") == SHARED / "ml-latest-small-2016"
    assert download_movielens("ml-100k", dest=tmp_path) == SHARED / "ml-100k"
    assert list(tmp_path.iterdir()) == []  # nothing copied


@needs_data
def test_real_download_checksum_and_extraction(monkeypatch, tmp_path, serve, capsys):
    url = serve(OFFICIAL.parent)
    monkeypatch.setenv("MINIFAST_MOVIELENS_URL", url + "/")
    path = download_movielens("ml-latest-small", dest=tmp_path / "cache", progress=True)
    assert path == tmp_path / "cache" / "ml-latest-small"
    for f in ("ratings.csv", "movies.csv", "links.csv", "tags.csv", "README.txt"):
        assert (path / f).read_bytes() == (SHARED / "ml-latest-small" / f).read_bytes()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["ml-latest-small"]
    assert "ml-latest-small.zip" in capsys.readouterr().err  # the tqdm bar
    # Second call: the extracted folder is used, the network is not touched.
    monkeypatch.setenv("MINIFAST_MOVIELENS_URL", CLOSED_URL)
    assert download_movielens("ml-latest-small", dest=tmp_path / "cache") == path


@needs_data
def test_default_cache_from_minifast_cache_env(monkeypatch, tmp_path, serve):
    url = serve(OFFICIAL.parent)
    monkeypatch.setenv("MINIFAST_MOVIELENS_URL", url)
    monkeypatch.setenv("MINIFAST_CACHE", str(tmp_path / "mf"))
    path = download_movielens(progress=False)
    assert path == tmp_path / "mf" / "movielens" / "ml-latest-small"
    assert (path / "ratings.csv").is_file()


@needs_data
def test_corrupt_download_raises_checksum_error_and_leaves_nothing(monkeypatch, tmp_path, serve):
    bad = tmp_path / "mirror"
    bad.mkdir()
    data = bytearray(OFFICIAL.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "ml-latest-small.zip").write_bytes(bytes(data))
    monkeypatch.setenv("MINIFAST_MOVIELENS_URL", serve(bad))
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="sha256 .* does not match the published 696d65a3"):
        download_movielens("ml-latest-small", dest=cache, progress=False)
    assert list(cache.iterdir()) == []  # no half folder, no temp leftovers


def test_missing_on_mirror_and_offline_give_connection_errors(monkeypatch, tmp_path, serve):
    monkeypatch.setenv("MINIFAST_MOVIELENS_URL", serve(tmp_path))  # serves an empty folder
    with pytest.raises(ConnectionError, match="404"):
        download_movielens("ml-100k", dest=tmp_path / "c1", progress=False)
    monkeypatch.setenv("MINIFAST_MOVIELENS_URL", CLOSED_URL)
    with pytest.raises(ConnectionError, match="MINIFAST_MOVIELENS_DIR"):
        download_movielens("ml-100k", dest=tmp_path / "c2", progress=False)
    assert list((tmp_path / "c1").iterdir()) == [] and list((tmp_path / "c2").iterdir()) == []


@pytest.mark.parametrize("name", ["ml-1m-typo", "../etc", "", "a/b"])
def test_unknown_or_unsafe_names(tmp_path, name):
    with pytest.raises(ValueError):
        download_movielens(name, dest=tmp_path)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    assert movielens_cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert movielens_cache_dir() == tmp_path / "xdg" / "minifast" / "movielens"
    monkeypatch.setenv("MINIFAST_CACHE", str(tmp_path / "mf"))
    assert movielens_cache_dir() == tmp_path / "mf" / "movielens"
    monkeypatch.delenv("MINIFAST_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert movielens_cache_dir() == Path.home() / ".cache" / "minifast" / "movielens"


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt",
                                    "C:/evil.txt", "link"])
def test_safe_extract_refuses_unsafe_members(tmp_path, member):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ok/fine.txt", "fine")
        if member == "link":
            info = zipfile.ZipInfo("ok/link")
            info.external_attr = (0o120777 << 16)  # a symbolic link
            z.writestr(info, "/etc/passwd")
        else:
            z.writestr(member, "evil")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="refusing"):
        safe_extract(archive, out)
    assert not out.exists()  # checked before anything was written
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_extracts_normal_archive(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("top/", "")
        z.writestr("top/f.txt", "hello")
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "top" / "f.txt").read_text() == "hello"
    assert os.listdir(tmp_path / "out") == ["top"]
