"""Fault-tolerance speed figures (issue 15, rows 3 and 16), as JSON on stdout or --out.

- kvm_probe_s: `--accel auto` on a fresh verdict: seconds until the KVM probe decides
  (target <= 5 s on a host whose KVM is broken; on a working host: KVM boot to SSH)
- silent_probe_s: a guest that runs no guest code and prints nothing: seconds until the
  probe says so (target <= 5 s + start-up; the old probe waited 30 s for a marker)
- sigkill_qemu_gone_s: `thpvm boot` SIGKILLed mid-boot: seconds until its QEMU is gone
  (target <= 2 s)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def kvm_probe() -> dict[str, object]:
    from orchestrator.build import image, kernel
    from orchestrator.machine import qemu, session

    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return {"skipped": "no /dev/kvm"}
    art, img = kernel.build_kernel(kernel.KernelRequest()), image.build_image()
    with tempfile.TemporaryDirectory(prefix="thpvm-bench-") as d:
        verdict = Path(d) / "accel.json"
        real, qemu._verdict_path = qemu._verdict_path, lambda: verdict  # type: ignore[assignment]
        try:
            with session.guest(art.bzimage, img, Path(d), accel="auto") as g:
                reason = g.accel_reason
        finally:
            qemu._verdict_path = real  # type: ignore[assignment]
    seconds = float(reason.split(" in ", 1)[1].split(" s", 1)[0]) if " in " in reason else None
    return {"kvm_probe_s": seconds, "reason": reason, "target_s": 5.0}


def silent_probe() -> dict[str, object]:
    from orchestrator.build import image, kernel
    from orchestrator.errors import BootError
    from orchestrator.machine import qemu

    art, img = kernel.build_kernel(kernel.KernelRequest()), image.build_image()
    with tempfile.TemporaryDirectory(prefix="thpvm-bench-") as d:
        req = qemu.BootRequest(art.bzimage, img, Path(d), qemu.load_machine_profile(), "tcg",
                               append="loglevel=0 init=/bin/cat", ready_timeout=120,
                               probe_s=qemu.KVM_VERDICT_S)
        start = time.monotonic()
        try:
            with qemu.Vm(req):
                return {"error": "the silent guest became ready"}
        except BootError as e:
            return {"silent_probe_s": round(time.monotonic() - start, 2),
                    "reason": e.message[:160], "target_s": qemu.KVM_VERDICT_S}


def sigkill_mid_boot() -> dict[str, object]:
    from orchestrator.machine import leftovers

    with tempfile.TemporaryDirectory(prefix="thpvm-bench-") as d:
        out = Path(d) / "run"
        child = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "boot", "--accel",
                                  "tcg", "--out", str(out), "sleep", "600"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 900
        while not ((out / leftovers.LEASE).exists() and (out / "serial.log").exists()):
            if time.monotonic() > deadline or child.poll() is not None:
                child.kill()
                return {"error": "QEMU never started"}
            time.sleep(0.05)
        qemu_pid = json.loads((out / leftovers.LEASE).read_text())["qemu"][0]
        start = time.monotonic()
        child.send_signal(signal.SIGKILL)
        child.wait()
        while leftovers.ProcId.of(qemu_pid) is not None and time.monotonic() - start < 30:
            time.sleep(0.01)
        gone = leftovers.ProcId.of(qemu_pid) is None
        leftovers.reap()
        return {"sigkill_qemu_gone_s": round(time.monotonic() - start, 3) if gone else None,
                "target_s": 2.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report = {"kvm_probe": kvm_probe(), "silent_probe": silent_probe(),
              "sigkill_mid_boot": sigkill_mid_boot()}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
