"""A cold `make test` is mostly kernel builds; this orders the session around them
(issue 11: a cold `.ci/run` within 60 min on a 2-core host).

- The kernels the integration tests need are built in the background from the start of the
  session, at nice 19, one chain of `thpvm kernel build`s per tree (CHAINS).
- The unit tests run first, while those builds have the other core.
- The integration tests run in the order of the kernels they need, those needing the later
  kernels of the chains last. A test needing a kernel still being built waits on its build
  lock (build/kernel.py) and then finds it cached.

Nice 19 reaches the background makes across their new sessions' autogroups
(proc._keep_niceness), so the tests' own guests and builds are not slowed by them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

DEBUG = str(Path(__file__).resolve().parents[1] / "kconfigs" / "debug.config")

#: Background build chains (each `thpvm kernel build ARGS` after the other), and for each
#: kernel the integration test files that need it. Files not named need only the first.
CHAINS: list[list[tuple[tuple[str, ...], tuple[str, ...]]]] = [
    [((), ()),
     (("--fragment", DEBUG), ("test_hang_real.py", "test_warn_real.py", "test_matrix_real.py",
                              "test_workloads_real.py"))],
    [(("--tree", "debian:7.2", "--fragment", DEBUG), ("test_kernel_72.py",
                                                     "test_workloads_72.py"))],
]
DISABLE_VAR = "THPVM_TEST_NO_PREBUILD"


def is_integration(path: str) -> bool:
    return "/integration/" in path


def stage(path: str) -> int:
    """Unit tests 0, integration tests on the default kernel 1, then one per later kernel."""
    if not is_integration(path):
        return 0
    name = Path(path).name
    later = [files for chain in CHAINS for _, files in chain if files]
    return next((2 + i for i, files in enumerate(later) if name in files), 1)


def start(test_paths: Iterable[str], logs: Path) -> list[subprocess.Popen[bytes]]:
    """Start the chains the selected integration tests need; output in logs/chain-N.log."""
    files = {Path(p).name for p in test_paths if is_integration(p)}
    if not files or os.environ.get(DISABLE_VAR):
        return []
    thpvm = Path(sys.executable).with_name("thpvm")
    chains = []
    for i, chain in enumerate(CHAINS):
        wanted = [args for args, needed_by in chain if not needed_by or files & set(needed_by)]
        if not wanted:
            continue
        script = " && ".join(" ".join([str(thpvm), "kernel", "build", *a]) for a in wanted)
        with open(logs / f"chain-{i}.log", "w") as out:
            # the tests' own session: thpvm starts each command of its own in a new one,
            # at the same nice value, so nothing here can reach the controlling terminal
            chains.append(subprocess.Popen(["nice", "-n", "19", "sh", "-c", script],
                                           stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, process_group=0))
    return chains


def stop(chains: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM what still runs (thpvm stops its make) and wait for it."""
    for c in chains:
        if c.poll() is None:
            os.killpg(c.pid, signal.SIGTERM)
            c.wait(timeout=60)
