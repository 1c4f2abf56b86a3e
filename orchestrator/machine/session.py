"""A booted guest with a shell: accelerator choice (KVM probe, TCG fallback),
QEMU, readiness, SSH. One context manager that never leaks QEMU."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.build import image
from orchestrator.errors import BootError, GuestError, GuestLost, InfraError
from orchestrator.machine import health, qemu
from orchestrator.machine.console import ConsoleEvent
from orchestrator.machine.guest import SshShell

log = logging.getLogger(__name__)

KVM_PROBE_TIMEOUT = 30.0
DMESG_TIMEOUT = 30.0


@dataclass
class Guest:
    """A running guest: the VM, its SSH shell, and how it was booted. Whether the
    kernel died is asked here (`kernel_failure`, `diagnose`), and nowhere else."""

    vm: qemu.Vm
    shell: SshShell
    accel: str
    accel_reason: str
    boot_seconds: float  # QEMU start → readiness marker
    ssh_seconds: float  # readiness marker → SSH session up
    lost: health.Diagnosis | None = None  # set once the guest stopped answering

    def kernel_failure(self) -> ConsoleEvent | None:
        """The panic/oops/lockup/hang the kernel showed so far, or None (cheap)."""
        return health.kernel_failure(self.vm)

    def usable(self) -> bool:
        """Worth sending another command: no kernel failure, QEMU runs, not lost."""
        return (self.lost is None or self.lost.alive) and self.kernel_failure() is None \
            and health.host_fault(self.vm) is None

    def diagnose(self) -> health.Diagnosis:
        """After a failed guest command: kernel failure, infrastructure, or alive
        (the verdict of `health.diagnose`, remembered for the rest of the run)."""
        if self.lost is not None and not self.lost.alive:
            return self.lost
        self.lost = health.diagnose(self.vm, self._ssh_answers)
        if self.lost.alive and self.shell.client is None:  # closed by a deadline
            self.shell.connect(timeout=health.SSH_PROBE_TIMEOUT)
        return self.lost

    def _ssh_answers(self, timeout: float) -> bool:
        probe = SshShell("127.0.0.1", self.vm.port, self.vm.req.image.ssh_key,
                         self.vm.req.image.host_key_pub)
        try:
            probe.connect(timeout=timeout)
            return probe.run("true", timeout=timeout).ok
        except GuestError:
            return False
        finally:
            probe.close()

    def collect_dmesg(self, dest: Path) -> None:
        """dmesg into `dest`, over SSH if the guest is usable, else from the serial log."""
        try:
            if self.usable():
                res = self.shell.run("dmesg", timeout=DMESG_TIMEOUT)
                if res.ok:
                    dest.write_text(res.stdout)
                    return
        except GuestError as e:
            log.warning("dmesg over SSH failed (%s); using the serial log", e.message)
        serial = self.vm.req.run_dir / "serial.log"
        dest.write_text(serial.read_text(errors="replace") if serial.exists() else "")


def _boot(req: qemu.BootRequest) -> tuple[qemu.Vm, SshShell, float]:
    vm = qemu.Vm(req)
    vm.__enter__()
    try:
        shell = SshShell("127.0.0.1", vm.port, req.image.ssh_key, req.image.host_key_pub,
                         liveness=lambda: health.check_host(vm))
        ssh_seconds = shell.connect(timeout=60)
        res = shell.run("true", timeout=30)
        if not res.ok:
            raise GuestError("guest shell does not work: `true` failed")
        return vm, shell, ssh_seconds
    except GuestError as e:
        d = health.diagnose(vm, lambda timeout: False)  # SSH just failed: why?
        vm.stop()
        raise BootError(f"guest booted but {e.message} ({d.kind}: {d.summary})",
                        "\n".join(d.lines) or e.detail) from e
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
        d = g.diagnose()
        if not d.alive and not isinstance(e, GuestLost):  # say why the guest was lost
            e.message += f" ({d.kind}: {d.summary})"
            e.detail = "\n".join(d.lines) or e.detail
        raise
    finally:  # QEMU is stopped whatever interrupts the dmesg collection or the close
        try:
            g.collect_dmesg(run_dir / "dmesg.txt")  # every run, even a failed one
        finally:
            try:
                shell.close()
            finally:
                vm.stop()


def _probe_kvm(req: qemu.BootRequest) -> tuple[qemu.Vm, SshShell, float, str]:
    """Boot with KVM; if it does not reach SSH quickly, remember TCG and boot with it."""
    req.accel, req.ready_timeout = "kvm", KVM_PROBE_TIMEOUT
    try:
        vm, shell, ssh_s = _boot(req)
        reason = "KVM probe boot reached SSH"
        qemu.remember_accel("kvm", reason)
        req.ready_timeout = qemu.BootRequest.ready_timeout
        return vm, shell, ssh_s, reason
    except InfraError as e:
        reason = f"KVM probe failed ({e.message.splitlines()[0][:160]}); using TCG"
        log.warning("%s", reason)
        qemu.remember_accel("tcg", reason)
    for f in ("serial.log", "qemu.log"):
        p = req.run_dir / f
        if p.exists():
            p.rename(req.run_dir / f"kvm-probe-{f}")
    req.accel, req.ready_timeout = "tcg", qemu.BootRequest.ready_timeout
    vm, shell, ssh_s = _boot(req)
    return vm, shell, ssh_s, reason
