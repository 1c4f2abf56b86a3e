"""Cache layout: root from the environment, content keys, run pruning."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestrator import cache
from orchestrator.cli import main


def test_root_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("THPVM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "thpvm"
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"


def test_digest_is_stable_and_order_sensitive() -> None:
    assert cache.digest("a", "b") == cache.digest("a", "b")
    assert cache.digest("a", "b") != cache.digest("b", "a")
    assert cache.digest("ab") != cache.digest("a", "b")  # length-prefixed


def test_prune_keeps_the_newest_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path))
    dirs = [cache.new_run_dir("t") for _ in range(4)]
    now = time.time()
    for age, d in enumerate(reversed(dirs)):  # dirs[-1] is the newest
        os.utime(d, (now - 100 * age, now - 100 * age))
    assert main(["runs", "--prune", "2"]) == 0
    assert [d.exists() for d in dirs] == [False, False, True, True]
    assert str(dirs[0]) in capsys.readouterr().out
    assert main(["runs", "--prune", "-1"]) == 2


def test_cache_dirs_are_private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tmp_path / "deep" / "cache"
    monkeypatch.setenv("THPVM_CACHE", str(root))
    kernels = cache.cache_dir("kernels", "abc")
    for d in (root, root / "kernels", kernels, cache.new_run_dir("x")):
        assert d.stat().st_mode & 0o777 == 0o700, d
    root.chmod(0o755)  # a root made by hand, or by an older thpvm
    cache.cache_dir("runs")
    assert root.stat().st_mode & 0o777 == 0o700
