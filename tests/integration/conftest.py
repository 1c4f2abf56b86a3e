"""Every test in this directory drives real builds, QEMU guests and SSH."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from qemu_procs import TAG_VAR, kill_all, new_tag, qemu_pids, wait_gone

DEBUG = str(Path(__file__).resolve().parents[2] / "kconfigs" / "debug.config")
#: Kernels that tests later in the session build, by the test files that need them. On a
#: cold cache they are built in the background from the start, as an mm developer would,
#: and a test needing one waits on its build lock and then finds it cached. Each variant of
#: a tree has its own object directory and lock (build/kernel.py), so the foreground's
#: builds of the same tree are not held up. They are niced, but with scheduler autogroups
#: that does not reach the makes yet: proc.run starts each child in a new session, i.e. a
#: new autogroup, so a background make gets as much CPU as the tests' own (measured in the
#: second cold CI run of session 4).
PREBUILD = {
    ("--fragment", DEBUG): ("test_hang_real.py", "test_warn_real.py", "test_workloads_real.py",
                            "test_matrix_real.py"),
    ("--tree", "debian:7.2", "--fragment", DEBUG): ("test_kernel_72.py", "test_workloads_72.py"),
}


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


@pytest.fixture(scope="session", autouse=True)
def prebuilt_kernels(request, tmp_path_factory):
    """Start the background builds of the kernels the selected tests need (see PREBUILD);
    stop any still running when the session ends. Their output: prebuild-*.log."""
    files = {Path(str(item.fspath)).name for item in request.session.items}
    thpvm = Path(sys.executable).with_name("thpvm")
    logs = tmp_path_factory.mktemp("prebuild")
    builds = []
    for i, (args, needed_by) in enumerate(PREBUILD.items()):
        if files & set(needed_by) and not os.environ.get("THPVM_TEST_NO_PREBUILD"):
            with open(logs / f"prebuild-{i}.log", "w") as out:
                builds.append(subprocess.Popen(
                    ["nice", "-n", "19", str(thpvm), "kernel", "build", *args],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    process_group=0))  # not a new session: that is a new autogroup, in
                # which nice means nothing against the tests (measured: the tests' own
                # cold build got a third of the CPU)
    yield builds
    for b in builds:
        if b.poll() is None:
            os.killpg(b.pid, signal.SIGTERM)
            b.wait(timeout=60)
