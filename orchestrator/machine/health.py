"""The one crash authority: when the guest stops answering, did the kernel die
(a test failure, exit 1) or only thpvm's way to it (infrastructure, exit 125)?

Every stage asks here (boot, selftest, workloads, dmesg collection); nothing
else decides. The evidence, cheapest first, each step with its own deadline:

1. the console: a panic, oops/BUG or lockup the kernel printed  → kernel failure
2. QEMU's process: exited (after the console drained)            → `qemu-exited` (infra),
   unless the console then shows a kernel crash (panic=-1 -no-reboot exits QEMU)
3. QEMU's process group: stopped by a signal (state T)           → `qemu-stopped` (infra)
4. QMP `query-status`: no answer within QMP_TIMEOUT              → `qemu-unresponsive` (infra);
   paused or any status but running                               → `qemu-paused` (infra);
   `guest-panicked`                                               → kernel failure
5. the serial console's root shell: does it echo a fresh token?
   no, within CONSOLE_PROBE_TIMEOUT, while QEMU runs               → `hang` (kernel failure)
6. a fresh SSH session: the console answers but SSH does not     → `ssh-lost` (infra);
   both answer                                                     → `alive` (the one
   command or channel failed, not the guest)

After a failed command a kernel hang is found within QMP_TIMEOUT +
CONSOLE_PROBE_TIMEOUT (< 60 s); while a command runs, `Watch` finds it within
PROBE_EVERY + CONSOLE_PROBE_TIMEOUT (< 60 s) of its start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import GuestError
from orchestrator.machine import qemu
from orchestrator.machine.console import KERNEL_FAILURES, ConsoleEvent

log = logging.getLogger(__name__)

QMP_TIMEOUT = 5.0
CONSOLE_PROBE_TIMEOUT = 40.0
PROBE_EVERY = 10.0  # console probes while a guest operation runs (see Watch); a real
# two-vCPU hard lockup was found 42-52 s after it began at host load 15-20 (worst case
# PROBE_EVERY + LIVENESS_EVERY + CONSOLE_PROBE_TIMEOUT = 52 s)
SSH_PROBE_TIMEOUT = 15.0
DRAIN_TIMEOUT = 5.0  # for the console thread to read what QEMU wrote before exiting
INFRA_KINDS = ("qemu-exited", "qemu-stopped", "qemu-paused", "qemu-unresponsive", "ssh-lost")


@dataclass(frozen=True)
class Diagnosis:
    """The verdict on a guest that stopped answering (or `alive`)."""

    kind: str  # a console kind (panic, oops, lockup, hang), one of INFRA_KINDS, or alive
    summary: str
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0  # how long the diagnosis took

    @property
    def kernel_failure(self) -> bool:
        return self.kind in KERNEL_FAILURES

    @property
    def alive(self) -> bool:
        return self.kind == "alive"

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "kernel_failure": self.kernel_failure,
                "summary": self.summary, "seconds": round(self.seconds, 2),
                "lines": self.lines[-30:]}


def kernel_failure(vm: qemu.Vm) -> ConsoleEvent | None:
    """The first panic/oops/lockup/hang the kernel showed so far (a WARN is not one,
    and QEMU merely exiting is not one). Cheap: no probing."""
    return vm.console.severe() if vm.console is not None else None


def host_fault(vm: qemu.Vm) -> Diagnosis | None:
    """Host-side reasons the guest cannot answer, from QEMU's process alone (cheap:
    no guest round trip): it exited, or it is stopped. None if it runs."""
    if vm.popen is None:
        return Diagnosis("qemu-exited", "QEMU is not running")
    code = vm.popen.poll()
    if code is not None:
        _drain(vm)
        crash = kernel_failure(vm)
        if crash is not None:
            return _from_event(crash)
        return Diagnosis("qemu-exited", f"QEMU exited with status {code} without a "
                         "kernel crash on the console")
    stopped = stopped_pids(vm.popen.pid)
    if stopped:
        return Diagnosis("qemu-stopped", f"QEMU was stopped on the host (process "
                         f"{', '.join(map(str, stopped))} in state T): not the kernel's fault")
    return None


def check_host(vm: qemu.Vm) -> None:
    """`SshShell.liveness`: raise GuestError as soon as QEMU cannot answer."""
    fault = host_fault(vm)
    if fault is not None:
        raise GuestError(f"guest lost: {fault.summary}")


class Watch:
    """`SshShell.liveness` for one guest, called by every operation's watchdog every
    few seconds: QEMU's process state each time, the console shell every PROBE_EVERY
    s. So a stopped QEMU ends an SSH wait within seconds and a silent kernel hang
    within PROBE_EVERY + CONSOLE_PROBE_TIMEOUT, whatever the command's own deadline.
    What it found is kept in `found` for `diagnose`."""

    def __init__(self, vm: qemu.Vm, probe_every: float = PROBE_EVERY) -> None:
        self.vm, self.every = vm, probe_every
        self.last_probe = time.monotonic()
        self.found: Diagnosis | None = None
        self._probing = threading.Lock()

    def __call__(self) -> None:
        fault = host_fault(self.vm)
        if fault is None and time.monotonic() - self.last_probe >= self.every:
            fault = self._probe()
        if fault is not None:
            self.found = self.found or fault
            raise GuestError(f"guest lost: {fault.summary}")

    def _probe(self) -> Diagnosis | None:
        if not self._probing.acquire(blocking=False):
            return None  # another operation's watchdog is probing right now
        start = time.monotonic()
        try:
            console = self.vm.console
            if console is None or console.probe(CONSOLE_PROBE_TIMEOUT):
                return None
            d = silent_console(self.vm)
            return Diagnosis(d.kind, d.summary, d.lines, time.monotonic() - start)
        finally:
            self.last_probe = time.monotonic()
            self._probing.release()


def diagnose(vm: qemu.Vm, ssh_probe: Callable[[float], bool],
             found: Diagnosis | None = None) -> Diagnosis:
    """Classify a guest that failed to answer; see the module docstring.
    `ssh_probe(timeout)` tries a fresh SSH session and says whether it answered;
    `found` is what a `Watch` already established (then nothing is probed again)."""
    start = time.monotonic()
    d = found or _diagnose(vm, ssh_probe)
    if found is None:
        d = Diagnosis(d.kind, d.summary, d.lines, time.monotonic() - start)
    if d.kind == "hang" and vm.console is not None:
        vm.console.add_event("hang", [d.summary, *d.lines])
    elif d.kind == "qemu-exited" and vm.console is not None:
        vm.console.add_event("exited", [d.summary])
    log.warning("guest diagnosis: %s (%s) in %.1f s", d.kind, d.summary, d.seconds)
    return d


def _crash_or_host_fault(vm: qemu.Vm) -> Diagnosis | None:
    """A kernel failure on the console first (it outranks what followed), then QEMU
    gone, stopped or paused on the host."""
    crash = kernel_failure(vm)
    if crash is not None:
        return _from_event(crash)
    return host_fault(vm) or _qmp_fault(vm)


def _diagnose(vm: qemu.Vm, ssh_probe: Callable[[float], bool]) -> Diagnosis:
    found = _crash_or_host_fault(vm)
    if found is not None:
        return found
    if vm.console is not None and not vm.console.probe(CONSOLE_PROBE_TIMEOUT):
        return silent_console(vm)
    if ssh_probe(SSH_PROBE_TIMEOUT):
        return Diagnosis("alive", "the guest answers on the console and over a new SSH session")
    return Diagnosis("ssh-lost", "SSH lost while the kernel still answers on the serial "
                     "console (sshd or the network, not the kernel)")


def silent_console(vm: qemu.Vm) -> Diagnosis:
    """The console shell did not answer: a crash printed meanwhile, QEMU gone or
    stopped meanwhile, or else a kernel hang."""
    found = _crash_or_host_fault(vm)
    if found is not None:
        return found
    idle = vm.console.idle_seconds() if vm.console is not None else 0.0
    return Diagnosis("hang", f"kernel hang: QEMU runs, but the serial console's shell did "
                     f"not answer within {CONSOLE_PROBE_TIMEOUT:.0f} s (console silent for "
                     f"{idle:.0f} s)", _serial_tail(vm))


def _qmp_fault(vm: qemu.Vm) -> Diagnosis | None:
    try:
        resp = vm.qmp("query-status", timeout=QMP_TIMEOUT)
    except (OSError, ValueError) as e:
        fault = host_fault(vm)  # stopped or exited while we asked?
        return fault or Diagnosis("qemu-unresponsive", f"QEMU did not answer QMP "
                                  f"query-status within {QMP_TIMEOUT:.0f} s ({e})")
    ret = resp.get("return")
    status = ret.get("status") if isinstance(ret, dict) else None
    if status == "running":
        return None
    if status == "guest-panicked":
        return Diagnosis("panic", "QEMU reports the guest panicked (query-status)")
    return Diagnosis("qemu-paused", f"QEMU is not running the guest: query-status says "
                     f"{status or resp}")


def stopped_pids(pgid: int) -> list[int]:
    """Processes of the process group `pgid` (QEMU's) in stopped state (T or t)."""
    stopped = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] in ("T", "t"):
            stopped.append(int(entry.name))
    return stopped


def _drain(vm: qemu.Vm) -> None:
    if vm.console is not None:
        vm.console.wait_closed(DRAIN_TIMEOUT)


def _from_event(ev: ConsoleEvent) -> Diagnosis:
    return Diagnosis(ev.kind, f"kernel {ev.kind}: {ev.lines[0][:160] if ev.lines else ''}",
                     list(ev.lines))


def _serial_tail(vm: qemu.Vm, lines: int = 20) -> list[str]:
    serial = vm.req.run_dir / "serial.log"
    try:
        return serial.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []
