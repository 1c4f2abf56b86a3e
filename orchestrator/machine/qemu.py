"""QEMU guests: machine profile → argv, accelerator probe, VM lifecycle.

QEMU is a child thpvm owns: started through `proc.spawn` in its own process
group, watched by a `ConsoleMonitor`, stopped over QMP and then killed (group)
in `finally`, including on SIGINT/SIGTERM (cli.py turns SIGTERM into
KeyboardInterrupt), and killed by the kernel if thpvm dies (PDEATHSIG, see
`proc`); a lease lets the next run reap what a dead thpvm left (see
`leftovers`). SSH is forwarded from 127.0.0.1 only, on a port QEMU binds itself
(`hostfwd=...:0`) and thpvm reads back over QMP, so no other process can take
the port between its choice and its use. The guest's SSH host key is not in the
base image: it comes per boot on a small read-only disk (serial `thpvm-keys`)
that the image's init unpacks.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tarfile
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import cache, proc
from orchestrator.build import image
from orchestrator.data import MACHINE_PROFILES_DIR
from orchestrator.errors import BootError, UserError
from orchestrator.machine import leftovers
from orchestrator.machine.console import ConsoleEvent, ConsoleMonitor

log = logging.getLogger(__name__)

FIRMWARE_DIRS = (Path("/usr/share/qemu"), Path("/usr/share/seabios"))
GUEST_IP = "10.0.2.15"
KVM_VERDICT_S = 5.0  # a KVM probe is judged broken within this, from evidence
BOOT_ATTEMPTS = 3  # boots of one guest when its APIC timer calibration fails (busy host)
RUNNING_STATES = ("running", "inmigrate", "finish-migrate")
KEYS_SERIAL = "thpvm-keys"  # the per-boot key disk, found by the guest's init by this serial
_HOSTFWD_RE = re.compile(r"TCP\[HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+\S+\s+22\b")


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


def load_machine_profile(name: str = "default") -> MachineProfile:
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
    probe_s: float = 0.0  # > 0: an accelerator probe, judged within this many seconds


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
        argv += _drive(name, path)
    return argv


def _drive(name: str, path: Path) -> list[str]:
    if name == "keys":  # read-only, found in the guest by its serial
        return ["-drive", f"file={path},if=none,id=keys,format=raw,readonly=on",
                "-device", f"virtio-blk-pci,drive=keys,serial={KEYS_SERIAL}"]
    fmt = "qcow2" if path.suffix == ".qcow2" else "raw"
    return ["-drive", f"file={path},if=none,id={name},format={fmt},cache=unsafe",
            "-device", f"virtio-blk-pci,drive={name}"]


def make_keys_disk(img: image.Image, dest: Path) -> Path | None:
    """A tar archive (a raw disk of 10 KiB records) with the guest's SSH host key pair,
    to be unpacked into /etc/ssh by the guest's init; None for an image that still
    carries its host key inside (built before keys were injected)."""
    if not img.host_key.is_file():
        return None
    with tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT) as tar:
        for path, mode in ((img.host_key, 0o600), (img.host_key_pub, 0o644)):
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.mode, info.uid, info.gid, info.uname, info.gname = mode, 0, 0, "root", "root"
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    os.chmod(dest, 0o600)
    return dest


def parse_hostfwd_port(usernet: str) -> int | None:
    """The host port of the SSH forward in `info usernet` output, e.g.
    `  TCP[HOST_FORWARD]   8       127.0.0.1 38585       10.0.2.15    22     0     0`."""
    m = _HOSTFWD_RE.search(usernet)
    return int(m.group(1)) if m else None


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
    _serial_start: int = 0
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
        _reap_leftovers()
        self.qemu_log = run_dir / "qemu.log"
        for boot in range(1, BOOT_ATTEMPTS + 1):
            self._socks = leftovers.socks_dir()  # the sockets and this boot's key disk
            keys = make_keys_disk(self.req.image, self._socks / "keys.tar")
            self._launch_until_sockets({**disks, "keys": keys} if keys is not None else disks)
            if self._wait_ready():
                return
            log.warning("the guest's APIC timer calibration failed (a TCG vCPU starved by a "
                        "busy host): booting it again (%d of %d)", boot, BOOT_ATTEMPTS)
            self.stop()
        raise BootError(f"guest did not boot: its APIC timer calibration failed {BOOT_ATTEMPTS} "
                        "times (\"APIC frequency too slow\": the host is too busy for TCG) "
                        f"(serial log: {run_dir / 'serial.log'})",
                        _tail(run_dir / "serial.log"))

    def _launch_until_sockets(self, disks: dict[str, Path]) -> None:
        """Start QEMU until it opens its sockets (3 tries), with a fresh readiness marker."""
        for attempt in range(3):
            self.marker = f"THPVM-READY-{uuid.uuid4().hex[:12]}"
            exited = self._launch(disks)
            if exited is None:
                return
            if exited:  # QEMU itself refused (bad option, accelerator failure): no retry
                code = self.popen.returncode if self.popen else None
                raise BootError(f"QEMU exited with status {code} before the guest ran: "
                                f"{_last_error(self.qemu_log)} (log: {self.qemu_log})",
                                _tail(self.qemu_log))
            log.info("QEMU did not open its sockets (attempt %d), retrying", attempt + 1)
        raise BootError(f"QEMU did not open its sockets 3 times (log: {self.qemu_log})",
                        _tail(self.qemu_log))

    def _launch(self, disks: dict[str, Path]) -> bool | None:
        """Start QEMU; None once it runs and reported its SSH port, else whether it had
        exited by itself (True) or was killed for not opening its sockets (False)."""
        assert self._socks is not None and self.qemu_log is not None
        for s in self._socks.glob("*.sock"):
            s.unlink()
        argv = build_argv(self.req, disks, 0, self._socks, self.marker)
        (self.req.run_dir / "qemu-argv.json").write_text(json.dumps(argv, indent=1))
        with open(self.qemu_log, "ab") as logf:
            self.started_at = time.monotonic()
            self.popen = proc.spawn(argv, stdout=logf.fileno())
        leftovers.write_lease(self._socks, self.req.run_dir, self.popen.pid)
        self._serial_start = _size(self.req.run_dir / "serial.log")
        self.console = ConsoleMonitor(self._socks / "serial.sock",
                                      self.req.run_dir / "serial.log", self.marker)
        try:
            self.console.connect(timeout=10)
            self.port = self._read_port(proc.Deadline.after(10))
            # where to reach this guest by hand: ssh -p PORT -i <image>/id root@127.0.0.1
            (self.req.run_dir / "ssh-port").write_text(f"{self.port}\n")
            return None
        except OSError:
            exited = self.popen.poll() is not None
            self._kill()
            return exited

    def _read_port(self, deadline: proc.Deadline) -> int:
        """The host port QEMU bound for SSH, from QMP `info usernet`."""
        while True:
            try:
                resp = self.qmp("human-monitor-command", timeout=deadline.remaining() or 0.1,
                                arguments={"command-line": "info usernet"})
                port = parse_hostfwd_port(str(resp.get("return", "")))
                if port is not None:
                    log.debug("QEMU forwards 127.0.0.1:%d to the guest's SSH", port)
                    return port
            except (OSError, ValueError):
                pass
            if deadline.expired() or not self.alive():
                raise OSError("QEMU did not report its SSH port over QMP")
            time.sleep(0.05)

    def _wait_ready(self) -> bool:
        """True once the guest is ready; False when its boot went wrong in a way a new
        boot fixes (a failed APIC timer calibration); BootError otherwise."""
        assert self.console is not None
        if self.req.probe_s > 0:
            self._judge_probe(proc.Deadline.after(self.req.probe_s))
        ev = self.console.wait_for(("ready", "bad-timer"), self.req.ready_timeout)
        if ev is not None and ev.kind == "bad-timer":
            return False
        if ev is not None and ev.kind == "ready":
            self.boot_seconds = time.monotonic() - self.started_at
            log.info("guest ready in %.2f s", self.boot_seconds)
            return True
        why = ev.kind if ev else self._no_marker_reason()
        self.stop()
        lines = ev.lines if ev else (_tail(self.req.run_dir / "serial.log").splitlines()
                                     + _tail(self.qemu_log, 10).splitlines())
        raise BootError(f"guest did not boot: {why} (serial log: "
                        f"{self.req.run_dir / 'serial.log'})", "\n".join(lines[-30:]))

    def _judge_probe(self, deadline: proc.Deadline) -> None:
        """An accelerator probe: raise BootError as soon as there is evidence the
        accelerator does not run the guest (QEMU exited, QMP reports a stopped or
        failed VM), or, at the deadline, if no guest code ran at all (no guest CPU
        time, console silent). A guest that runs gets the normal readiness wait."""
        assert self.console is not None and self.popen is not None
        while not deadline.expired():
            if self.console.wait_for(("ready",), min(0.2, deadline.remaining())):
                return  # ready, or a console event the normal wait reports
            why = self._not_running()
            if why:
                self._fail_probe(why)
        silent = _size(self.req.run_dir / "serial.log") == self._serial_start
        if silent and guest_cpu_seconds(self.popen.pid) == 0.0:
            self._fail_probe(f"no guest code ran and the console stayed silent for "
                             f"{self.req.probe_s:.0f} s")

    def _not_running(self) -> str | None:
        assert self.console is not None and self.popen is not None
        if self.popen.poll() is not None or self.console.closed:
            try:
                code = self.popen.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
            return f"QEMU exited (status {code})"
        try:
            status = self.qmp("query-status", timeout=1.0).get("return", {})
        except (OSError, ValueError):
            return None  # QMP busy or slow: no evidence either way
        state = status.get("status") if isinstance(status, dict) else None
        return None if state in (None, *RUNNING_STATES) else f"QEMU reports the VM {state}"

    def _fail_probe(self, why: str) -> None:
        took = time.monotonic() - self.started_at
        self.stop()
        raise BootError(f"{self.req.accel} does not run the guest: {why} "
                        f"({took:.1f} s after start)", _tail(self.qemu_log))


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

    def qmp(self, command: str, timeout: float = 5.0,
            arguments: dict[str, object] | None = None) -> dict[str, object]:
        """Run one QMP command and return its response."""
        assert self._socks is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self._socks / "qmp.sock"))
            f = s.makefile("rw")
            json.loads(f.readline())  # greeting
            for cmd, args in (("qmp_capabilities", None), (command, arguments)):
                f.write(json.dumps({"execute": cmd, **({"arguments": args} if args else {})})
                        + "\n")
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
                leftovers.release(self.req.run_dir)

    def _kill(self) -> None:
        if self.popen is not None:
            proc.kill_group(self.popen, grace=2)


def _reap_leftovers() -> None:
    """What a dead thpvm left (orphaned QEMU, socket dirs, run disks): never fatal."""
    try:
        leftovers.reap(cache.cache_root() / "runs")
    except OSError as e:
        log.warning("could not reap leftovers of earlier runs: %s", e)


def _last_error(qemu_log: Path | None) -> str:
    """QEMU's last own message (`qemu-system-x86_64: ...`), the usual reason it quit."""
    lines = [ln for ln in _tail(qemu_log, 20).splitlines() if ln.startswith("qemu-system")]
    errors = [ln for ln in lines if "info: QEMU waiting" not in ln]
    return errors[-1][:200] if errors else "no message"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def guest_cpu_seconds(pid: int) -> float:
    """CPU time a process spent running guest code (`guest_time`, field 43 of
    /proc/PID/stat, summed over threads): > 0 once a KVM vCPU entered the guest."""
    ticks = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()  # field 3 onwards
        if len(fields) > 40:
            ticks += int(fields[40])
    return ticks / os.sysconf("SC_CLK_TCK")


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
