"""`thpvm bisect-step`: the `git bisect run` script of thpvm.

It judges the commit checked out in a tree with exactly the exit
codes `git bisect run` understands, and nothing else:

====  ==================================================================
0     good: the (majority of) runs passed
1     bad: a test failed, the model mismatched or the kernel crashed in a
      test (and a boot failure with ``--boot-failure bad``)
125   skip: build, image, QEMU, SSH or boot failure; flaky repeats
128   abort: bad arguments, an unusable tree, a thpvm bug
====  ==================================================================

It appends one JSON line per commit to the step log (``--step-log`` or
``$THPVM_BISECT_LOG``): revision, decision, every run's outcome, verdict and
duration. `thpvm bisect` (module `bisect`) sets that up; the step is also
meant for direct use: ``git bisect run thpvm bisect-step --suite selftest``.

Under `thpvm bisect` the step dies with it, however it dies (``$THPVM_BISECT_LIFELINE``,
`lifeline`/`watch_lifeline`): the step is not thpvm's child but git's (or a shell's
under git), so PR_SET_PDEATHSIG, which names the parent thread, cannot reach it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.build import git as gitrepo
from orchestrator.errors import EXIT_ABORT, EXIT_FOR_STEP, ThpvmError, UserError
from orchestrator.jobs import trials
from orchestrator.jobs.vmtest import VmTestRequest

log = logging.getLogger(__name__)

STEP_LOG_ENV = "THPVM_BISECT_LOG"
LIFELINE_ENV = "THPVM_BISECT_LIFELINE"


@contextmanager
def lifeline() -> Iterator[dict[str, str]]:
    """A pipe whose write end only this process holds (not inherited), for the
    block: yields the environment naming its read end, which the caller passes to
    the child (`pass_fds`). Every holder of the read end sees EOF as soon as this
    process is gone, however it died (the kernel closes a SIGKILLed process's files)."""
    r, w = os.pipe()  # both close-on-exec: no other child holds the write end
    try:
        yield {LIFELINE_ENV: str(r)}
    finally:
        os.close(r)
        os.close(w)


def watch_lifeline() -> bool:
    """If `$THPVM_BISECT_LIFELINE` names a pipe, SIGKILL this process at its EOF (the
    `thpvm bisect` that started the step died): its QEMU and build children follow by
    their PR_SET_PDEATHSIG. True if watching. An EOF already there kills at once."""
    raw = os.environ.get(LIFELINE_ENV)
    if not raw:
        return False
    try:
        fd = int(raw)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise OSError(f"descriptor {fd} is not a pipe")
    except (ValueError, OSError) as e:
        log.warning("ignoring $%s=%r: %s", LIFELINE_ENV, raw, e)
        return False
    os.set_inheritable(fd, False)  # the step's own children need not hold it

    def watch() -> None:
        try:
            while os.read(fd, 512):  # nobody writes: returns only at EOF
                pass
        except OSError as e:
            log.warning("lifeline %d unreadable (%s): not watching", fd, e)
            return
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="bisect-lifeline", daemon=True).start()
    return True


@dataclass
class StepOptions:
    """A `bisect-step` invocation: the test template, the policy, the step log."""

    tree: Path = Path(".")
    test: VmTestRequest = field(default_factory=VmTestRequest)
    policy: trials.TrialPolicy = field(default_factory=trials.TrialPolicy)
    step_log: Path | None = None
    out: Path | None = None


def run_step(opts: StepOptions, tester: trials.Tester | None = None) -> int:
    """Judge the commit checked out in `opts.tree`; log it; return 0, 1, 125 or 128."""
    watch_lifeline()
    start = time.monotonic()
    entry: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tree": None,
                             "rev": None, "subject": None}
    try:
        code = _judge(opts, tester or trials.vm_tester, entry)
    except ThpvmError as e:
        kind = "user" if isinstance(e, UserError) else "error"
        entry.update(decision="abort", reason=e.message, detail=e.detail, error_kind=kind)
        print(f"thpvm bisect-step: {e.message}", file=sys.stderr)
        code = EXIT_ABORT
    except Exception as e:  # a thpvm bug must abort the bisect, not judge the commit
        log.exception("bisect-step crashed")
        entry.update(decision="abort", reason=f"thpvm bug: {type(e).__name__}: {e}",
                     error_kind="bug")
        code = EXIT_ABORT
    entry.update(exit_code=code, duration=round(time.monotonic() - start, 1))
    _append_log(opts.step_log, entry)
    return code


def _judge(opts: StepOptions, tester: trials.Tester, entry: dict[str, Any]) -> int:
    opts.policy.check()
    tree = gitrepo.toplevel(opts.tree.resolve())
    rev = gitrepo.head(tree)
    entry.update(tree=str(tree), rev=rev, subject=gitrepo.subject(tree, rev))
    log.info("bisect-step: testing %s %s", rev[:12], entry["subject"])
    out_root = opts.out / rev[:12] if opts.out else None
    runs = trials.run_trials(opts.test, tree, opts.policy, out_root, tester, label="run")
    decision = trials.decide([r.status for r in runs], opts.policy.repeat, opts.policy.flaky)
    entry.update(decision=decision.verdict, flaky=decision.flaky, reason=decision.reason,
                 runs=[r.to_json() for r in runs])
    log.info("bisect-step: %s is %s: %s", rev[:12], decision.verdict, decision.reason)
    return EXIT_FOR_STEP[decision.verdict]


def _append_log(path: Path | None, entry: dict[str, Any]) -> None:
    path = path or (Path(os.environ[STEP_LOG_ENV]) if os.environ.get(STEP_LOG_ENV) else None)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=str, sort_keys=True) + "\n")
    except OSError as e:  # the verdict matters more than the log line
        log.error("could not append to step log %s: %s", path, e)


def read_step_log(path: Path) -> list[dict[str, Any]]:
    """The entries of a step log; lines that are not JSON are skipped."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("ignoring a corrupt step log line in %s", path)
    return entries
