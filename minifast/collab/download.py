"""MovieLens download: cached, checksum-verified, safely extracted, atomically published.

`download_movielens(name)` returns the data set's folder; its docstring says where it looks
first and how a download is checked.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

__all__ = [
    "download_movielens",
    "movielens_cache_dir",
    "ChecksumError",
    "MOVIELENS_SHA256",
    "MOVIELENS_URL",
    "safe_extract",
]

#: GroupLens's download folder; `$MINIFAST_MOVIELENS_URL` replaces it (a mirror).
MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens"

#: Published sha256 of the official archives (what a download must match).
MOVIELENS_SHA256 = {
    "ml-latest-small": "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
    "ml-100k": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
}

_CHUNK = 1 << 16


class ChecksumError(ValueError):
    """A downloaded archive's sha256 does not match the published one."""


def movielens_cache_dir(dest: str | os.PathLike | None = None) -> Path:
    """The folder that holds downloaded data sets: `dest` when given, else
    `$MINIFAST_CACHE/movielens`, else `$XDG_CACHE_HOME/minifast/movielens`, else
    `~/.cache/minifast/movielens`."""
    if dest is not None:
        return Path(dest).expanduser()
    if os.environ.get("MINIFAST_CACHE"):
        return Path(os.environ["MINIFAST_CACHE"]).expanduser() / "movielens"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "minifast" / "movielens"


def download_movielens(
    name: str = "ml-latest-small",
    dest: str | os.PathLike | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """The folder of MovieLens data set `name` (`"ml-latest-small"` or `"ml-100k"`), downloading
    and extracting it on first use.

    `dest` overrides the cache folder. Any data set name found under `$MINIFAST_MOVIELENS_DIR`
    (e.g. `ml-latest-small-2016`) is returned from there; only the two names above can be
    downloaded. Raises `ChecksumError` if the archive is not the published one,
    `ConnectionError` if it cannot be fetched (with what to do offline).

    Where a data set comes from, first match wins:

    1. `$MINIFAST_MOVIELENS_DIR/NAME` — a local folder already holding extracted data sets
       (offline machines, tests); used in place, never copied or modified.
    2. `CACHE/NAME` — extracted by an earlier call; used without touching the network. A folder
       only appears there once complete (see below), so its presence means it is whole.
    3. A download of `BASE/NAME.zip`, where BASE is `$MINIFAST_MOVIELENS_URL` (a mirror) or
       GroupLens's https://files.grouplens.org/datasets/movielens. The archive's sha256 must
       match the published one whatever the mirror; members with absolute paths, `..` or links
       are refused; extraction goes to a temporary folder beside the cache, renamed into place
       only when complete, so an interrupted run never leaves a half folder that looks done.

    CACHE is `dest` when given, else `$MINIFAST_CACHE/movielens`, else
    `$XDG_CACHE_HOME/minifast/movielens`, else `~/.cache/minifast/movielens`.
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"not a data set name: {name!r}")
    local = os.environ.get("MINIFAST_MOVIELENS_DIR")
    if local and (Path(local).expanduser() / name).is_dir():
        return Path(local).expanduser() / name
    cache = movielens_cache_dir(dest)
    target = cache / name
    if target.is_dir():
        return target
    if name not in MOVIELENS_SHA256:
        where = f" or under MINIFAST_MOVIELENS_DIR={local}" if local else ""
        raise ValueError(
            f"unknown MovieLens data set {name!r}: can download {sorted(MOVIELENS_SHA256)}; "
            f"{name!r} was not found in {cache}{where}"
        )
    base = os.environ.get("MINIFAST_MOVIELENS_URL") or MOVIELENS_URL
    url = f"{base.rstrip('/')}/{name}.zip"
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=cache))
    try:
        archive = tmp / f"{name}.zip"
        digest = _fetch(url, archive, progress, timeout)
        if digest != MOVIELENS_SHA256[name]:
            raise ChecksumError(
                f"{url}: sha256 {digest} does not match the published {MOVIELENS_SHA256[name]} "
                f"for {name}.zip (corrupt or altered download; nothing was kept)"
            )
        out = tmp / "extract"
        safe_extract(archive, out)
        src = _top_folder(out, name, url)
        try:
            os.replace(src, target)  # atomic publish: the folder appears complete or not at all
        except OSError:
            if not target.is_dir():  # someone else published it meanwhile: theirs is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _fetch(url: str, out: Path, progress: bool, timeout: float) -> str:
    """Stream `url` into `out` with a tqdm bar; return the sha256 hex digest."""
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    with out.open("wb") as f:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                total = int(r.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=out.name,
                          disable=not progress) as bar:
                    while chunk := r.read(_CHUNK):
                        f.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                TimeoutError) as e:
            why = (f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError)
                   else getattr(e, "reason", None) or e)
            raise ConnectionError(
                f"could not download {url}: {why}. Offline? Set "
                f"MINIFAST_MOVIELENS_DIR to a folder holding the extracted data set, or "
                f"MINIFAST_MOVIELENS_URL to a mirror's base URL"
            ) from e
    return h.hexdigest()


def safe_extract(archive: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Extract zip `archive` into `out`, refusing absolute paths, `..` and links.

    Every member is checked before anything is written.
    """
    out = Path(out)
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        for info in infos:
            name = info.filename
            p = PurePosixPath(name.replace("\\", "/"))
            if p.is_absolute() or name.startswith(("/", "\\")) or (
                len(name) > 1 and name[1] == ":"
            ):
                raise ValueError(f"{archive}: refusing member with an absolute path: {name!r}")
            if ".." in p.parts:
                raise ValueError(f"{archive}: refusing member with '..' in its path: {name!r}")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ValueError(f"{archive}: refusing symbolic link member: {name!r}")
        out.mkdir(parents=True, exist_ok=True)
        z.extractall(out)
    return out


def _top_folder(out: Path, name: str, url: str) -> Path:
    """The extracted data set folder: `out/name`, or the archive's single top folder."""
    if (out / name).is_dir():
        return out / name
    entries = [p for p in out.iterdir() if not p.name.startswith("__MACOSX")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    raise ValueError(f"{url}: expected one top folder {name}/ in the archive, found "
                     f"{sorted(p.name for p in entries)}")
