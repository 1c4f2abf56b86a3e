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


# ---------------------------------------------------------------- seals (issue 15 rows 8-9)

def _entry(tmp_path: Path) -> Path:
    entry = tmp_path / "entry"
    (entry / "sub").mkdir(parents=True)
    (entry / "bzImage").write_bytes(b"k" * 10000)
    (entry / "sub" / "bin").write_bytes(b"b" * 100)
    cache.seal(entry, ["bzImage", "sub/bin"])
    return entry


def test_a_sealed_entry_verifies(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    assert cache.verify(entry) is None
    assert len((entry / cache.SEAL).read_text().splitlines()) == 2


def test_missing_or_malformed_seal_means_not_built(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    (entry / cache.SEAL).write_text("garbage\n")
    assert "malformed" in (cache.verify(entry) or "")
    (entry / cache.SEAL).unlink()
    assert "missing" in (cache.verify(entry) or "")
    assert "missing" in (cache.verify(tmp_path / "nothing") or "")


def test_truncated_file_is_named(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    with open(entry / "bzImage", "r+b") as fh:
        fh.truncate(4096)
    why = cache.verify(entry) or ""
    assert "bzImage has 4096 bytes, 10000 when it was built" in why


def test_same_size_change_is_a_checksum_mismatch(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    (entry / "sub" / "bin").write_bytes(b"x" * 100)
    assert "sub/bin changed since it was built" in (cache.verify(entry) or "")
    (entry / "sub" / "bin").unlink()
    assert "sub/bin is missing" in (cache.verify(entry) or "")


def test_a_copy_with_new_mtimes_is_rehashed_once_and_restamped(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    seal_before = (entry / cache.SEAL).read_text()
    os.utime(entry / "bzImage", ns=(1, 1))
    assert cache.verify(entry) is None
    seal_after = (entry / cache.SEAL).read_text()
    assert seal_after != seal_before and " 10000 1 bzImage" in seal_after
    assert cache.verify(entry) is None


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "\xff\xfe", "null"])
def test_corrupt_json_entries_read_as_missing(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(text, errors="surrogateescape")
    assert cache.read_json_entry(path) is None
    assert cache.read_json_entry(tmp_path / "absent.json") is None
    path.write_text('{"accel": "tcg"}')
    assert cache.read_json_entry(path) == {"accel": "tcg"}


def test_corrupt_accel_verdict_means_probe_again(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.machine import qemu

    monkeypatch.setattr(qemu, "qemu_version", lambda: "QEMU emulator version 0")
    monkeypatch.setattr(qemu.os, "access", lambda *a: True)
    path = tmp_path / "verdict.json"
    monkeypatch.setattr(qemu, "_verdict_path", lambda: path)
    for text in ("{not json", '{"accel": "warp"}', "[]"):
        path.write_text(text)
        choice = qemu.choose_accel("auto")
        assert choice.probe_needed and choice.accel == "kvm"
    qemu.remember_accel("tcg", "probe failed")
    assert qemu.choose_accel("auto").accel == "tcg"
