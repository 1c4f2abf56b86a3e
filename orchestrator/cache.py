"""Cache directory layout and content-addressed keys.

Everything thpvm builds lives under one root, outside the repository:
`$THPVM_CACHE`, else `$XDG_CACHE_HOME/thpvm`, else `~/.cache/thpvm`.

    trees/<package>/          extracted Debian linux-source trees (build/debian.py)
    apt/                      private apt configuration for fetching them
    worktrees/<key>/          exported git revisions of user trees
    build/<key>/              persistent out-of-tree build dirs (incremental make)
    kernels/<key>/            finished kernel artifacts, keyed by content
    images/<key>/             guest base images, keyed by recipe content
    tools/<key>/              host-built guest tools (workload driver)
    runs/<id>/                run directories (unless --out)
    ccache/                   compiler cache

The root and every directory thpvm creates under it are private (0700): the
cache holds SSH keys and the guests' disks.

Every finished entry (a kernel, its selftest binary, an image, a tool) carries a
seal, `<entry>/.sha256`, written LAST: the sha256, size and mtime of each of its
files. `verify` checks it on use; a missing or mismatching seal means "not built",
and the caller rebuilds the entry with a log line naming what was wrong. The full
hash is computed only when a file's size+mtime stamp changed (a hard-linked or
`cp -p` copy keeps it), so a verified 300 MB image costs a stat, not a second.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.errors import UserError

log = logging.getLogger(__name__)

SEAL = ".sha256"


def cache_root() -> Path:
    """The cache root, from THPVM_CACHE, XDG_CACHE_HOME or ~/.cache."""
    if os.environ.get("THPVM_CACHE"):
        return Path(os.environ["THPVM_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "thpvm"


def cache_dir(*parts: str) -> Path:
    """A directory under the cache root, created on demand (0700, like the root)."""
    root = cache_root()
    _private_dir(root)
    st = root.stat()
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.chmod(root, 0o700)
    path = root
    for part in parts:
        path = path / part
        _private_dir(path)
    return path


def _private_dir(path: Path) -> None:
    """Create `path` 0700 (missing parents too); an existing directory is left as it is."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return
    except FileNotFoundError:
        _private_dir(path.parent)
        path.mkdir(mode=0o700, exist_ok=True)


def digest(*items: str | bytes, length: int = 16) -> str:
    """A short, stable content hash of strings/bytes (order matters)."""
    h = hashlib.sha256()
    for item in items:
        data = item.encode() if isinstance(item, str) else item
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:length]


def new_run_dir(label: str = "run") -> Path:
    """A fresh run directory under the cache: runs/<timestamp>-<label>-<n>."""
    runs = cache_dir("runs")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = runs / f"{stamp}-{label}-{n}"
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
    raise RuntimeError("could not create a run directory")


def write_json(path: Path, data: object) -> None:
    """Write JSON atomically (write to a temp file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def prune_runs(keep: int, busy: Callable[[Path], bool] | None = None) -> list[Path]:
    """Delete all but the `keep` newest run directories under the cache's runs/
    (never a `--out` directory elsewhere, never one `busy` says is in use);
    returns what was deleted."""
    if keep < 0:
        raise ValueError("keep must be >= 0")
    runs = sorted((p for p in cache_dir("runs").iterdir() if p.is_dir()),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    doomed = [p for p in runs[keep:] if busy is None or not busy(p)]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


@contextmanager
def locked(path: Path, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created on demand) for the `with` body.

    Waits for the holder by default (builds shared through the cache). With `busy`,
    does not wait: another holder is a UserError with that message (one bisect or
    validate per scratch clone).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy else 0))
        except BlockingIOError as e:
            raise UserError(busy or f"{path} is locked") from e
        yield
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    """sha256 of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def seal(entry: Path, files: Iterable[str]) -> None:
    """Write `entry/.sha256` for `files` (relative paths): call it after the last artifact."""
    _write_seal(entry, [(file_sha256(entry / name), name) for name in files])


def _write_seal(entry: Path, digests: list[tuple[str, str]]) -> None:
    lines = []
    for digest_hex, name in sorted(digests, key=lambda d: d[1]):
        size, mtime = _stamp(entry / name)
        lines.append(f"{digest_hex} {size} {mtime} {name}\n")
    tmp = entry / (SEAL + ".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(entry / SEAL)


def verify(entry: Path) -> str | None:
    """None if `entry` is sealed and every sealed file is intact, else what is wrong."""
    try:
        text = (entry / SEAL).read_text()
    except FileNotFoundError:
        return f"{entry / SEAL} is missing (an unfinished or older entry)"
    except OSError as e:
        return f"{entry / SEAL}: {e.strerror}"
    rows = [line.split(" ", 3) for line in text.splitlines()]
    if not rows or any(len(r) != 4 or not r[1].isdigit() or not r[2].isdigit() for r in rows):
        return f"{entry / SEAL} is malformed"
    restamp = False
    for digest_hex, size, mtime, name in rows:
        path = entry / name
        try:
            stamp = _stamp(path)
        except OSError:
            return f"{path} is missing"
        if stamp == (int(size), int(mtime)):
            continue
        if stamp[0] != int(size):
            return f"{path} has {stamp[0]} bytes, {size} when it was built (truncated?)"
        if file_sha256(path) != digest_hex:
            return f"{path} changed since it was built (checksum mismatch)"
        restamp = True
    if restamp:  # same content, new mtime (a copy): remember the new stamp
        _write_seal(entry, [(r[0], r[3]) for r in rows])
    return None


def read_json_entry(path: Path) -> dict[str, object] | None:
    """A JSON object from a cache file, or None (with a log line) if missing or corrupt."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        log.warning("cache entry %s is unreadable (%s): treating it as missing", path, e)
        return None
    if not isinstance(data, dict):
        log.warning("cache entry %s is not a JSON object: treating it as missing", path)
        return None
    return data
