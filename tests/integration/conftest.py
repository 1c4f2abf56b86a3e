"""Every test in this directory drives real builds, QEMU guests and SSH."""

import pytest
from qemu_procs import TAG_VAR, kill_all, new_tag, qemu_pids, wait_gone


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def qemu_tag(monkeypatch):
    """A unique tag in the environment: every QEMU this test starts (in-process or via a
    thpvm child) inherits it, so the test's QEMUs are told from other jobs' guests."""
    tag = new_tag()
    monkeypatch.setenv(TAG_VAR, tag)
    return tag


@pytest.fixture
def no_leaked_qemu(qemu_tag):
    """Fails the test if any QEMU it started is alive after it (others' guests ignored)."""
    before = qemu_pids(qemu_tag)
    yield qemu_tag
    leaked = wait_gone(qemu_tag, before, seconds=2.0)
    kill_all(leaked)
    assert not leaked, f"QEMU processes outlived the test: {leaked}"
