"""Issue 15 row 4 on a real kernel: the guest kernel itself hangs, silently, and thpvm
calls it a kernel hang (exit 1), found within 60 s, with result.json/junit.xml written
and no QEMU left.

The hang: LKDTM's HARDLOCKUP (spin with interrupts off, forever) on every vCPU at
once, in the debug kernel (kconfigs/debug.config has CONFIG_LKDTM). One waiter per
vCPU is pinned with taskset and blocks opening a FIFO; opening the FIFO for writing
releases them all together, so no vCPU is left to run anything (a vCPU left running
would need the locked ones for an IPI or an RCU grace period, and report an RCU
stall: a `lockup`, not a silent hang). The kernel prints nothing: thpvm's kernels
have no soft/hard lockup detector (CONFIG_SOFTLOCKUP_DETECTOR and
CONFIG_HARDLOCKUP_DETECTOR are off, and TCG has no NMI watchdog anyway), and RCU's
stall detector needs a timer interrupt on some CPU, which none takes. So the only
evidence is the serial console's shell not answering while QEMU runs: `hang`.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_guest_faults import guest_port, qemu_of, result_of, vm_test_until_workload

from orchestrator.build import kernel
from orchestrator.data import KCONFIG_DIR
from orchestrator.errors import GuestError, GuestTimeout
from orchestrator.machine import session
from orchestrator.machine.guest import SshShell

DEBUG_FRAGMENT = KCONFIG_DIR / "debug.config"
DIRECT = "/sys/kernel/debug/provoke-crash/DIRECT"
FIFO = "/tmp/thpvm-hang-go"
# one waiter per online vCPU, pinned to it, blocked opening FIFO; prints the vCPU count
ARM = f"""set -e
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
grep -qw HARDLOCKUP {DIRECT}
rm -f {FIFO} /tmp/thpvm-hang-armed.*; mkfifo {FIFO}
n=$(nproc)
for cpu in $(seq 0 $((n - 1))); do
  setsid taskset -c $cpu sh -c "touch /tmp/thpvm-hang-armed.$cpu; : < {FIFO}; \\
    echo HARDLOCKUP > {DIRECT}" </dev/null >/dev/null 2>&1 &
done
for i in $(seq 300); do
  [ $(ls /tmp/thpvm-hang-armed.* 2>/dev/null | wc -l) -ge $n ] && break
  sleep 0.1
done
sleep 1
echo $n
"""
# opening the FIFO for writing wakes every waiter: each vCPU spins with IRQs off
RELEASE = f": > {FIFO}; sleep 1000"
VERDICT_BUDGET = 60.0  # issue 15 row 4: a real hang is found within 60 s


@pytest.fixture(scope="module")
def debug_kernel() -> kernel.KernelArtifacts:
    """The default Debian 6.12 kernel with kconfigs/debug.config (LKDTM; real, cached)."""
    art = kernel.build_kernel(kernel.KernelRequest(fragments=[DEBUG_FRAGMENT]))
    config = art.config.read_text()
    assert "CONFIG_LKDTM=y" in config
    for detector in ("SOFTLOCKUP_DETECTOR", "HARDLOCKUP_DETECTOR"):
        assert f"CONFIG_{detector}=y" not in config, "the hang would not be silent"
    return art


def console_after(serial: Path, offset: int) -> str:
    return serial.read_bytes()[offset:].decode(errors="replace")


def kernel_lines(text: str) -> list[str]:
    """printk lines (with a timestamp) in a piece of console output."""
    return [ln.strip() for ln in text.splitlines() if re.search(r"\[\s*\d+\.\d+\]", ln)]


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def test_real_silent_kernel_hang_is_a_hang_within_60s(debug_kernel, guest_image, tmp_path):
    """A command with a long deadline is running when every vCPU locks up: the
    command's watchdog (health.Watch) ends it within 60 s, and the verdict is a hang."""
    with session.guest(debug_kernel.bzimage, guest_image, tmp_path, accel="tcg") as g:
        armed = g.shell.run(ARM, timeout=120)
        assert armed.ok, armed.stderr
        cpus = int(armed.stdout)
        assert cpus == g.vm.req.profile.cpus
        serial = tmp_path / "serial.log"
        mark = serial.stat().st_size
        start = time.monotonic()
        with pytest.raises(GuestError) as lost:
            g.shell.run(RELEASE, timeout=600)
        d = g.diagnose()
        took = time.monotonic() - start
        print(f"real hang ({cpus} vCPUs locked, load {load()}): {d.kind} in {took:.1f} s "
              f"after the release; {lost.value.message}")
        assert not isinstance(lost.value, GuestTimeout), "found by the deadline, not the watch"
        assert (d.kind, d.kernel_failure) == ("hang", True), d.summary
        assert took < VERDICT_BUDGET
        assert g.kernel_failure() is not None and g.kernel_failure().kind == "hang"
        assert not g.usable()
        after = console_after(serial, mark)
        print(f"kernel messages after the release: {kernel_lines(after) or 'none'}")
        assert not kernel_lines(after), "the hang was not silent"
    assert (tmp_path / "dmesg.txt").exists()
    assert not qemu_of(tmp_path)


def test_real_hang_during_a_workload_is_exit_1(debug_kernel, guest_image, tmp_path):
    """End to end: `thpvm workload run` (vm-test with one spec) on the debug kernel; a
    second SSH session hangs the kernel while the workload runs: exit 1, the workload an
    error, metadata.guest_lost a `hang`, result.json and junit.xml, no QEMU left."""
    out = tmp_path / "run"
    lines: list[tuple[float, str]] = []

    child = vm_test_until_workload(out, extra=("--fragment", str(DEBUG_FRAGMENT)))
    reader = threading.Thread(target=lambda: lines.extend(
        (time.monotonic(), ln) for ln in iter(child.stdout.readline, "")), daemon=True)
    reader.start()
    time.sleep(2)  # the driver runs now (its sleep step lasts 120 s)
    shell = SshShell("127.0.0.1", guest_port(out), guest_image.ssh_key,
                     guest_image.host_key_pub)
    shell.connect(timeout=60)
    try:
        armed = shell.run(ARM, timeout=120)
        assert armed.ok, armed.stderr
        released = time.monotonic()
        with pytest.raises(GuestError):
            shell.run(RELEASE, timeout=30)
    finally:
        shell.close()
    try:
        code = child.wait(timeout=300)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        pytest.fail("thpvm did not end within 300 s of the hang")
    ended = time.monotonic() - released
    reader.join(timeout=10)
    printed = "".join(ln for _, ln in lines)
    found = [t for t, ln in lines if "guest diagnosis: hang" in ln or "guest lost: kernel hang"
             in ln]
    took = found[0] - released if found else float("nan")
    print(f"real hang in a workload (load {load()}): exit {code}, hang found {took:.1f} s "
          f"after the release, thpvm ended after {ended:.1f} s")
    result = result_of(out)
    assert code == 1 and result["verdict"] == "fail", printed[-3000:]
    lost = result["metadata"]["guest_lost"]
    assert (lost["kind"], lost["kernel_failure"]) == ("hang", True)
    assert "hang" in [e["kind"] for e in result["console"]["events"]]
    assert [w["verdict"] for w in result["workloads"]] == ["error"]
    assert found and took < VERDICT_BUDGET, printed[-3000:]
    assert not qemu_of(out), "QEMU outlived thpvm"
    assert "Traceback" not in printed
    assert json.loads((out / "result.json").read_text())["exit_code"] == 1


def test_real_hang_in_a_setup_step_is_exit_1(debug_kernel, guest_image, tmp_path, monkeypatch,
                                             caplog, no_leaked_qemu):
    """The kernel hangs while thpvm uploads the workload driver (a setup step, not a
    test): still a kernel failure, exit 1 (not 125), found within 60 s."""
    from orchestrator.cli import main
    from orchestrator.suites.workloads import runner as workload_suite

    real_upload = workload_suite.upload
    released: list[float] = []

    def upload_into_a_hang(shell: SshShell) -> str:
        armed = shell.run(ARM, timeout=120)
        assert armed.ok, armed.stderr
        released.append(time.time())
        shell.run(f": > {FIFO}", timeout=120)  # may come back before the vCPUs lock
        return real_upload(shell)

    monkeypatch.setattr(workload_suite, "upload", upload_into_a_hang)
    out = tmp_path / "run"
    code = main(["vm-test", "--fragment", str(DEBUG_FRAGMENT), "--accel", "tcg",
                 "--suite", "workloads:full-pmd-collapse", "--isolation", "shared",
                 "--out", str(out)])
    ended = time.time() - released[0]
    found = [r.created for r in caplog.records if "guest diagnosis: hang" in r.getMessage()]
    took = found[0] - released[0] if found else float("nan")
    print(f"real hang in a setup step (load {load()}): exit {code}, hang found {took:.1f} s "
          f"after the release, thpvm ended after {ended:.1f} s")
    result = result_of(out)
    assert code == 1 and result["verdict"] == "fail", result["reason"]
    assert "kernel hang" in result["reason"]
    lost = result["metadata"]["guest_lost"]
    assert (lost["kind"], lost["kernel_failure"]) == ("hang", True)
    assert found and took < VERDICT_BUDGET
    assert not qemu_of(out)
