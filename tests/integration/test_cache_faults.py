"""Issue 15 rows 8-9 against real cache entries: truncated artifacts and corrupt JSON
are found on use and rebuilt with a log line; the run then passes.

Every test works in a private THPVM_CACHE: kernels/, images/, tools/ and accel/ are
hard-linked copies of the shared cache's entries (a file is copied before it is
damaged, so the shared cache is never touched), while the source trees, build
directories and ccache are shared read-mostly (a rebuild is an incremental make).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from cachecopy import make_private_cache

from orchestrator import cache
from orchestrator.build import image, kernel
from orchestrator.cli import main
from orchestrator.suites.selftest import runner as selftest
from orchestrator.suites.workloads import driver


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_private_cache(tmp_path, monkeypatch)


def damage(path: Path, keep: int | None = None, text: str | None = None) -> None:
    """Give `path` its own inode (never write through a hard link), then truncate it to
    `keep` bytes (default: half) or overwrite it with `text`."""
    own = path.with_name(path.name + ".own")
    shutil.copy2(path, own)
    own.replace(path)
    path.chmod(0o644)
    if text is not None:
        path.write_text(text)
        return
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2 if keep is None else keep)


def rebuilt(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "rebuilding it" in r.getMessage()]


def test_truncated_bzimage_and_driver_are_rebuilt_and_the_run_passes(
        private_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        no_leaked_qemu: None) -> None:
    caplog.set_level(logging.INFO)
    art = kernel.build_kernel(kernel.KernelRequest())  # sealed in the private cache
    drv = driver.driver_binary()
    good_size = art.bzimage.stat().st_size
    damage(art.bzimage)
    damage(drv, keep=100)
    caplog.clear()

    out = tmp_path / "run"
    code = main(["vm-test", "--out", str(out), "--suite", "workloads:full-pmd-collapse"])

    messages = rebuilt(caplog)
    assert any(f"kernel cache entry {art.dir}" in m and "bzImage has" in m for m in messages)
    assert any("workload driver" in m and "thpwork has 100 bytes" in m for m in messages)
    assert code == 0, (out / "result.json").read_text()
    assert art.bzimage.stat().st_size == good_size and cache.verify(art.dir) is None
    assert (out / "result.json").exists() and (out / "junit.xml").exists()


def test_truncated_selftest_binary_is_rebuilt(private_cache: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    art = kernel.build_kernel(kernel.KernelRequest())
    binary = selftest.build_selftest(art)
    size = binary.stat().st_size
    damage(binary)
    caplog.clear()
    again = selftest.build_selftest(art)
    assert again == binary and binary.stat().st_size == size
    assert any("selftest cache entry" in m and "khugepaged has" in m for m in rebuilt(caplog))
    assert cache.verify(binary.parent) is None


def test_truncated_and_changed_qcow2_are_not_cache_hits(private_cache: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    img = image.build_image()  # adopts (or is) a sealed entry
    assert cache.verify(img.dir) is None
    damage(img.qcow2, keep=1 << 20)
    assert "rootfs.qcow2 has 1048576 bytes" in (cache.verify(img.dir) or "")
    assert not image._usable(img.dir)
    assert any("image cache entry" in m for m in rebuilt(caplog))


def test_corrupt_kernel_metadata_and_accel_verdict_are_rebuilt(
        private_cache: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    art = kernel.build_kernel(kernel.KernelRequest())
    damage(art.dir / "metadata.json", text='{"kernel_release": ')
    for verdict in (private_cache / "accel").glob("*.json"):
        damage(verdict, text="{not json")
    caplog.clear()
    assert main(["kernel", "build", "--json"]) == 0
    out = capsys.readouterr().out
    assert f'"kernel_release": "{art.release}"' in out
    assert any("metadata.json" in m for m in rebuilt(caplog))
    from orchestrator.machine import qemu

    assert qemu.choose_accel("auto").accel in ("kvm", "tcg")  # no traceback
