"""The leak check attributes QEMU to the test that started it, never to another job."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from qemu_procs import TAG_VAR, qemu_pids, wait_gone

QEMU_IDLE = ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
             "-S", "-monitor", "none"]


def _wait_running(pid: int, tag: str | None) -> None:
    deadline = time.monotonic() + 30
    while pid not in qemu_pids(tag):
        assert time.monotonic() < deadline, f"QEMU {pid} never showed up"
        time.sleep(0.05)


def _orphan(env: dict[str, str]) -> int:
    """Start an idle QEMU through a parent that exits at once (re-parented to init)."""
    out = subprocess.run(
        [sys.executable, "-c", "import subprocess as s, sys; print(s.Popen(sys.argv[1:], "
         "start_new_session=True, stdin=s.DEVNULL, stdout=s.DEVNULL, stderr=s.DEVNULL).pid)",
         *QEMU_IDLE], env=env, capture_output=True, text=True, check=True, timeout=60)
    return int(out.stdout)


def test_foreign_qemu_is_not_the_tests_but_its_own_orphan_is(qemu_tag, tmp_path):
    # another job's guest: not our descendant (double fork) and without our tag
    env = {k: v for k, v in os.environ.items() if k != TAG_VAR}
    foreign_pid = _orphan(env)
    # our own QEMU, orphaned the same way (as if thpvm had been SIGKILLed): tagged
    our_pid = _orphan(dict(os.environ))
    try:
        _wait_running(foreign_pid, None)
        _wait_running(our_pid, qemu_tag)
        mine = qemu_pids(qemu_tag)
        assert our_pid in mine
        assert foreign_pid not in mine
        assert foreign_pid in qemu_pids()
    finally:
        for pid in (foreign_pid, our_pid):
            os.kill(pid, 9)
    assert not wait_gone(qemu_tag, set(), 10.0)
