"""`make bench`: speed figures of thpvm on this machine, written as JSON.

- boot: QEMU start → readiness marker → SSH session, median of N boots (target ≤ 3 s with TCG)
- vm-test warm: wall time of a whole `thpvm vm-test` with kernel and image cached (target ≤ 60 s)
- model: PTEs simulated per second through full scans of a 100 GiB layout (bench_model.py);
  the issue-11 targets: scan >= 50 M PTE/s, a pass collapsing every PMD >= 20 M PTE/s
- faults: KVM probe verdict, silent-guest probe verdict, QEMU gone after SIGKILL (bench_faults.py)

Usage: python bench/run.py --out FILE [--boots N] [--skip vm-test,model]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def bench_boot(boots: int) -> dict[str, object]:
    from orchestrator.build import image, kernel
    from orchestrator.machine import qemu, session

    art = kernel.build_kernel(kernel.KernelRequest())
    img = image.build_image()
    ready, ssh, total, accel = [], [], [], ""
    for _ in range(boots):
        with tempfile.TemporaryDirectory(prefix="thpvm-bench-") as d:
            start = time.monotonic()
            with session.guest(art.bzimage, img, Path(d), accel="auto") as g:
                total.append(time.monotonic() - start)
                ready.append(g.boot_seconds)
                ssh.append(g.ssh_seconds)
                accel = g.accel
    return {"accel": accel, "boots": boots, "qemu_version": qemu.qemu_version(),
            "ready_median_s": round(statistics.median(ready), 3),
            "ssh_after_ready_median_s": round(statistics.median(ssh), 3),
            "boot_to_ssh_median_s": round(statistics.median(
                [r + s for r, s in zip(ready, ssh, strict=True)]), 3),
            "with_overlay_and_swap_setup_median_s": round(statistics.median(total), 3),
            "target_s": 3.0}


def bench_vm_test() -> dict[str, object]:
    from orchestrator.jobs import vmtest

    vmtest.run_vm_test(vmtest.VmTestRequest())  # warm the caches (kernel, image, driver)
    with tempfile.TemporaryDirectory(prefix="thpvm-bench-") as d:
        start = time.monotonic()
        outcome = vmtest.run_vm_test(vmtest.VmTestRequest(out=Path(d) / "run"))
        wall = time.monotonic() - start
        durations = outcome.result["metadata"]["durations"]
    return {"wall_s": round(wall, 1), "exit_code": outcome.exit_code, "stages_s": durations,
            "target_s": 60.0}


def bench_model(name: str = "bench_model.py") -> dict[str, object]:
    script = HERE / name
    if not script.exists():
        return {"error": f"bench/{name} missing"}
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        subprocess.run([sys.executable, str(script), "--out", tmp.name], check=True)
        return dict(json.loads(Path(tmp.name).read_text()))


def summary(name: str, result: dict[str, object]) -> str:
    """One line per result; the model's is its two targets, met or not."""
    targets = result.get("targets") if name == "model" else None
    if not isinstance(targets, dict):
        return json.dumps(result)
    return "; ".join(
        f"{t}: {v['cpu_ptes_per_s_median'] / 1e6:.1f} M PTE/s CPU, "
        f"{v['wall_ptes_per_s_median'] / 1e6:.1f} wall (target {v['target_ptes_per_s'] / 1e6:.0f}: "
        f"{'met' if v['met_cpu'] else 'NOT met'} on CPU time, "
        f"{'met' if v['met_wall'] else 'not met'} on wall time)"
        for t, v in targets.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--boots", type=int, default=5)
    ap.add_argument("--skip", default="", help="comma list of: boot,vm-test,model,faults")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    report: dict[str, object] = {"host": platform.node(), "cpus": __import__("os").cpu_count(),
                                 "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for name, fn in (("model", bench_model), ("boot", lambda: bench_boot(args.boots)),
                     ("vm-test", bench_vm_test),
                     ("faults", lambda: bench_model("bench_faults.py"))):
        if name in skip:
            continue
        print(f"bench: {name}...", flush=True)
        report[name] = fn()
        print(f"bench: {name}: {summary(name, report[name])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench: written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
