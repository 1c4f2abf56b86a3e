"""Every test in this directory drives real builds, QEMU guests and SSH."""

import subprocess

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def qemu_pids() -> set[int]:
    """PIDs of running qemu-system-x86_64 processes (to prove none outlives thpvm)."""
    out = subprocess.run(["pgrep", "-x", "qemu-system-x86"], capture_output=True, text=True)
    out2 = subprocess.run(["pgrep", "-f", "^qemu-system-x86_64"], capture_output=True, text=True)
    return {int(p) for p in (out.stdout + out2.stdout).split()}


@pytest.fixture
def no_leaked_qemu():
    before = qemu_pids()
    yield
    leaked = qemu_pids() - before
    assert not leaked, f"QEMU processes outlived the test: {leaked}"
