"""Every test in this directory drives real builds, QEMU guests and SSH."""

import pytest
from qemu_procs import qemu_pids


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def no_leaked_qemu():
    before = qemu_pids()
    yield
    leaked = qemu_pids() - before
    assert not leaked, f"QEMU processes outlived the test: {leaked}"
