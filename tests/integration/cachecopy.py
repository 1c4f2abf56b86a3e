"""A private THPVM_CACHE for tests that damage or rebuild cache entries.

kernels/, images/, tools/ and accel/ are hard-linked copies of the shared cache's
entries (a test copies a file before damaging it, so the shared cache is never
touched, and a rebuilt entry replaces only the private links), while the source
trees, build directories and ccache are shared (a rebuild is an incremental make
under the same per-tree lock as every other build).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator import cache

SHARED_DIRS = ("trees", "build", "ccache", "worktrees")
COPIED_DIRS = ("kernels", "images", "tools", "accel")


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shared = cache.cache_root()
    if not (shared / "kernels").is_dir() or not (shared / "images").is_dir():
        pytest.skip("needs a built default kernel and image in the shared cache")
    priv = tmp_path / "cache"
    priv.mkdir()
    for name in SHARED_DIRS:
        if (shared / name).exists():
            (priv / name).symlink_to(shared / name)
    for name in COPIED_DIRS:
        if (shared / name).exists():
            subprocess.run(["cp", "-al", str(shared / name), str(priv / name)], check=True)
    monkeypatch.setenv("THPVM_CACHE", str(priv))
    return priv
