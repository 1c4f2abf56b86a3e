"""The only subprocess chokepoint of thpvm.

Every external command (make, mmdebstrap, qemu-img, gcc, git, QEMU itself)
goes through `run` or `spawn`: argv lists only, the command logged, its output
streamed line by line into a log file, a deadline, and the whole process group
killed in `finally` so nothing outlives thpvm. Even a SIGKILLed thpvm, which
runs no `finally`, takes its children along: each is started with
PR_SET_PDEATHSIG(SIGKILL) (see `_die_with_parent`). A niced thpvm (or thread) keeps its
children niced, scheduler autogroups notwithstanding (see `_keep_niceness`).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import InfraError, ThpvmError

log = logging.getLogger(__name__)


@dataclass
class Deadline:
    """An absolute point in time, created once and passed down to every step."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at


@dataclass
class Result:
    """What a finished command left behind."""

    argv: list[str]
    returncode: int
    output: str
    elapsed: float
    log_path: Path | None = None
    timed_out: bool = False
    tail: list[str] = field(default_factory=list)


def kill_group(popen: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """Terminate a child's whole process group: SIGTERM, then SIGKILL after `grace` s."""
    if popen.poll() is not None:
        _killpg(popen.pid, signal.SIGKILL)  # stragglers of an exited leader
        return
    _killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _killpg(popen.pid, signal.SIGKILL)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log.error("process group %d did not die after SIGKILL", popen.pid)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def _prctl() -> Callable[..., int]:
    return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]


def _die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` that makes the child get SIGKILL when thpvm dies, however it dies.

    The kernel sends it when the *thread* that forked the child exits, so a child
    must not outlive the thread that started it (every `Vm` and `run` is scoped to
    one thread's `with`/call). If thpvm died before the prctl took effect, the child
    sees another parent and exits at once instead of running orphaned.
    """
    prctl, parent = _prctl(), os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(126)
        _keep_niceness()

    return preexec


AUTOGROUP = "/proc/self/autogroup"


def _keep_niceness() -> None:
    """In the child, after its setsid(): give its new autogroup the nice value it inherited.

    On a host with scheduler autogroups (CONFIG_SCHED_AUTOGROUP, on by default in Debian's
    kernels) every session is a task group whose CPU share is that of nice 0, and a task's
    own nice value only ranks it inside its group. Each child here starts a session of its
    own, so without this a `nice thpvm ...`, or a niced background thread, would start
    `make -j` at full weight against everything else on the host (measured in a cold
    `make test`: with two nice-19 background builds, the tests' own build took 680 s
    instead of 242 s).
    Only a positive nice value is carried over (lowering priority needs no privilege); with
    no autogroup support the write fails and the child's own nice value is all there is.
    """
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    if nice <= 0:
        return
    try:
        with open(AUTOGROUP, "w") as f:
            f.write(str(nice))
    except OSError:
        pass


def stop_groups(popens: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """Stop many children at once: SIGTERM every group (each child unwinds its own
    `finally`, e.g. stops its QEMU), wait up to `grace` s for all, then SIGKILL the rest."""
    for p in popens:
        if p.poll() is None:
            _killpg(p.pid, signal.SIGTERM)
    deadline = Deadline.after(grace)
    for p in popens:
        try:
            p.wait(timeout=deadline.remaining())
        except subprocess.TimeoutExpired:
            log.warning("process group %d ignored SIGTERM for %.0f s: SIGKILL", p.pid, grace)
    for p in popens:
        kill_group(p, grace=3.0)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | None = subprocess.DEVNULL,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start a long-lived child (QEMU) in its own process group; the caller must
    `kill_group` it in a `finally`, and the kernel kills it if thpvm dies first."""
    argv = [str(a) for a in argv]
    log.debug("spawn: %s", shlex.join(argv))
    try:
        return subprocess.Popen(
            argv, cwd=cwd, env=_env(env), stdout=stdout, stderr=subprocess.STDOUT,
            stdin=stdin, start_new_session=True, preexec_fn=_die_with_parent(),
        )
    except FileNotFoundError as e:
        raise InfraError(f"command not found: {argv[0]} (run 'make setup')") from e


def _env(extra: Mapping[str, str] | None) -> dict[str, str] | None:
    if extra is None:
        return None
    merged = dict(os.environ)
    merged.update(extra)
    return merged


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float | None = None,
    deadline: Deadline | None = None,
    check: bool = True,
    input: bytes | None = None,
    on_line: Callable[[str], None] | None = None,
    keep_output: bool = True,
    error: type[ThpvmError] = InfraError,
    pass_fds: Sequence[int] = (),
) -> Result:
    """Run a command to completion and return its `Result`.

    Output (stdout and stderr merged) is streamed to `log_path` (appended) and
    to `on_line`; it is kept in `Result.output` unless `keep_output` is false,
    and its last 50 lines always in `Result.tail`. On a non-zero exit with
    `check`, or on timeout, raises `error` with the tail as detail. `pass_fds`
    stay open in the child (every other descriptor is closed).
    """
    args = [os.fspath(a) for a in argv]
    limit = _limit(timeout, deadline)
    log.info("run: %s", shlex.join(args))
    start = time.monotonic()
    try:
        popen = subprocess.Popen(
            args, cwd=cwd, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent(), pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as e:
        raise error(f"command not found: {args[0]} (run 'make setup')") from e
    timed_out = threading.Event()
    timer = _arm_timer(popen, limit, timed_out)
    tail: deque[str] = deque(maxlen=50)
    chunks: list[str] = []
    try:
        _feed_input(popen, input)
        _pump(popen, log_path, tail, chunks if keep_output else None, on_line)
        popen.wait()
    finally:
        if timer:
            timer.cancel()
        kill_group(popen, grace=1.0)
    result = Result(args, popen.returncode, "".join(chunks), time.monotonic() - start,
                    log_path, timed_out.is_set(), list(tail))
    _check(result, check, error)
    return result


def _limit(timeout: float | None, deadline: Deadline | None) -> float | None:
    limits = [x for x in (timeout, deadline.remaining() if deadline else None) if x is not None]
    return min(limits) if limits else None


def _arm_timer(popen: subprocess.Popen[bytes], limit: float | None,
               flag: threading.Event) -> threading.Timer | None:
    if limit is None:
        return None

    def expire() -> None:
        flag.set()
        _killpg(popen.pid, signal.SIGKILL)

    timer = threading.Timer(limit, expire)
    timer.daemon = True
    timer.start()
    return timer


def _feed_input(popen: subprocess.Popen[bytes], data: bytes | None) -> None:
    if data is None or popen.stdin is None:
        return
    try:
        popen.stdin.write(data)
        popen.stdin.close()
    except BrokenPipeError:
        pass


def _pump(popen: subprocess.Popen[bytes], log_path: Path | None, tail: deque[str],
          chunks: list[str] | None, on_line: Callable[[str], None] | None) -> None:
    assert popen.stdout is not None
    logf = open(log_path, "a", encoding="utf-8", errors="replace") if log_path else None
    try:
        for raw in popen.stdout:
            line = raw.decode("utf-8", errors="replace")
            tail.append(line.rstrip("\n"))
            if chunks is not None:
                chunks.append(line)
            if logf:
                logf.write(line)
            if on_line:
                on_line(line.rstrip("\n"))
    finally:
        if logf:
            logf.close()


def _check(result: Result, check: bool, error: type[ThpvmError]) -> None:
    cmd = shlex.join(result.argv[:6]) + (" ..." if len(result.argv) > 6 else "")
    where = f" (log: {result.log_path})" if result.log_path else ""
    if result.timed_out:
        raise error(f"timed out after {result.elapsed:.0f} s: {cmd}{where}",
                    "\n".join(result.tail[-20:]))
    if check and result.returncode != 0:
        raise error(f"exit status {result.returncode}: {cmd}{where}",
                    "\n".join(result.tail[-20:]))


def run_interactive(argv: Sequence[str | os.PathLike[str]]) -> int:
    """Run a command attached to the user's terminal (e.g. `ssh` for `thpvm shell`).

    It stays in thpvm's process group so the terminal's job control works; it
    is terminated if thpvm is interrupted.
    """
    args = [os.fspath(a) for a in argv]
    log.info("run (interactive): %s", shlex.join(args))
    popen = subprocess.Popen(args)
    try:
        return popen.wait()
    finally:
        if popen.poll() is None:
            popen.terminate()
            popen.wait()
