"""A private THPVM_CACHE for tests that damage or rebuild cache entries.

kernels/, images/, tools/ and accel/ are hard-linked copies of the shared cache's
entries (a test copies a file before damaging it, so the shared cache is never
touched; a rebuilt entry replaces only the private links). Kernel entries built
before seals existed are sealed in the copy, as a build would have. The default
source tree is a hard-linked copy without its object directory, and the build
directory is private too, so a rebuild neither waits for nor disturbs another
build in the shared tree; the shared ccache makes it mostly cache hits.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator import cache
from orchestrator.build import debian, kernel, sources
from orchestrator.build.git import OWNED_OBJ

COPIED_DIRS = ("kernels", "images", "tools", "accel")


def _link_copy(src: Path, dest: Path) -> None:
    subprocess.run(["cp", "-al", str(src), str(dest)], check=True)


def _copy_default_tree(shared: Path, priv: Path) -> None:
    """trees/<name>/<source> without .thpvm-obj*, and the slot's memoised configs."""
    tree = sources.debian_tree(debian.DEFAULT_VERSION)  # under `shared` (not switched yet)
    source = tree.path
    top = priv / "trees" / source.parent.name
    (top / source.name).mkdir(parents=True)
    for entry in source.iterdir():
        if not entry.name.startswith(OWNED_OBJ):
            _link_copy(entry, top / source.name / entry.name)
    shutil.copy2(source.parent / ".thpvm-complete", top / ".thpvm-complete")
    slot = tree.slot
    memo = priv / "build" / slot / "config"
    memo.mkdir(parents=True)
    for final in (shared / "build" / slot / "config").glob("final-*.config"):
        shutil.copy2(final, memo / final.name)


def make_private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Set THPVM_CACHE to a private copy of the shared cache (see the module doc)."""
    shared = cache.cache_root()
    if not (shared / "kernels").is_dir() or not (shared / "images").is_dir():
        pytest.skip("needs a built default kernel and image in the shared cache")
    priv = tmp_path / "cache"
    priv.mkdir()
    (priv / "ccache").symlink_to(shared / "ccache")
    _copy_default_tree(shared, priv)
    for name in COPIED_DIRS:
        if (shared / name).exists():
            _link_copy(shared / name, priv / name)
    for entry in (priv / "kernels").iterdir():
        if not (entry / cache.SEAL).exists() and (entry / "metadata.json").exists():
            cache.seal(entry, kernel.KERNEL_FILES)
    monkeypatch.setenv("THPVM_CACHE", str(priv))
    return priv
