"""Guest faults on real QEMU (issue 15 rows 1, 2, 4, 5, 6, 13): each fault ends
with the right exit code and classification, within its deadline, no QEMU left.

QEMU processes are attributed to a test by its run directory (the overlay disk
lives there), so other jobs' guests on a shared host do not count."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator.errors import GuestTimeout
from orchestrator.machine import session
from orchestrator.machine.guest import SshShell
from orchestrator.report.resultfile import validate_result

WORKLOAD = "fault-target"
# a workload that keeps the guest busy long enough to inject a fault into it
SLOW_SPEC = """format = 1
name = "fault-target"
description = "touch a page, then sleep: a target for fault injection"

[[regions]]
name = "a"
pmds = 1

[[steps]]
op = "touch"
region = "a"
pages = "0"

[[steps]]
op = "sleep"
ms = 120000

[[steps]]
op = "checkpoint"
label = "end"
"""


def qemu_of(run_dir: Path) -> list[int]:
    """PIDs of QEMU processes whose command line names `run_dir`."""
    out = subprocess.run(["pgrep", "-f", f"^qemu-system-x86_64 .*{re.escape(str(run_dir))}/"],
                         capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def thpvm(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until(cond: Callable[[], bool], timeout: float, child: subprocess.Popen[str],
               what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if child.poll() is not None:
            pytest.fail(f"thpvm exited ({child.returncode}) before {what}:\n"
                        f"{child.communicate()[0][-3000:]}")
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.2)


def finish(child: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    try:
        out, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.communicate()
        pytest.fail(f"thpvm did not end within {timeout:.0f} s:\n{out[-3000:]}")
    return child.returncode, out


def result_of(run_dir: Path) -> dict:
    result = json.loads((run_dir / "result.json").read_text())
    validate_result(result)
    assert (run_dir / "junit.xml").exists() and (run_dir / "report.html").exists()
    return result


def vm_test_until_workload(out: Path, before: Callable[[], None] = lambda: None,
                           extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """Start a vm-test with one workload (`extra`: more thpvm options); call `before`
    once the guest is ready, and return once the workload's driver is being set up."""
    spec = out.parent / f"{WORKLOAD}.toml"
    spec.write_text(SLOW_SPEC)
    # one shared guest: its files (serial.log, qemu-argv.json) are the run directory's own
    child = thpvm("workload", "run", "--accel", "tcg", "--isolation", "shared",
                  "--out", str(out), *extra, str(spec))
    serial = out / "serial.log"
    wait_until(lambda: serial.exists() and "THPVM-READY-" in serial.read_text(errors="replace"),
               1500, child, "the guest's readiness")
    before()
    wait_until(lambda: (out / "workloads" / WORKLOAD / "driver-input.txt").exists(), 300,
               child, "workload start")
    return child


def guest_port(out: Path) -> int:
    """The SSH port QEMU bound (it picks one itself: qemu-argv.json says :0)."""
    return int((out / "ssh-port").read_text())


def test_sigstopped_qemu_is_infrastructure_within_budget(default_kernel, guest_image, tmp_path):
    """Row 1 + 4: QEMU stopped on the host mid-workload: 125 'qemu-stopped', not a hang."""
    out = tmp_path / "run"
    child = vm_test_until_workload(out)
    [pid] = qemu_of(out)
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    code, printed = finish(child, 300)
    print(f"SIGSTOP: exit {code} after {time.monotonic() - stopped:.1f} s")
    result = result_of(out)
    assert code == 125 and result["verdict"] == "could-not-test"
    lost = result["metadata"]["guest_lost"]
    assert (lost["kind"], lost["kernel_failure"]) == ("qemu-stopped", False)
    assert "stopped on the host" in result["reason"]
    assert (out / "dmesg.txt").exists() and (out / "serial.log").exists()
    assert not qemu_of(out), "QEMU outlived thpvm"
    assert "Traceback" not in printed


def test_killed_sshd_is_a_lost_channel_not_a_kernel_failure(default_kernel, guest_image,
                                                             tmp_path):
    """Row 4 + 13: sshd killed in a healthy guest: 125 'ssh-lost', a few lines of output."""
    out = tmp_path / "run"
    img = guest_image
    killer = SshShell("127.0.0.1", 0, img.ssh_key, img.host_key_pub)

    def connect() -> None:
        killer.port = guest_port(out)
        killer.connect(timeout=60)

    child = vm_test_until_workload(out)
    time.sleep(2)  # the driver runs now (its sleep step lasts 120 s)
    connect()
    try:
        killer.run("kill -9 $(pidof sshd)", timeout=30)
    except Exception:  # noqa: BLE001  our own session dies with sshd
        pass
    finally:
        killer.close()
    killed = time.monotonic()
    code, printed = finish(child, 300)
    print(f"sshd killed: exit {code} after {time.monotonic() - killed:.1f} s")
    result = result_of(out)
    assert code == 125 and result["verdict"] == "could-not-test"
    lost = result["metadata"]["guest_lost"]
    assert (lost["kind"], lost["kernel_failure"]) == ("ssh-lost", False)
    assert not [e for e in result["console"]["events"] if e["kind"] in ("hang", "panic")]
    assert not qemu_of(out)
    assert "Traceback" not in printed
    print(f"sshd killed: {len(printed.splitlines())} lines of output")
    assert len(printed.splitlines()) < 30, printed


def test_signals_are_named_and_a_frozen_guest_is_a_hang(default_kernel, guest_image, tmp_path):
    """Row 6: a command killed by a signal is named (the session survives); row 4: a
    guest whose console shell and sshd stop answering while QEMU runs is a hang."""
    with session.guest(default_kernel.bzimage, guest_image, tmp_path, accel="tcg") as g:
        res = g.shell.run("kill -SEGV $$")
        assert (res.exit_code, res.signal) == (139, "SIGSEGV")
        res = g.shell.run("sh -c 'kill -KILL $$'; echo rc=$?")
        assert res.ok and res.stdout == "rc=137\n"
        assert g.shell.run("echo still here").stdout == "still here\n"
        with pytest.raises(GuestTimeout):
            g.shell.run("kill -STOP -1; sleep 1000", timeout=10)
        d = g.diagnose()
        print(f"frozen guest: {d.kind} in {d.seconds:.1f} s")
        assert (d.kind, d.kernel_failure) == ("hang", True)
        assert g.kernel_failure() is not None and not g.usable()
    assert (tmp_path / "dmesg.txt").exists()
    assert not qemu_of(tmp_path)


def test_many_commands_read_to_eof(default_kernel, guest_image, tmp_path):
    """Row 5: multi-KiB outputs on stdout and stderr, 0 truncations (the same commands
    as bench/guest_commands.py, which runs 10,000 of them)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import guest_commands as bench

    count = int(os.environ.get("THPVM_TEST_COMMANDS", "120"))
    with session.guest(default_kernel.bzimage, guest_image, tmp_path, accel="tcg") as g:
        def one(i: int) -> bool:
            return bench.check(i, g.shell.run(bench.command(i), timeout=300))

        with ThreadPoolExecutor(6) as pool:
            ok = list(pool.map(one, range(count)))
    assert ok.count(False) == 0, f"{ok.count(False)} of {count} commands truncated"
    assert not qemu_of(tmp_path)


def test_sigterm_during_dmesg_collection_leaves_no_qemu(default_kernel, guest_image, tmp_path):
    """Row 2: SIGTERM while the session's cleanup collects dmesg: 130, QEMU stopped."""
    out = tmp_path / "run"
    slow_dmesg = ("mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho THPVM-DMESG-%s "
                  ">/dev/console\\nexec sleep 600\\n' CALLED > /usr/local/bin/dmesg && "
                  "chmod +x /usr/local/bin/dmesg")
    child = thpvm("boot", "--accel", "tcg", "--out", str(out), slow_dmesg)
    serial = out / "serial.log"
    wait_until(lambda: serial.exists() and "THPVM-DMESG-CALLED" in serial.read_text(
        errors="replace"), 900, child, "the dmesg collection")
    assert qemu_of(out)
    child.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code, printed = finish(child, 60)
    print(f"SIGTERM during dmesg: exit {code} after {time.monotonic() - sent:.1f} s")
    assert code == 130, printed
    assert not qemu_of(out), "QEMU outlived thpvm after SIGTERM during dmesg collection"
