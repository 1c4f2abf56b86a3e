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
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.errors import UserError


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
