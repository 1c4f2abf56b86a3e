"""Leases on running guests, and reaping what a dead thpvm left behind.

A `Vm` writes a lease (`qemu-lease.json`) into its socket directory and its run
directory as soon as QEMU runs, naming thpvm's and QEMU's process (pid and
start time, so a reused pid is never mistaken for them), and removes it when it
stops. A SIGKILLed thpvm runs no cleanup: its QEMU dies with it (PDEATHSIG, see
`proc`), but the socket directory, the run directory's disks and the lease stay.
`reap()`, run at every boot and by `thpvm runs --prune`, finds leases whose
thpvm is gone, kills their QEMU if it still runs (the very process, not a
reused pid), removes the socket directory and the run's disk images, and leaves
`reaped-lease.json` in the run directory to say so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LEASE = "qemu-lease.json"
REAPED = "reaped-lease.json"
SOCKS_PREFIX = "thpvm-qemu-"
RUN_DISKS = ("rootfs-overlay.qcow2", "swap.img")
LEASELESS_GRACE_S = 60.0  # a socket dir younger than this may be mid-start


@dataclass(frozen=True)
class ProcId:
    """A process by pid and start time (clock ticks since boot): survives pid reuse."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcId | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
        if fields[0] in ("Z", "X"):
            return None  # a zombie is dead
        return cls(pid, int(fields[19]))

    def alive(self) -> bool:
        return ProcId.of(self.pid) == self


def socks_dir() -> Path:
    """A fresh private (0700) directory for a guest's unix sockets (short path)."""
    return Path(tempfile.mkdtemp(prefix=SOCKS_PREFIX))


def write_lease(socks: Path, run_dir: Path, qemu_pid: int) -> None:
    """Record who owns the guest in both places a reaper looks."""
    me, qemu = ProcId.of(os.getpid()), ProcId.of(qemu_pid)
    data = {"thpvm": [me.pid, me.start] if me else None,
            "qemu": [qemu.pid, qemu.start] if qemu else None,
            "run_dir": str(run_dir), "socks": str(socks), "at": time.time()}
    for d in (socks, run_dir):
        tmp = d / (LEASE + ".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        tmp.replace(d / LEASE)


def release(run_dir: Path) -> None:
    """The guest stopped in order: drop the run directory's lease."""
    (run_dir / LEASE).unlink(missing_ok=True)


def reap(runs_root: Path | None = None) -> list[str]:
    """Clean up after every dead thpvm this user left a lease or socket dir from;
    returns one line per thing cleaned."""
    done: list[str] = []
    leases = [p / LEASE for p in _own_dirs(Path(tempfile.gettempdir()), "thpvm-")]
    if runs_root is not None and runs_root.is_dir():
        leases += runs_root.glob(f"*/{LEASE}")
    for path in leases:
        if path.exists():
            done += _reap_lease(path)
    for d in _own_dirs(Path(tempfile.gettempdir()), "thpvm-"):
        if not (d / LEASE).exists() and _dead_socket_dir(d):
            shutil.rmtree(d, ignore_errors=True)
            done.append(f"removed stale socket directory {d}")
    for line in done:
        log.info("reaped: %s", line)
    return done


def in_use(run_dir: Path) -> bool:
    """A live thpvm holds a lease on this run directory."""
    lease = _read_lease(run_dir / LEASE)
    owner = _owner(lease) if lease is not None else None
    return owner is not None and owner.alive()


def _reap_lease(path: Path) -> list[str]:
    lease = _read_lease(path)
    if lease is None:
        return []
    owner = _owner(lease)
    if owner is not None and owner.alive():
        return []
    done = []
    qemu = _proc(lease.get("qemu"))
    if qemu is not None and qemu.alive():
        try:
            os.killpg(qemu.pid, signal.SIGKILL)  # QEMU leads its own process group
            done.append(f"killed orphaned QEMU {qemu.pid} of {lease.get('run_dir')}")
        except OSError:
            pass
    socks = Path(str(lease.get("socks", "")))
    if socks.name.startswith("thpvm-") and socks.is_dir():
        shutil.rmtree(socks, ignore_errors=True)
        done.append(f"removed socket directory {socks}")
    done += _reap_run_dir(Path(str(lease.get("run_dir", ""))), lease)
    return done


def _reap_run_dir(run_dir: Path, lease: dict[str, object]) -> list[str]:
    if not (run_dir / LEASE).is_file():
        return []
    freed = 0
    for name in RUN_DISKS:
        disk = run_dir / name
        if disk.is_file():
            freed += disk.stat().st_blocks * 512
            disk.unlink()
    (run_dir / REAPED).write_text(json.dumps({**lease, "reaped_at": time.time()}) + "\n")
    (run_dir / LEASE).unlink(missing_ok=True)
    return [f"reaped abandoned run {run_dir} ({freed >> 20} MiB of disks)"]


def _read_lease(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _proc(value: object) -> ProcId | None:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return ProcId(value[0], value[1])
    return None


def _owner(lease: dict[str, object]) -> ProcId | None:
    return _proc(lease.get("thpvm"))


def _own_dirs(parent: Path, prefix: str) -> list[Path]:
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    uid = os.geteuid()
    out = []
    for p in entries:
        try:
            if p.name.startswith(prefix) and p.is_dir() and p.stat().st_uid == uid:
                out.append(p)
        except OSError:
            continue
    return out


def _dead_socket_dir(d: Path) -> bool:
    """A socket directory without a lease (an older thpvm, or a start cut short): dead
    if old enough and nothing listens on its QMP socket any more."""
    qmp = d / "qmp.sock"
    try:
        if time.time() - d.stat().st_mtime < LEASELESS_GRACE_S or not qmp.exists():
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(qmp))
            return False
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
