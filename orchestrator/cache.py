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
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """The cache root, from THPVM_CACHE, XDG_CACHE_HOME or ~/.cache."""
    if os.environ.get("THPVM_CACHE"):
        return Path(os.environ["THPVM_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "thpvm"


def cache_dir(*parts: str) -> Path:
    """A directory under the cache root, created on demand."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


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
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError("could not create a run directory")


def write_json(path: Path, data: object) -> None:
    """Write JSON atomically (write to a temp file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def prune_runs(keep: int) -> list[Path]:
    """Delete all but the `keep` newest run directories under the cache's runs/
    (never a `--out` directory elsewhere); returns what was deleted."""
    if keep < 0:
        raise ValueError("keep must be >= 0")
    runs = sorted((p for p in cache_dir("runs").iterdir() if p.is_dir()),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    doomed = runs[keep:]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created on demand) for the block: waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
