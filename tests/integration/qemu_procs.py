"""Which QEMU processes belong to this test (to prove none outlives thpvm).

The host is shared: other jobs' guests come and go during a test, so counting
every QEMU on the host gives false leaks. A test's QEMUs are attributed two
ways, either suffices:

- the environment tag `THPVM_TEST_TAG=<unique>` the test set before starting
  thpvm (in-process or as a child): QEMU inherits it, and keeps it after thpvm
  dies and QEMU is re-parented, which is exactly the leak to catch;
- ancestry: a QEMU descending from this pytest process (a test that cleared the
  environment of its child).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

TAG_VAR = "THPVM_TEST_TAG"
PROC = Path("/proc")


def new_tag() -> str:
    return f"thpvm-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _read(pid: int, name: str) -> bytes:
    try:
        return (PROC / str(pid) / name).read_bytes()
    except OSError:  # gone, or not ours to read
        return b""


def _is_qemu(pid: int) -> bool:
    argv0 = _read(pid, "cmdline").split(b"\0", 1)[0]
    return os.path.basename(argv0).startswith(b"qemu-system-")


def _ppid(pid: int) -> int:
    stat = _read(pid, "stat")
    fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]) if len(fields) > 1 else 0


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):
        pid = _ppid(pid)
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def qemu_pids(tag: str | None = None) -> set[int]:
    """Running QEMU processes; with `tag`, only those carrying the test's tag in their
    environment or descending from this process."""
    pids = {int(p.name) for p in PROC.iterdir() if p.name.isdigit()}
    qemus = {p for p in pids if _is_qemu(p)}
    if tag is None:
        return qemus
    needle = f"{TAG_VAR}={tag}".encode()
    return {p for p in qemus
            if needle in _read(p, "environ").split(b"\0") or _descends_from(p, os.getpid())}


def wait_gone(tag: str, before: set[int], seconds: float) -> set[int]:
    """The test's QEMUs (not in `before`) still alive after waiting up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        alive = qemu_pids(tag) - before
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def kill_all(pids: set[int]) -> None:
    """SIGKILL leaked QEMUs so one test's leak does not spill into the next."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
