"""A cold `make test` is mostly kernel builds; this orders the session around them
(issue 11: a cold `.ci/run` within 60 min on a 2-core host).

- The kernels the integration tests need are built in the background from the start of the
  session, at nice 19, one `thpvm kernel build` after the other (CHAIN).
- The unit tests run first, while those builds have the other core.
- The integration tests run in the order of the kernels they need, those needing the later
  kernels of the chain last. A test needing a kernel still being built waits on its build
  lock (build/kernel.py) and then finds it cached.

Nice 19 reaches the background makes across their new sessions' autogroups
(proc._keep_niceness): against a test's guest or build at nice 0 they get a weight of 15
to 1024, i.e. what the tests leave idle. In a cold `.ci/run` this took the cores from about
half busy during the guest tests to 94%, and the run from 72.5 to 50.5 min.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from orchestrator import proc

DEBUG = str(Path(__file__).resolve().parents[1] / "kconfigs" / "debug.config")

#: The background builds, one after the other (`thpvm kernel build ARGS`), in the order the
#: tests need them, and for each the integration test files that need it (files not named
#: here need only the first). One chain, not one per tree: a test waiting for the first
#: kernel must not share the CPU with a build of a kernel wanted an hour later.
CHAIN: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    ((), ()),
    (("--fragment", DEBUG), ("test_hang_real.py", "test_warn_real.py", "test_matrix_real.py",
                             "test_workloads_real.py")),
    (("--tree", "debian:7.2", "--fragment", DEBUG), ("test_kernel_72.py",
                                                    "test_workloads_72.py")),
]
DISABLE_VAR = "THPVM_TEST_NO_PREBUILD"


def is_integration(path: str) -> bool:
    return "/integration/" in path


def stage(path: str) -> int:
    """Unit tests 0, integration tests on the default kernel 1, then one per later kernel."""
    if not is_integration(path):
        return 0
    name = Path(path).name
    later = [files for _, files in CHAIN if files]
    return next((2 + i for i, files in enumerate(later) if name in files), 1)


def start(test_paths: Iterable[str], log: Path) -> subprocess.Popen[bytes] | None:
    """Start the builds the selected integration tests need, output to `log`. Through
    proc.spawn: its own session and process group, and it dies with the test session even
    when that is SIGKILLed."""
    files = {Path(p).name for p in test_paths if is_integration(p)}
    if not files or os.environ.get(DISABLE_VAR):
        return None
    thpvm = Path(sys.executable).with_name("thpvm")
    wanted = [args for args, needed_by in CHAIN if not needed_by or files & set(needed_by)]
    script = " && ".join(shlex.join([str(thpvm), "kernel", "build", *a]) for a in wanted)
    with open(log, "w") as out:
        return proc.spawn(["nice", "-n", "19", "sh", "-c", script], stdout=out.fileno())


def stop(chain: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM its group if it still runs (thpvm stops its make), SIGKILL after 60 s."""
    if chain is not None:
        proc.kill_group(chain, grace=60.0)
