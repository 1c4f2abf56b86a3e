"""A booted guest with a shell: accelerator choice (KVM probe, TCG fallback),
QEMU, readiness, SSH. One context manager that never leaks QEMU."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.build import image
from orchestrator.errors import GuestError, InfraError
from orchestrator.machine import qemu
from orchestrator.machine.console import ConsoleEvent
from orchestrator.machine.guest import SshShell

log = logging.getLogger(__name__)

HANG_PROBE_TIMEOUT = 15.0


@dataclass
class Guest:
    """A running guest: the VM, its SSH shell, and how it was booted."""

    vm: qemu.Vm
    shell: SshShell
    accel: str
    accel_reason: str
    boot_seconds: float  # QEMU start → readiness marker
    ssh_seconds: float  # readiness marker → SSH session up

    def collect_dmesg(self, dest: Path) -> None:
        """dmesg into `dest`, over SSH if the guest is alive, else from the serial log."""
        try:
            if self.vm.crash() is None:
                res = self.shell.run("dmesg", timeout=30)
                if res.ok:
                    dest.write_text(res.stdout)
                    return
        except GuestError as e:
            log.info("dmesg over SSH failed (%s); using the serial log", e.message)
        serial = self.vm.req.run_dir / "serial.log"
        dest.write_text(serial.read_text(errors="replace") if serial.exists() else "")


    def diagnose_lost(self) -> ConsoleEvent | None:
        """After a failed guest command: the kernel crash the console saw, or a `hang`
        event if QEMU runs but the guest no longer answers a fresh SSH session."""
        console = self.vm.console
        if console is None:
            return None
        crash = console.severe()
        if crash is not None:
            return crash
        if not self.vm.alive():  # recorded for the report, but not a kernel failure
            code = self.vm.popen.returncode if self.vm.popen else None
            console.add_event("exited", [f"QEMU exited (status {code}) without a kernel crash"])
            return None
        probe = SshShell("127.0.0.1", self.vm.port, self.vm.req.image.ssh_key,
                         self.vm.req.image.host_key_pub)
        try:
            probe.connect(timeout=HANG_PROBE_TIMEOUT)
            probe.run("true", timeout=HANG_PROBE_TIMEOUT)
            return None  # the guest answers: the failure was not the kernel's
        except GuestError:
            serial = self.vm.req.run_dir / "serial.log"
            tail = serial.read_text(errors="replace").splitlines()[-20:] if serial.exists() else []
            return console.add_event("hang", [
                f"guest unresponsive: no SSH answer within {HANG_PROBE_TIMEOUT:.0f} s, console "
                f"silent for {console.idle_seconds():.0f} s", *tail])
        finally:
            probe.close()


def _boot(req: qemu.BootRequest) -> tuple[qemu.Vm, SshShell, float]:
    vm = qemu.Vm(req)
    vm.__enter__()
    try:
        shell = SshShell("127.0.0.1", vm.port, req.image.ssh_key, req.image.host_key_pub)
        ssh_seconds = shell.connect(timeout=60)
        res = shell.run("true", timeout=30)
        if not res.ok:
            raise GuestError("guest shell does not work: `true` failed")
        return vm, shell, ssh_seconds
    except BaseException:
        vm.stop()
        raise


@contextmanager
def guest(kernel: Path, img: image.Image, run_dir: Path, accel: str = "auto",
          append: str = "", profile: str = "default") -> Iterator[Guest]:
    """Boot a guest and yield it; QEMU is stopped on every way out."""
    choice = qemu.choose_accel(accel)
    prof = qemu.load_machine_profile(profile)
    req = qemu.BootRequest(kernel, img, run_dir, prof, choice.accel, append)
    reason = choice.reason
    if choice.probe_needed:
        vm, shell, ssh_s, reason = _probe_kvm(req)
    else:
        vm, shell, ssh_s = _boot(req)
    log.info("booted with %s (%s) in %.2f s + SSH %.2f s", req.accel, reason,
             vm.boot_seconds, ssh_s)
    g = Guest(vm, shell, req.accel, reason, vm.boot_seconds, ssh_s)
    try:
        yield g
    except GuestError as e:
        crash = g.diagnose_lost()
        if crash is not None:  # say why the guest was lost
            e.message += f" (kernel {crash.kind}: {crash.lines[0][:160]})"
            e.detail = "\n".join(crash.lines)
        raise
    finally:
        g.collect_dmesg(run_dir / "dmesg.txt")  # every run, even a failed one
        shell.close()
        vm.stop()


def _probe_kvm(req: qemu.BootRequest) -> tuple[qemu.Vm, SshShell, float, str]:
    """Boot with KVM; if it does not reach SSH quickly, remember TCG and boot with it."""
    req.accel, req.probe_s = "kvm", qemu.KVM_VERDICT_S
    start = time.monotonic()
    try:
        vm, shell, ssh_s = _boot(req)
        reason = f"KVM probe boot reached SSH in {time.monotonic() - start:.1f} s"
        qemu.remember_accel("kvm", reason)
        req.probe_s = 0.0
        return vm, shell, ssh_s, reason
    except InfraError as e:
        reason = (f"KVM probe failed in {time.monotonic() - start:.1f} s "
                  f"({e.message.splitlines()[0][:160]}); using TCG")
        log.warning("%s", reason)
        qemu.remember_accel("tcg", reason)
    for f in ("serial.log", "qemu.log"):
        p = req.run_dir / f
        if p.exists():
            p.rename(req.run_dir / f"kvm-probe-{f}")
    req.accel, req.probe_s = "tcg", 0.0
    vm, shell, ssh_s = _boot(req)
    return vm, shell, ssh_s, reason
