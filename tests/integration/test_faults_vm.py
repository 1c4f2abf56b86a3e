"""Faults of the VM layer injected for real (issue 15, rows 3, 14 and 16).

Row 3: `thpvm` SIGKILLed mid-boot and mid-selftest: its QEMU dies with it, and
the next run (or `thpvm runs --prune`) reaps the socket directory and disks.
Row 14: the cache, the image and the run disks are private; the host key is not
in the base image; the SSH port is QEMU's own and the pinned key still holds
against a squatter. Row 16: on a host whose KVM fails, the probe decides from
evidence within its budget. Row 15 (the leak check itself) is test_qemu_procs.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
from qemu_procs import qemu_pids, wait_gone

from orchestrator import cache
from orchestrator.build import image
from orchestrator.cli import main
from orchestrator.errors import BootError, GuestError
from orchestrator.machine import leftovers, qemu, session
from orchestrator.machine.guest import SshShell

THPVM = [sys.executable, "-m", "orchestrator.cli"]
QEMU_GONE_S = 5.0  # generous on a loaded host; PDEATHSIG itself is immediate


def _wait_for(pred: Callable[[], bool], seconds: float, what: str,
              child: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not pred():
        if child is not None and child.poll() is not None:
            pytest.fail(f"thpvm exited ({child.returncode}) before {what}")
        assert time.monotonic() < deadline, f"no {what} within {seconds:.0f} s"
        time.sleep(0.1)


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen([*THPVM, "-v", *args], stdout=fh, stderr=subprocess.STDOUT)


def _sigkill_and_check(child: subprocess.Popen[bytes], tag: str, before: set[int],
                       out: Path) -> tuple[float, Path]:
    """SIGKILL thpvm; its QEMU must follow. Returns the seconds QEMU took and the
    socket directory the dead thpvm left."""
    ours = qemu_pids(tag) - before
    assert ours, "QEMU should be running now"
    start = time.monotonic()
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    leaked = wait_gone(tag, before, QEMU_GONE_S)
    assert not leaked, f"QEMU outlived a SIGKILLed thpvm: {leaked}"
    took = time.monotonic() - start
    lease = json.loads((out / leftovers.LEASE).read_text())
    assert lease["qemu"][0] in ours
    socks = Path(lease["socks"])
    assert socks.is_dir(), "the socket directory a SIGKILLed thpvm leaves"
    return took, socks


def _assert_reaped(out: Path, socks: Path) -> None:
    assert not socks.exists()
    assert not (out / leftovers.LEASE).exists()
    assert (out / leftovers.REAPED).is_file()
    assert not (out / "rootfs-overlay.qcow2").exists() and not (out / "swap.img").exists()
    assert (out / "qemu.log").is_file() and (out / "serial.log").is_file()  # evidence stays


def test_sigkill_mid_boot_qemu_dies_and_runs_prune_reaps(default_kernel, guest_image, tmp_path,
                                                         no_leaked_qemu, capsys, monkeypatch):
    qemu_tag = no_leaked_qemu
    out = tmp_path / "run"
    before = qemu_pids(qemu_tag)
    child = _spawn(["boot", "--accel", "tcg", "--out", str(out), "sleep", "600"],
                   tmp_path / "thpvm.log")
    try:
        serial = out / "serial.log"
        _wait_for(lambda: (out / leftovers.LEASE).exists() and serial.exists(), 900,
                  "QEMU start", child)  # the console is connected: the guest boots
        assert "THPVM-READY" not in serial.read_text(errors="replace"), \
            "the guest was already up: not a mid-boot kill"
        took, socks = _sigkill_and_check(child, qemu_tag, before, out)
    finally:
        child.kill()
        child.wait()
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path / "cache"))  # prune nothing shared
    capsys.readouterr()
    assert main(["runs", "--prune", "10"]) == 0
    printed = capsys.readouterr().out
    assert f"reaped abandoned run {out}" in printed
    assert f"removed socket directory {socks}" in printed
    _assert_reaped(out, socks)


def test_sigkill_mid_selftest_qemu_dies_and_the_next_boot_reaps(default_kernel, guest_image,
                                                                tmp_path, no_leaked_qemu):
    qemu_tag = no_leaked_qemu
    out = tmp_path / "run"
    log = tmp_path / "thpvm.log"
    before = qemu_pids(qemu_tag)
    child = _spawn(["vm-test", "--accel", "tcg", "--out", str(out)], log)
    try:
        _wait_for(lambda: ": running ./khugepaged" in log.read_text(errors="replace"), 1200,
                  "selftest start", child)
        time.sleep(2)  # well inside the selftest (it runs for minutes under TCG)
        took, socks = _sigkill_and_check(child, qemu_tag, before, out)
    finally:
        child.kill()
        child.wait()
    print(f"mid-selftest SIGKILL: QEMU gone after {took:.2f} s")
    assert not (out / "result.json").exists()  # a killed run writes nothing more
    # the next boot reaps what the killed run left, before it starts its own QEMU
    with qemu.Vm(qemu.BootRequest(default_kernel.bzimage, guest_image, _mkdir(tmp_path / "next"),
                                  qemu.load_machine_profile())) as vm:
        assert vm.alive()
        _assert_reaped(out, socks)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_cache_image_and_run_disks_are_private(guest_image, tmp_path, monkeypatch):
    assert cache.cache_root().stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared-cache"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setenv("THPVM_CACHE", str(shared))
    assert cache.new_run_dir("perm").stat().st_mode & 0o777 == 0o700
    assert shared.stat().st_mode & 0o777 == 0o700  # an existing root is tightened
    assert cache.cache_dir("kernels").stat().st_mode & 0o777 == 0o700
    assert guest_image.dir.stat().st_mode & 0o777 == 0o700
    assert guest_image.qcow2.stat().st_mode & 0o777 == 0o400
    for key in (guest_image.ssh_key, guest_image.host_key):
        assert key.stat().st_mode & 0o777 == 0o600
    overlay = image.make_overlay(guest_image, tmp_path)
    swap = image.make_swap(tmp_path, 1)
    assert overlay.stat().st_mode & 0o777 == swap.stat().st_mode & 0o777 == 0o600


def test_host_key_is_not_in_the_base_image(guest_image):
    secret = guest_image.host_key.read_text().splitlines()[1].encode()  # a base64 line
    with open(guest_image.qcow2, "rb") as fh:
        tail = b""
        for block in iter(lambda: fh.read(1 << 20), b""):
            assert secret not in tail + block, "the private host key is inside the base image"
            tail = block[-len(secret):]


def test_squatted_port_is_avoided_and_the_pin_rejects_the_squatter(default_kernel, guest_image,
                                                                   tmp_path, no_leaked_qemu):
    squatter = _FakeSshServer(tmp_path / "squatter_key")
    try:
        with session.guest(default_kernel.bzimage, guest_image, tmp_path, accel="tcg") as g:
            assert g.vm.port != squatter.port
            argv = json.loads((tmp_path / "qemu-argv.json").read_text())
            assert "hostfwd=tcp:127.0.0.1:0-:22" in argv[argv.index("-netdev") + 1]
            res = g.shell.run("ls /etc/ssh/keys; ls /etc/ssh | grep -c ssh_host_ || true; "
                              "grep ' /etc/ssh/keys ' /proc/mounts")
            keys, on_disk, mount = res.stdout.splitlines()[-3:]
            assert "ssh_host_ed25519_key" in res.stdout and on_disk == "0"
            assert mount.split()[2] == "tmpfs"
        impostor = SshShell("127.0.0.1", squatter.port, guest_image.ssh_key,
                            guest_image.host_key_pub)
        with pytest.raises(GuestError, match="does not match the pinned key"):
            impostor.connect(timeout=20)
        assert squatter.connections >= 1  # it was the squatter that answered, and was refused
    finally:
        squatter.close()


class _FakeSshServer:
    """Another user's squatter on a local port: an SSH server with its own host key."""

    def __init__(self, key: Path) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
        self.key = paramiko.Ed25519Key.from_private_key_file(str(key))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0  # counted at accept: the handshake's end races the client's refusal
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            t = paramiko.Transport(conn)
            t.add_server_key(self.key)
            try:
                t.start_server(server=paramiko.ServerInterface())
            except (paramiko.SSHException, EOFError, OSError):
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="no /dev/kvm to probe")
def test_kvm_probe_decides_from_evidence(default_kernel, guest_image, tmp_path, monkeypatch,
                                         no_leaked_qemu):
    verdict = tmp_path / "accel.json"
    monkeypatch.setattr(qemu, "_verdict_path", lambda: verdict)
    with session.guest(default_kernel.bzimage, guest_image, tmp_path, accel="auto") as g:
        assert g.shell.run("true").ok
        chosen = json.loads(verdict.read_text())
        print(f"KVM probe: {chosen['reason']}")
        assert chosen["accel"] == g.accel
        if g.accel == "tcg":  # this host's KVM is broken: say how, and why so fast
            assert "KVM probe failed in " in chosen["reason"]
            assert (tmp_path / "kvm-probe-qemu.log").is_file()
            assert ("QEMU exited" in chosen["reason"] or "no guest code ran" in chosen["reason"]
                    or "QEMU reports the VM" in chosen["reason"])


def test_probe_judges_a_silent_guest_that_runs_no_guest_code(default_kernel, guest_image,
                                                             tmp_path, no_leaked_qemu):
    """A TCG guest runs no code as *guest* CPU time; with a silent console (loglevel=0,
    an init that prints nothing) it looks exactly like a KVM vCPU that never entered
    the guest: the probe must say so at its budget, not wait for a marker."""
    req = qemu.BootRequest(default_kernel.bzimage, guest_image, tmp_path,
                           qemu.load_machine_profile(), "tcg",
                           append="loglevel=0 init=/bin/cat", ready_timeout=600,
                           probe_s=qemu.KVM_VERDICT_S)
    with pytest.raises(BootError, match="no guest code ran and the console stayed silent"):
        with qemu.Vm(req):
            pytest.fail("the with block must not run")
