"""Which QEMU processes run now (to prove none outlives thpvm)."""

import subprocess


def qemu_pids() -> set[int]:
    """PIDs of running qemu-system-x86_64 processes."""
    out = subprocess.run(["pgrep", "-f", "^qemu-system-x86_64"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}
