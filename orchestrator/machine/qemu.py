"""QEMU guests: machine profile → argv, accelerator probe, VM lifecycle.

QEMU is a child thpvm owns: started through `proc.spawn` in its own process
group, watched by a `ConsoleMonitor`, stopped over QMP and then killed (group)
in `finally`, including on SIGINT/SIGTERM (see `signals.py`). SSH is forwarded
from 127.0.0.1 only, on a port picked per boot (retried if taken).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import cache, proc
from orchestrator.build import image
from orchestrator.data import MACHINE_PROFILES_DIR
from orchestrator.errors import BootError, UserError
from orchestrator.machine.console import ConsoleEvent, ConsoleMonitor

log = logging.getLogger(__name__)

FIRMWARE_DIRS = (Path("/usr/share/qemu"), Path("/usr/share/seabios"))
GUEST_IP = "10.0.2.15"


@dataclass(frozen=True)
class MachineProfile:
    """Memory, CPUs, machine type, firmware and base command line of a guest."""

    name: str
    memory_mb: int
    cpus: int
    machine: str
    firmware: str
    swap_mb: int
    cmdline: str
    tcg_cpu: str = ""


def load_profile(name: str = "default") -> MachineProfile:
    """Load `orchestrator/profiles/<name>.toml` (or a path)."""
    path = Path(name) if name.endswith(".toml") else MACHINE_PROFILES_DIR / f"{name}.toml"
    try:
        data = tomllib.loads(path.read_text())
        return MachineProfile(str(data["name"]), int(data["memory_mb"]), int(data["cpus"]),
                              str(data["machine"]), str(data.get("firmware", "")),
                              int(data.get("swap_mb", 0)), str(data.get("cmdline", "")),
                              str(data.get("tcg_cpu", "")))
    except OSError as e:
        raise UserError(f"machine profile {path}: {e.strerror}") from e
    except (KeyError, ValueError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"machine profile {path}: bad or missing key: {e}") from e


@dataclass
class BootRequest:
    """Everything a boot needs."""

    kernel: Path
    image: image.Image
    run_dir: Path
    profile: MachineProfile
    accel: str = "tcg"  # resolved: "kvm" or "tcg"
    append: str = ""
    ready_timeout: float = 120.0


def qemu_version() -> str:
    """`qemu-system-x86_64 --version` first line."""
    return proc.run(["qemu-system-x86_64", "--version"], error=BootError).output.splitlines()[0]


def _firmware(name: str) -> list[str]:
    if not name:
        return []
    for d in FIRMWARE_DIRS:
        if (d / name).is_file():
            return ["-bios", str(d / name)]
    log.warning("firmware %s not found; using QEMU's default", name)
    return []


def build_argv(req: BootRequest, disks: dict[str, Path], port: int, socks: Path,
               marker: str) -> list[str]:
    """The QEMU argv for a boot (pure: no side effects)."""
    p = req.profile
    cmdline = " ".join(filter(None, [
        p.cmdline, "root=/dev/vda rw rootfstype=ext4 init=/sbin/thpvm-init",
        f"ip={GUEST_IP}::10.0.2.2:255.255.255.0::eth0:off",
        f"thpvm.marker={marker}", "thpvm.swap=/dev/vdb" if "swap" in disks else "",
        req.append]))
    accel = ["-accel", "kvm", "-cpu", "host"] if req.accel == "kvm" else \
        ["-accel", "tcg,thread=multi", *(["-cpu", p.tcg_cpu] if p.tcg_cpu else [])]
    argv = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-machine", p.machine, *accel, "-m", str(p.memory_mb),
            "-smp", str(p.cpus), *_firmware(p.firmware), "-kernel", str(req.kernel),
            "-append", cmdline,
            "-chardev", f"socket,id=ser0,path={socks / 'serial.sock'},server=on,wait=on",
            "-serial", "chardev:ser0",
            "-qmp", f"unix:{socks / 'qmp.sock'},server=on,wait=off",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=n0"]
    for name, path in disks.items():
        fmt = "qcow2" if path.suffix == ".qcow2" else "raw"
        argv += ["-drive", f"file={path},if=none,id={name},format={fmt},cache=unsafe",
                 "-device", f"virtio-blk-pci,drive={name}"]
    return argv


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (QEMU failing to bind is retried)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Vm:
    """A running guest. Use as a context manager: the guest never outlives the block."""

    req: BootRequest
    popen: subprocess.Popen[bytes] | None = None
    console: ConsoleMonitor | None = None
    port: int = 0
    marker: str = ""
    boot_seconds: float = 0.0
    started_at: float = 0.0
    qemu_log: Path | None = None
    _socks: Path | None = None
    events: list[ConsoleEvent] = field(default_factory=list)

    def __enter__(self) -> Vm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start QEMU and wait for the readiness marker (BootError otherwise)."""
        run_dir = self.req.run_dir
        disks = {"root": image.make_overlay(self.req.image, run_dir)}
        if self.req.profile.swap_mb:
            disks["swap"] = image.make_swap(run_dir, self.req.profile.swap_mb)
        self._socks = Path(tempfile.mkdtemp(prefix="thpvm-"))
        self.qemu_log = run_dir / "qemu.log"
        for attempt in range(5):
            self.marker = f"THPVM-READY-{uuid.uuid4().hex[:12]}"
            self.port = free_port()
            if self._launch(disks):
                break
            log.info("QEMU could not start (attempt %d), retrying with another port", attempt + 1)
        else:
            raise BootError(f"QEMU failed to start 5 times (log: {self.qemu_log})",
                            _tail(self.qemu_log))
        self._wait_ready()

    def _launch(self, disks: dict[str, Path]) -> bool:
        assert self._socks is not None and self.qemu_log is not None
        for s in self._socks.glob("*.sock"):
            s.unlink()
        argv = build_argv(self.req, disks, self.port, self._socks, self.marker)
        (self.req.run_dir / "qemu-argv.json").write_text(json.dumps(argv, indent=1))
        with open(self.qemu_log, "ab") as logf:
            self.started_at = time.monotonic()
            self.popen = proc.spawn(argv, stdout=logf.fileno())
        self.console = ConsoleMonitor(self._socks / "serial.sock",
                                      self.req.run_dir / "serial.log", self.marker)
        try:
            self.console.connect(timeout=10)
            return True
        except OSError:
            self._kill()
            return False

    def _wait_ready(self) -> None:
        assert self.console is not None
        ev = self.console.wait_for(("ready",), self.req.ready_timeout)
        if ev is not None and ev.kind == "ready":
            self.boot_seconds = time.monotonic() - self.started_at
            log.info("guest ready in %.2f s", self.boot_seconds)
            return
        why = ev.kind if ev else self._no_marker_reason()
        self.stop()
        lines = ev.lines if ev else (_tail(self.req.run_dir / "serial.log").splitlines()
                                     + _tail(self.qemu_log, 10).splitlines())
        raise BootError(f"guest did not boot: {why} (serial log: "
                        f"{self.req.run_dir / 'serial.log'})", "\n".join(lines[-30:]))

    def _no_marker_reason(self) -> str:
        """What ended the wait for the marker: QEMU exiting, the console closing, or time."""
        elapsed = time.monotonic() - self.started_at
        code = None
        if self.popen is not None:  # a closed console usually means QEMU is exiting
            closed = self.console is not None and self.console.closed
            try:
                code = self.popen.wait(timeout=2 if closed else 0.01)
            except subprocess.TimeoutExpired:
                code = None
        if code is not None:
            return f"QEMU exited with status {code} after {elapsed:.1f} s, before the marker"
        if self.console is not None and self.console.closed:
            return f"the serial console closed after {elapsed:.1f} s, before the marker"
        return f"no readiness marker within {self.req.ready_timeout:.0f} s"

    def alive(self) -> bool:
        """QEMU still running."""
        return self.popen is not None and self.popen.poll() is None

    def crash(self) -> ConsoleEvent | None:
        """The first severe console event so far, or an `exited` event if QEMU is gone."""
        ev = self.console.severe() if self.console else None
        if ev is None and self.popen is not None and self.popen.poll() is not None:
            ev = ConsoleEvent("exited", time.monotonic() - self.started_at,
                              [f"QEMU exited with status {self.popen.returncode}"])
        return ev

    def qmp(self, command: str, timeout: float = 5.0) -> dict[str, object]:
        """Run one QMP command and return its response."""
        assert self._socks is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self._socks / "qmp.sock"))
            f = s.makefile("rw")
            json.loads(f.readline())  # greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}) + "\n")
                f.flush()
                while True:
                    resp = json.loads(f.readline())
                    if "return" in resp or "error" in resp:
                        break
            return dict(resp)

    def stop(self) -> None:
        """Orderly QMP quit, then kill the process group; close the console."""
        try:
            if self.popen is not None and self.popen.poll() is None:
                try:
                    self.qmp("quit", timeout=2)
                    self.popen.wait(timeout=5)
                except (OSError, ValueError, subprocess.TimeoutExpired):
                    pass
        finally:  # even if interrupted while waiting for the orderly quit
            self._kill()
            if self.console is not None:
                self.console.close()
                self.events = self.console.events
            if self._socks is not None:
                shutil.rmtree(self._socks, ignore_errors=True)
                self._socks = None

    def _kill(self) -> None:
        if self.popen is not None:
            proc.kill_group(self.popen, grace=2)


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------- accelerator

@dataclass(frozen=True)
class AccelChoice:
    """The accelerator to use and why."""

    accel: str
    reason: str
    probe_needed: bool = False


def _verdict_path() -> Path:
    host = cache.digest(os.uname().nodename, os.uname().release, qemu_version())
    return cache.cache_dir("accel") / f"{host}.json"


def choose_accel(requested: str) -> AccelChoice:
    """Resolve --accel auto|kvm|tcg. `auto` uses the remembered verdict for this host,
    TCG when /dev/kvm is unusable, else asks for a probe (a KVM boot that must
    reach the readiness marker)."""
    if requested not in ("auto", "kvm", "tcg"):
        raise UserError(f"--accel {requested}: expected auto, kvm or tcg")
    if requested == "tcg":
        return AccelChoice("tcg", "requested with --accel tcg")
    kvm_ok = os.access("/dev/kvm", os.R_OK | os.W_OK)
    if requested == "kvm":
        if not kvm_ok:
            raise UserError("--accel kvm: /dev/kvm is missing or not accessible")
        return AccelChoice("kvm", "requested with --accel kvm")
    if not kvm_ok:
        return AccelChoice("tcg", "/dev/kvm missing or not accessible")
    v = cache.read_json_entry(_verdict_path())
    if v is not None and v.get("accel") in ("kvm", "tcg"):
        return AccelChoice(str(v["accel"]), f"remembered probe verdict: {v.get('reason', '')}")
    return AccelChoice("kvm", "probing KVM", probe_needed=True)


def remember_accel(accel: str, reason: str) -> None:
    """Record this host's KVM probe verdict."""
    cache.write_json(_verdict_path(), {"accel": accel, "reason": reason,
                                        "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
