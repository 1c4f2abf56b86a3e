"""Real guests: boot, SSH, console classification, cleanup, parallel boots."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from qemu_procs import qemu_pids, wait_gone

from orchestrator.build import image
from orchestrator.cli import main
from orchestrator.errors import BootError
from orchestrator.machine import console, session


def test_boot_ssh_uname_and_vmstat(default_kernel, guest_image, tmp_path, no_leaked_qemu):
    base_sum = image.sha256_file(guest_image.qcow2)
    with session.guest(default_kernel.bzimage, guest_image, tmp_path, accel="auto") as g:
        assert g.accel in ("kvm", "tcg") and g.accel_reason
        res = g.shell.run("uname -r; grep -c '^thp_' /proc/vmstat; cat /proc/swaps")
        assert res.ok
        release, thp_lines, *swaps = res.stdout.splitlines()
        assert release == default_kernel.release
        assert int(thp_lines) > 10
        assert any("/dev/vdb" in s for s in swaps), "swap disk not enabled"
        g.collect_dmesg(tmp_path / "dmesg.txt")
    assert "Linux version" in (tmp_path / "dmesg.txt").read_text()
    assert (tmp_path / "serial.log").read_text().count("THPVM-READY-") == 1
    assert image.sha256_file(guest_image.qcow2) == base_sum == guest_image.sha256


def test_init_nonexistent_is_a_panic_within_30s(default_kernel, guest_image, tmp_path,
                                                no_leaked_qemu):
    start = time.monotonic()
    with pytest.raises(BootError) as exc:
        with session.guest(default_kernel.bzimage, guest_image, tmp_path, accel="tcg",
                           append="init=/nonexistent"):
            pass
    assert time.monotonic() - start < 30
    assert "panic" in exc.value.message
    assert "Kernel panic - not syncing" in exc.value.detail
    events = console.classify_log((tmp_path / "serial.log").read_text())
    assert events[0].kind == "panic"


def test_sysrq_crash_mid_session_exits_125_and_is_classified(default_kernel, tmp_path, capsys,
                                                            no_leaked_qemu):
    out = tmp_path / "run"
    code = main(["boot", "--accel", "tcg", "--out", str(out), "--timeout", "20",
                 "echo c > /proc/sysrq-trigger"])
    assert code == 125
    kinds = [e.kind for e in console.classify_log((out / "serial.log").read_text())]
    assert "oops" in kinds or "panic" in kinds
    assert "Kernel panic - not syncing" in (out / "dmesg.txt").read_text()


def test_sigint_during_boot_leaves_no_qemu_and_keeps_serial_log(default_kernel, guest_image,
                                                                tmp_path, qemu_tag):
    out = tmp_path / "run"
    before = qemu_pids(qemu_tag)
    # SIGINT as at a terminal. A test session started in the background by a shell without
    # job control (`make test &` in a script) inherits SIGINT ignored, and so would thpvm,
    # rightly: Python leaves an ignored SIGINT ignored. Hence the default, set explicitly.
    child = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "boot", "--accel", "tcg",
                              "--out", str(out), "sleep", "60"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not (out / "serial.log").exists() or (out / "serial.log").stat().st_size == 0:
            assert time.monotonic() < deadline, "guest never produced console output"
            time.sleep(0.1)
        assert qemu_pids(qemu_tag) - before, "QEMU should be running now"
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=30)
    finally:
        child.kill()  # a failed assertion must not leave thpvm and its guest running
        child.wait()
    assert code == 130
    assert not wait_gone(qemu_tag, before, 2.0), "QEMU outlived thpvm after SIGINT"
    assert (out / "serial.log").stat().st_size > 0


def test_two_boots_in_parallel(default_kernel, guest_image, tmp_path, no_leaked_qemu):
    results: dict[int, str] = {}

    def boot(i: int) -> None:
        d = tmp_path / f"vm{i}"
        d.mkdir()
        with session.guest(default_kernel.bzimage, guest_image, d, accel="tcg") as g:
            results[i] = g.shell.run("uname -r").stdout.strip() + f"@{g.vm.port}"

    threads = [threading.Thread(target=boot, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert len(results) == 2
    assert results[0].split("@")[0] == results[1].split("@")[0] == default_kernel.release
    assert results[0].split("@")[1] != results[1].split("@")[1]




def test_interactive_shell_in_a_pty(default_kernel, guest_image, tmp_path, no_leaked_qemu):
    import pexpect

    thpvm = Path(sys.executable).with_name("thpvm")
    child = pexpect.spawn(str(thpvm), ["shell", "--accel", "tcg", "--out", str(tmp_path / "run")],
                          encoding="utf-8", timeout=90)
    try:
        child.expect(r"booted .* in [\d.]+ s")
        child.expect(r"[#$] ")
        child.sendline("echo thpvm-$((6*7)); uname -r")
        child.expect("thpvm-42")
        child.expect(default_kernel.release)
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
