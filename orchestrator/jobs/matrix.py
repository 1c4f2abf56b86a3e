"""`thpvm matrix run`: the jobs of a matrix (or a shard of it), N guests at a time.

Every job is a child `thpvm vm-test --out <out>/jobs/<job id>` in its own process
group (so a crash or hang of one job never takes the others down). Before the first
job, every kernel of the selection and the guest image are built once, one after the
other (builds use every core; the jobs then hit the cache, and a kernel key another
process is building is waited for on its lock). Ctrl-C (or SIGTERM) stops every
running job: each child unwinds like its own Ctrl-C and stops its QEMU.

Output directory::

    matrix.json                  the plan, the selection, build and job records
    build-<kernel>.log           kernel build output (image.log for the image)
    jobs/<job id>/               a vm-test run directory + matrix-job.json + job.log
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import cache, proc
from orchestrator.errors import (
    EXIT_ABORT,
    EXIT_COULD_NOT_TEST,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TEST_FAILED,
    EXIT_USER_ERROR,
    UserError,
)
from orchestrator.jobs import matrixplan
from orchestrator.jobs.matrixplan import Job
from orchestrator.jobs.matrixspec import MatrixKernel, MatrixSpec, load_matrix

log = logging.getLogger(__name__)

JOB_RECORD = "matrix-job.json"
MATRIX_RECORD = "matrix.json"
STOP_GRACE = 60.0  # a job's QEMU stop is QMP quit (2 s) + wait (5 s) + kill, loaded host
BUILD_TIMEOUT = 4 * 3600.0
STATUS_BY_EXIT = {EXIT_OK: "pass", EXIT_TEST_FAILED: "fail", EXIT_USER_ERROR: "bad-input",
                  EXIT_COULD_NOT_TEST: "could-not-test", EXIT_INTERRUPTED: "interrupted"}

Say = Callable[[str], None]


@dataclass
class MatrixRunRequest:
    """`thpvm matrix run FILE [--jobs N] [--shard I/N] [--out DIR] [--only ID]`."""

    matrix: str
    parallel: int = 1
    shard: str | None = None
    out: Path | None = None
    only: list[str] = field(default_factory=list)


@dataclass
class MatrixRunOutcome:
    exit_code: int
    out: Path
    records: list[dict[str, Any]]


def thpvm_argv(*args: str) -> list[str]:
    """This thpvm, as a child process (the same interpreter and package)."""
    return [sys.executable, "-m", "orchestrator.cli", *args]


def select_jobs(spec: MatrixSpec, shard: str | None, only: list[str]) -> list[Job]:
    """The plan, narrowed to a shard and/or to job ids (unknown id: UserError)."""
    jobs = matrixplan.plan_jobs(spec)
    if shard:
        jobs = matrixplan.shard(jobs, *matrixplan.parse_shard(shard))
    if only:
        known = {j.id for j in jobs}
        unknown = [i for i in only if i not in known]
        if unknown:
            raise UserError(f"--only {unknown}: not jobs of this selection; known: "
                            f"{sorted(known)}")
        jobs = [j for j in jobs if j.id in only]
    return jobs


def run_matrix(req: MatrixRunRequest, say: Say = print) -> MatrixRunOutcome:
    """Build, then run the selected jobs `req.parallel` at a time; see the module doc."""
    if req.parallel < 1:
        raise UserError(f"--jobs {req.parallel}: expected at least 1")
    spec = load_matrix(req.matrix)
    jobs = select_jobs(spec, req.shard, req.only)
    out = req.out or cache.new_run_dir(f"matrix-{spec.name}")
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {
        "schema": "thpvm-matrix-run/1", "plan": matrixplan.plan_json(spec, jobs),
        "shard": req.shard, "parallel": req.parallel, "host": socket.gethostname(),
        "started": _now(), "builds": [], "jobs": []}
    cache.write_json(out / MATRIX_RECORD, state)
    start = time.monotonic()
    failed_kernels = _prepare(spec, jobs, out, state, say)
    runner = _Scheduler(spec, out, req.parallel, say)
    try:
        state["jobs"] = runner.run(jobs, failed_kernels)
    finally:
        state["jobs"] = state["jobs"] or runner.records
        state.update(finished=_now(), wall_seconds=round(time.monotonic() - start, 1))
        cache.write_json(out / MATRIX_RECORD, state)
    return MatrixRunOutcome(aggregate_exit([r["exit_code"] for r in state["jobs"]]), out,
                            state["jobs"])


def aggregate_exit(codes: list[int]) -> int:
    """One exit code for many jobs: an abort beats bad input beats a failure beats
    could-not-test beats pass (never hides a failure behind a skip)."""
    for code in (EXIT_ABORT, EXIT_INTERRUPTED, EXIT_USER_ERROR, EXIT_TEST_FAILED,
                 EXIT_COULD_NOT_TEST):
        if code in codes:
            return code
    unknown = [c for c in codes if c != EXIT_OK]
    return EXIT_ABORT if unknown else EXIT_OK


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _prepare(spec: MatrixSpec, jobs: list[Job], out: Path, state: dict[str, Any],
             say: Say) -> dict[str, int]:
    """Build each kernel of `jobs` and the image once; {kernel name: exit code} of failures."""
    kernels = list({j.kernel.name: j.kernel for j in jobs}.values())
    steps: list[tuple[str, list[str], MatrixKernel | None]] = [
        (f"kernel {k.name}", ["kernel", "build", *k.vmtest_args()], k) for k in kernels]
    if jobs:
        steps.append(("image", ["image", "build"], None))
    failed: dict[str, int] = {}
    for label, argv, kernel in steps:
        logname = f"build-{kernel.name}.log" if kernel else "image.log"
        say(f"[build] {label} ...")
        t0 = time.monotonic()
        res = proc.run(thpvm_argv(*argv), log_path=out / logname, check=False,
                       timeout=BUILD_TIMEOUT, keep_output=False)
        seconds = round(time.monotonic() - t0, 1)
        state["builds"].append({"what": label, "exit_code": res.returncode,
                                "seconds": seconds, "log": logname})
        cache.write_json(out / MATRIX_RECORD, state)
        say(f"[build] {label}: exit {res.returncode} in {seconds:.0f} s")
        if res.returncode == EXIT_INTERRUPTED or res.returncode < 0:
            raise KeyboardInterrupt(f"{label} interrupted")
        if res.returncode != EXIT_OK:
            if kernel is None:  # no image: no job can run
                failed.update({k.name: res.returncode for k in kernels})
            else:
                failed[kernel.name] = res.returncode
    return failed


class _Scheduler:
    """Start jobs up to `parallel` at a time; record each as it ends; stop all on Ctrl-C."""

    def __init__(self, spec: MatrixSpec, out: Path, parallel: int, say: Say) -> None:
        self.spec, self.out, self.parallel, self.say = spec, out, parallel, say
        self.records: list[dict[str, Any]] = []
        self.running: dict[str, tuple[subprocess.Popen[bytes], dict[str, Any], float]] = {}

    def run(self, jobs: list[Job], failed_kernels: dict[str, int]) -> list[dict[str, Any]]:
        pending = list(jobs)
        try:
            while pending or self.running:
                while pending and len(self.running) < self.parallel:
                    job = pending.pop(0)
                    if job.kernel.name in failed_kernels:
                        self._not_run(job, failed_kernels[job.kernel.name])
                    else:
                        self._start(job)
                self._reap()
                time.sleep(0.5)
        except BaseException:
            self._stop_all()
            for job in pending:
                self._not_run(job, EXIT_INTERRUPTED)
            raise
        return sorted(self.records, key=lambda r: r["index"])

    def _record(self, job: Job, argv: list[str]) -> dict[str, Any]:
        return {"schema": "thpvm-matrix-job/1", "matrix": self.spec.name, "job": job.id,
                "index": job.index, "kernel": job.kernel.name, "source": job.kernel.source,
                "suite": job.suite, "repeat": job.repeat, "host": socket.gethostname(),
                "argv": argv, "started": _now(), "finished": "", "wall_seconds": None,
                "exit_code": None, "status": "running"}

    def _start(self, job: Job) -> None:
        job_dir = self.out / "jobs" / job.id
        job_dir.mkdir(parents=True, exist_ok=True)
        argv = matrixplan.vmtest_argv(self.spec, job, str(job_dir))
        rec = self._record(job, argv)
        cache.write_json(job_dir / JOB_RECORD, rec)
        with open(job_dir / "job.log", "ab") as logf:
            popen = proc.spawn(thpvm_argv(*argv), stdout=logf.fileno())
        self.running[job.id] = (popen, rec, time.monotonic())
        self.say(f"[job {job.index + 1}] {job.id}: started")

    def _reap(self) -> None:
        for job_id, (popen, rec, t0) in list(self.running.items()):
            code = popen.poll()
            if code is not None:
                del self.running[job_id]
                self._finish(rec, code, time.monotonic() - t0)

    def _finish(self, rec: dict[str, Any], code: int, seconds: float) -> None:
        code = EXIT_INTERRUPTED if code < 0 else code
        rec.update(exit_code=code, status=STATUS_BY_EXIT.get(code, "error"), finished=_now(),
                   wall_seconds=round(seconds, 1))
        cache.write_json(self.out / "jobs" / rec["job"] / JOB_RECORD, rec)
        self.records.append(rec)
        self.say(f"[job {rec['index'] + 1}] {rec['job']}: {rec['status']} (exit {code}) "
                 f"in {seconds:.0f} s")

    def _not_run(self, job: Job, code: int) -> None:
        rec = self._record(job, [])
        job_dir = self.out / "jobs" / job.id
        job_dir.mkdir(parents=True, exist_ok=True)
        rec.update(exit_code=code, finished=_now(), wall_seconds=0.0,
                   status="interrupted" if code == EXIT_INTERRUPTED else "not-run",
                   reason="interrupted before it started" if code == EXIT_INTERRUPTED
                   else f"the kernel {job.kernel.name} did not build (exit {code})")
        cache.write_json(job_dir / JOB_RECORD, rec)
        self.records.append(rec)

    def _stop_all(self) -> None:
        if not self.running:
            return
        self.say(f"[matrix] stopping {len(self.running)} running job(s) ...")
        items = list(self.running.items())
        proc.stop_groups([p for _, (p, _, _) in items], STOP_GRACE)
        for job_id, (popen, rec, t0) in items:
            del self.running[job_id]
            self._finish(rec, popen.returncode if popen.returncode is not None
                         else EXIT_INTERRUPTED, time.monotonic() - t0)
