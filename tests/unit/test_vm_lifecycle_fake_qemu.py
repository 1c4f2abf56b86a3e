"""qemu.Vm lifecycle against a FAKE QEMU (tests/fakes/qemu-system-x86_64, first on PATH).

The fake listens on the serial and QMP unix sockets from the argv thpvm builds,
prints boot lines and the marker from `-append`, answers QMP, and misbehaves on
request (FAKE_QEMU_MODE=panic|hang|ignore-quit|oops-after-ready|exit-after-ready).
The overlay (`qemu-img create`) and swap disk (`mkswap`) are made for real.
After every test, no fake QEMU process (nor its helper child) is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from process_helpers import gone, wait_gone

from orchestrator.build import image
from orchestrator.errors import BootError, GuestError
from orchestrator.machine import health, qemu

FAKES = Path(__file__).resolve().parent.parent / "fakes"
PROFILE = qemu.MachineProfile("fake", 256, 1, "q35", "", 1, "console=ttyS0 panic=-1 loglevel=5")


@pytest.fixture(autouse=True)
def fake_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FAKE_QEMU_MODE", raising=False)


@pytest.fixture
def req(tmp_path: Path) -> qemu.BootRequest:
    img_dir = tmp_path / "image"
    img_dir.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img_dir / "rootfs.qcow2"),
                    "4M"], check=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "bzImage").write_bytes(b"not a kernel")
    return qemu.BootRequest(kernel=tmp_path / "bzImage", image=image.Image(img_dir, "x"),
                            run_dir=run_dir, profile=PROFILE, ready_timeout=5)


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Pids a test saw; after the test every one must be gone (and is killed if not)."""
    seen: list[int] = []
    yield seen
    leaked = [p for p in seen if not wait_gone([p])]
    for p in leaked:
        os.kill(p, 9)
    assert not leaked, f"fake QEMU processes left behind: {leaked}"


def clamp_waits(vm: qemu.Vm, limit: float = 0.3) -> None:
    """Shorten the fixed QMP-quit / kill waits of Vm.stop so a wedged fake costs < 1 s."""
    assert vm.popen is not None
    real: Callable[..., int] = vm.popen.wait

    def wait(timeout: float | None = None) -> int:
        return real(timeout=limit if timeout is None else min(timeout, limit))

    vm.popen.wait = wait  # type: ignore[method-assign]


def test_fake_qemu_is_found_first() -> None:
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True)
    assert "thpvm fake" in out.stdout


def test_vm_reaches_ready_and_stops(req: qemu.BootRequest, pids: list[int]) -> None:
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
        assert vm.alive()
        assert 0 < vm.boot_seconds < 5
        assert re.fullmatch(r"THPVM-READY-[0-9a-f]{12}", vm.marker)
        assert 1024 < vm.port < 65536
        assert health.kernel_failure(vm) is None and health.host_fault(vm) is None
        assert vm.qmp("query-status")["return"] == {"status": "running", "running": True}
        socks = vm._socks
        assert socks is not None and (socks / "serial.sock").exists()
        assert socks.stat().st_mode & 0o777 == 0o700
        lease = json.loads((req.run_dir / "qemu-lease.json").read_text())
        assert lease["qemu"][0] == vm.popen.pid and lease["thpvm"][0] == os.getpid()
        assert (socks / "qemu-lease.json").exists()
    assert not vm.alive() and vm.popen.returncode == 0  # left through QMP quit
    assert not (req.run_dir / "qemu-lease.json").exists()  # released in order
    assert gone(vm.popen.pid)
    assert socks is not None and not socks.exists()
    assert [e.kind for e in vm.events] == ["ready"]

    run = req.run_dir
    argv = json.loads((run / "qemu-argv.json").read_text())
    assert argv[0] == "qemu-system-x86_64"
    assert f"thpvm.marker={vm.marker}" in argv[argv.index("-append") + 1]
    # QEMU binds the port itself (no race with another process); thpvm read it over QMP
    assert "hostfwd=tcp:127.0.0.1:0-:22" in argv[argv.index("-netdev") + 1]
    serial = (run / "serial.log").read_bytes().decode()
    assert f"{vm.marker}\r\n" in serial and "Run /sbin/thpvm-init as init process" in serial
    log = (run / "qemu.log").read_text()
    assert "fake-qemu: serial client connected" in log and "fake-qemu: QMP quit" in log
    # the overlay and swap disk are real and in the run directory
    info = subprocess.run(["qemu-img", "info", "--output=json", str(run / "rootfs-overlay.qcow2")],
                          capture_output=True, text=True, check=True).stdout
    assert json.loads(info)["backing-filename"] == str(req.image.qcow2)
    assert (run / "swap.img").stat().st_size == 1 << 20
    assert b"SWAPSPACE2" in (run / "swap.img").read_bytes()[:4096]


def test_no_swap_disk_without_swap_in_profile(req: qemu.BootRequest, pids: list[int]) -> None:
    req.profile = qemu.MachineProfile("fake", 256, 1, "q35", "", 0, "console=ttyS0")
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
    argv = json.loads((req.run_dir / "qemu-argv.json").read_text())
    assert "thpvm.swap" not in argv[argv.index("-append") + 1]
    assert not (req.run_dir / "swap.img").exists()


def test_panic_at_boot_raises_boot_error(req: qemu.BootRequest, pids: list[int],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "panic")
    vm = qemu.Vm(req)
    start = time.monotonic()
    with pytest.raises(BootError) as info:
        with vm:
            pytest.fail("the with block must not run")
    assert time.monotonic() - start < 3
    assert vm.popen is not None
    pids.append(vm.popen.pid)
    err = info.value
    assert err.message.startswith("guest did not boot: panic")
    assert str(req.run_dir / "serial.log") in err.message
    assert err.detail.splitlines()[0] == (
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)")
    assert err.exit_code == 125
    assert gone(vm.popen.pid)


def test_hang_raises_boot_error_after_ready_timeout(req: qemu.BootRequest, pids: list[int],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")
    req.ready_timeout = 0.5
    vm = qemu.Vm(req)
    start = time.monotonic()
    with pytest.raises(BootError, match="no readiness marker within"):
        vm.start()
    elapsed = time.monotonic() - start
    assert vm.popen is not None
    pids.append(vm.popen.pid)
    # waited for the ready timeout, not the default 120 s (the bound is loose: process
    # start-up and the QMP port read-back on a loaded host come on top)
    assert 0.5 <= elapsed < 30
    assert gone(vm.popen.pid)
    assert (req.run_dir / "serial.log").read_text() == ""


def test_qemu_exiting_before_the_marker_says_so(req: qemu.BootRequest, pids: list[int],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 row 8: not "no readiness marker within 120 s" when QEMU is gone."""
    monkeypatch.setenv("FAKE_QEMU_MODE", "exit-at-boot")
    monkeypatch.setenv("FAKE_QEMU_EXIT", "1")
    vm = qemu.Vm(req)
    with pytest.raises(BootError, match=r"QEMU exited with status 1 after [\d.]+ s") as info:
        vm.start()
    assert vm.popen is not None
    pids.append(vm.popen.pid)
    assert "within" not in info.value.message and info.value.exit_code == 125
    assert gone(vm.popen.pid)


def test_ignore_quit_is_killed(req: qemu.BootRequest, pids: list[int],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "ignore-quit")
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
        clamp_waits(vm)
    helper = re.search(r"helper pid (\d+)", (req.run_dir / "qemu.log").read_text())
    assert helper
    pids.append(int(helper.group(1)))
    assert "QMP quit ignored" in (req.run_dir / "qemu.log").read_text()
    assert vm.popen.returncode == -9  # SIGTERM ignored: SIGKILL
    assert gone(vm.popen.pid)
    assert wait_gone([int(helper.group(1))])  # the whole process group


def test_exception_in_with_block_still_kills(req: qemu.BootRequest, pids: list[int],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "ignore-quit")
    with pytest.raises(RuntimeError, match="test body failed"):
        with qemu.Vm(req) as vm:
            assert vm.popen is not None
            pids.append(vm.popen.pid)
            clamp_waits(vm)
            raise RuntimeError("test body failed")
    assert gone(pids[0])


def test_keyboard_interrupt_in_with_block_still_kills(req: qemu.BootRequest,
                                                      pids: list[int]) -> None:
    with pytest.raises(KeyboardInterrupt):
        with qemu.Vm(req) as vm:
            assert vm.popen is not None
            pids.append(vm.popen.pid)
            raise KeyboardInterrupt
    assert gone(pids[0])


def test_crash_after_ready_is_reported(req: qemu.BootRequest, pids: list[int],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "oops-after-ready")
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
        assert vm.console is not None
        ev = vm.console.wait_for(("oops",), timeout=3)
        assert ev is not None and ev.kind == "oops"
        crash = health.kernel_failure(vm)
        assert crash is not None and crash.kind == "oops"
        assert vm.alive()  # QEMU itself still runs
        time.sleep(0.2)  # the rest of the report
    assert [e.kind for e in vm.events] == ["ready", "oops", "panic"]
    # (the head line "BUG: unable to handle page fault" is glued to the shell prompt
    # "# " on the console, see test_console.test_kernel_line_after_prompt_is_classified)
    assert "RIP: 0010:hpage_collapse_scan_pmd+0x1a2/0x5c0" in vm.events[1].lines
    assert vm.popen.returncode == 0


def test_qemu_exit_after_ready_is_an_exited_crash(req: qemu.BootRequest, pids: list[int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "exit-after-ready")
    monkeypatch.setenv("FAKE_QEMU_EXIT", "3")
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
        vm.popen.wait(timeout=3)
        fault = health.host_fault(vm)
        assert fault is not None and fault.kind == "qemu-exited"
        assert fault.summary.startswith("QEMU exited with status 3")
        assert health.kernel_failure(vm) is None
        assert not vm.alive()


def test_interrupt_during_stop_still_kills(req: qemu.BootRequest,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "ignore-quit")
    vm = qemu.Vm(req)
    vm.start()
    assert vm.popen is not None
    pid = vm.popen.pid
    real = vm.popen.wait
    interrupted: list[float | None] = []

    def wait(timeout: float | None = None) -> int:
        if not interrupted:  # the first wait is the one after QMP quit
            interrupted.append(timeout)
            raise KeyboardInterrupt  # what the SIGINT/SIGTERM handler raises
        return real(timeout=min(timeout or 0.3, 0.3))

    vm.popen.wait = wait  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            vm.stop()
        assert interrupted == [5]
        alive = not wait_gone([pid], timeout=0.5)
    finally:
        if vm.popen.poll() is None:
            os.killpg(pid, 9)
            real(timeout=2)
        if vm.console is not None:
            vm.console.close()
    assert not alive


def test_stop_is_idempotent(req: qemu.BootRequest, pids: list[int]) -> None:
    vm = qemu.Vm(req)
    vm.start()
    assert vm.popen is not None
    pids.append(vm.popen.pid)
    vm.stop()
    vm.stop()
    assert gone(vm.popen.pid)


def test_qemu_exiting_at_start_is_a_boot_error_naming_its_message(
        req: qemu.BootRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A QEMU that quits by itself (a bad option, KVM failing) is not retried: the
    error says it exited and quotes QEMU's own message."""
    bad = tmp_path / "bin"
    bad.mkdir()
    script = bad / "qemu-system-x86_64"
    script.write_text("#!/bin/sh\necho \"qemu-system-x86_64: error: failed to set MSR 0x10a to "
                      "0x69\"\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bad}{os.pathsep}{os.environ['PATH']}")
    calls: list[float] = []
    real_connect = qemu.ConsoleMonitor.connect

    def quick_connect(self: qemu.ConsoleMonitor, timeout: float = 10.0) -> None:
        calls.append(timeout)
        real_connect(self, timeout=0.5)  # the real 10 s wait, shortened

    monkeypatch.setattr(qemu.ConsoleMonitor, "connect", quick_connect)
    vm = qemu.Vm(req)
    with pytest.raises(BootError, match="QEMU exited with status 1 before the guest ran: "
                                        "qemu-system-x86_64: error: failed to set MSR") as info:
        with vm:
            pytest.fail("the with block must not run")
    assert vm._socks is None  # the socket directory is removed
    assert len(calls) == 1
    assert "failed to set MSR" in info.value.detail
    assert len(json.loads((req.run_dir / "qemu-argv.json").read_text())) > 10


def test_qemu_not_opening_its_sockets_is_retried_then_boot_error(
        req: qemu.BootRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        pids: list[int]) -> None:
    bad = tmp_path / "bin"
    bad.mkdir()
    script = bad / "qemu-system-x86_64"
    script.write_text("#!/bin/sh\necho $$ >> \"$FAKE_PIDS\"\nexec sleep 60\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bad}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PIDS", str(tmp_path / "pids"))
    real_connect = qemu.ConsoleMonitor.connect
    monkeypatch.setattr(qemu.ConsoleMonitor, "connect",
                        lambda self, timeout=10.0: real_connect(self, timeout=0.2))
    with pytest.raises(BootError, match="did not open its sockets 3 times"):
        with qemu.Vm(req):
            pytest.fail("the with block must not run")
    pids += [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 3


def test_probe_fails_fast_on_a_failed_vm_status(req: qemu.BootRequest, pids: list[int],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """KVM's failure mode where QEMU stays up but the VM stopped: QMP says so."""
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")
    monkeypatch.setenv("FAKE_QEMU_STATUS", "internal-error")
    req.probe_s, req.ready_timeout = 30.0, 60.0
    vm = qemu.Vm(req)
    with pytest.raises(BootError, match="QEMU reports the VM internal-error"):  # not a timeout
        with vm:
            pytest.fail("the with block must not run")
    assert vm.popen is not None
    pids.append(vm.popen.pid)


def test_probe_fails_a_silent_guest_without_guest_cpu_time(req: qemu.BootRequest,
                                                          pids: list[int],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")  # prints nothing; a process never in a guest
    req.probe_s, req.ready_timeout = 0.5, 60.0
    vm = qemu.Vm(req)
    with pytest.raises(BootError, match="no guest code ran and the console stayed silent"):
        with vm:
            pytest.fail("the with block must not run")
    assert vm.popen is not None
    pids.append(vm.popen.pid)


def test_probe_lets_a_running_guest_boot(req: qemu.BootRequest, pids: list[int]) -> None:
    req.probe_s = 5.0
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
        assert [e.kind for e in vm.console.events] == ["ready"]  # type: ignore[union-attr]


def test_guest_cpu_seconds_of_a_plain_process_is_zero() -> None:
    assert qemu.guest_cpu_seconds(os.getpid()) == 0.0
    assert qemu.guest_cpu_seconds(2**22 + 12345) == 0.0  # no such process


# ----------------------------------------------- the crash authority (machine/health.py)


@pytest.fixture
def quick_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "CONSOLE_PROBE_TIMEOUT", 1.0)
    monkeypatch.setattr(health, "QMP_TIMEOUT", 1.0)


def _diagnose(vm: qemu.Vm, ssh_answers: bool) -> health.Diagnosis:
    return health.diagnose(vm, lambda timeout: ssh_answers)


def test_console_answers_ssh_does_not_is_ssh_lost(req: qemu.BootRequest, pids: list[int]) -> None:
    with qemu.Vm(req) as vm:
        assert vm.popen is not None and vm.console is not None
        pids.append(vm.popen.pid)
        assert vm.console.probe(5.0)
        d = _diagnose(vm, ssh_answers=False)
        assert (d.kind, d.kernel_failure) == ("ssh-lost", False)
        assert _diagnose(vm, ssh_answers=True).alive
    assert "THPVM-ALIVE-42-" in (req.run_dir / "serial.log").read_text()


def test_silent_console_in_a_running_qemu_is_a_kernel_hang(
        req: qemu.BootRequest, pids: list[int], monkeypatch: pytest.MonkeyPatch,
        quick_probes: None) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "mute-after-ready")
    with qemu.Vm(req) as vm:
        assert vm.popen is not None and vm.console is not None
        pids.append(vm.popen.pid)
        d = _diagnose(vm, ssh_answers=False)
        assert (d.kind, d.kernel_failure) == ("hang", True)
        assert "serial console's shell did not answer" in d.summary
        assert health.kernel_failure(vm) is not None  # recorded as a console event
    assert [e.kind for e in vm.events] == ["ready", "hang"]


def test_console_crash_is_a_kernel_failure(req: qemu.BootRequest, pids: list[int],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "oops-after-ready")
    with qemu.Vm(req) as vm:
        assert vm.popen is not None and vm.console is not None
        pids.append(vm.popen.pid)
        assert vm.console.wait_for(("oops",), timeout=3) is not None
        d = _diagnose(vm, ssh_answers=True)
        assert (d.kind, d.kernel_failure) == ("oops", True)


def test_qemu_exit_without_crash_is_infrastructure(req: qemu.BootRequest, pids: list[int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "exit-after-ready")
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
        vm.popen.wait(timeout=3)
        d = _diagnose(vm, ssh_answers=False)
        assert (d.kind, d.kernel_failure) == ("qemu-exited", False)
        with pytest.raises(GuestError, match="QEMU exited with status 3"):
            health.check_host(vm)
    assert "exited" in [e.kind for e in vm.events]


def test_stopped_qemu_is_infrastructure_and_still_killed(
        req: qemu.BootRequest, pids: list[int], quick_probes: None) -> None:
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
        clamp_waits(vm)
        os.kill(vm.popen.pid, signal.SIGSTOP)
        d = _diagnose(vm, ssh_answers=False)
        assert (d.kind, d.kernel_failure) == ("qemu-stopped", False)
        assert str(vm.popen.pid) in d.summary
    assert gone(pids[0])


def test_paused_guest_is_infrastructure(req: qemu.BootRequest, pids: list[int],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_STATUS", "paused")
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
        d = _diagnose(vm, ssh_answers=True)
        assert (d.kind, d.kernel_failure) == ("qemu-paused", False)
        assert "paused" in d.summary


def test_watch_probes_the_console_while_commands_run(
        req: qemu.BootRequest, pids: list[int], monkeypatch: pytest.MonkeyPatch,
        quick_probes: None) -> None:
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
        watch = health.Watch(vm, probe_every=0)
        watch()  # the console shell answers: nothing found
        assert watch.found is None
    monkeypatch.setenv("FAKE_QEMU_MODE", "mute-after-ready")
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
        watch = health.Watch(vm, probe_every=0)
        with pytest.raises(GuestError, match="kernel hang"):
            watch()
        assert watch.found is not None and watch.found.kind == "hang"
        d = health.diagnose(vm, lambda timeout: True, watch.found)
        assert d is watch.found  # nothing probed again
    assert [e.kind for e in vm.events] == ["ready", "hang"]


def test_a_failed_apic_timer_calibration_boots_again(req: qemu.BootRequest, pids: list[int],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """A boot whose APIC timer calibration failed (busy host) is replaced at once."""
    monkeypatch.setenv("FAKE_QEMU_MODE", "bad-timer")
    monkeypatch.setenv("FAKE_QEMU_BAD_BOOTS", "1")
    monkeypatch.setenv("FAKE_QEMU_COUNT_FILE", str(tmp_path / "boots"))
    with qemu.Vm(req) as vm:
        assert vm.popen is not None
        pids.append(vm.popen.pid)
        assert (tmp_path / "boots").read_text() == "2"
    serial = (req.run_dir / "serial.log").read_text()
    assert "APIC frequency too slow" in serial and vm.marker in serial


def test_apic_timer_failing_every_boot_is_a_boot_error(req: qemu.BootRequest, pids: list[int],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "bad-timer")
    vm = qemu.Vm(req)
    with pytest.raises(BootError, match="APIC timer calibration failed 3 times") as info:
        vm.start()
    assert vm.popen is not None and gone(vm.popen.pid)
    assert info.value.exit_code == 125
