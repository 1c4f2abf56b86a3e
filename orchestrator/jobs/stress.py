"""Verdicts under load: run the workloads (and whole vm-tests) repeatedly while a
real CPU load keeps every host core busy, and count what went wrong.

`cpu_hog()` starts the load (stress-ng from Debian, else one busy Python loop per
core) and always stops it; `stress()` runs the rounds and returns a `StressReport`
(runs, mismatches, errors, the slowest checkpoint wait). `make stress` (bench/stress.py)
and the shortened under-load integration test both call it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import proc
from orchestrator.build.kernel import KernelRequest
from orchestrator.errors import ThpvmError
from orchestrator.jobs import vmtest

log = logging.getLogger(__name__)

_BUSY_LOOP = "while True: pass"


@contextmanager
def cpu_hog(cpus: int | None = None) -> Iterator[str]:
    """Keep `cpus` (default: every) host core busy while the block runs; yields a
    description of the load. The load is stopped on every way out."""
    n = cpus or os.cpu_count() or 1
    stress_ng = shutil.which("stress-ng")
    if stress_ng:
        argvs = [[stress_ng, "--cpu", str(n), "--cpu-method", "matrixprod", "--quiet"]]
        what = f"stress-ng --cpu {n}"
    else:
        argvs = [[sys.executable, "-c", _BUSY_LOOP] for _ in range(n)]
        what = f"{n} busy Python loops (stress-ng not installed)"
    children = []
    try:
        for argv in argvs:
            children.append(proc.spawn(argv))
        log.info("CPU load started: %s", what)
        yield what
    finally:
        for child in children:
            proc.kill_group(child, grace=2)
        log.info("CPU load stopped: %s", what)


@dataclass
class StressReport:
    """What the rounds saw. A mismatch is a model-vs-kernel verdict on an unpatched
    kernel (under load: a false mismatch); an error is a run that could not judge."""

    load: str = ""
    workload_runs: int = 0
    workload_mismatches: list[str] = field(default_factory=list)
    workload_errors: list[str] = field(default_factory=list)
    vmtest_runs: int = 0
    vmtest_failures: list[str] = field(default_factory=list)
    vmtest_errors: list[str] = field(default_factory=list)
    slowest_wait_ms: int = 0
    slowest_wait: str = ""
    guest_boot_seconds: list[float] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    load_average: list[list[float]] = field(default_factory=list)
    seeded: dict[str, dict[str, int]] = field(default_factory=dict)  # patch: runs/caught/errors
    seeded_misses: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """The figures `make stress` prints."""
        return (f"under load ({self.load}): workloads {self.workload_runs} runs, "
                f"{len(self.workload_mismatches)} mismatches, {len(self.workload_errors)} errors; "
                f"vm-test {self.vmtest_runs} runs, {len(self.vmtest_failures)} failed, "
                f"{len(self.vmtest_errors)} errors; slowest checkpoint wait "
                f"{self.slowest_wait_ms} ms ({self.slowest_wait or '-'})"
                + "".join(f"; {name}: caught {c['caught']} of {c['runs']} ({c['errors']} errors)"
                          for name, c in self.seeded.items()))


def slowest_wait(run_dir: Path) -> tuple[int, str]:
    """The longest wait_scans (elapsed_ms of the driver's wait events) in a run dir."""
    best, where = 0, ""
    for jsonl in sorted(run_dir.glob("workloads/*/driver.jsonl")):
        for line in jsonl.read_text(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and ev.get("event") == "wait":
                ms = ev.get("elapsed_ms")
                if isinstance(ms, int) and ms > best:
                    best, where = ms, f"{jsonl.parent.name} step {ev.get('step')}"
    return best, where


def _record(rep: StressReport, result: dict[str, Any], run_dir: Path, tag: str) -> None:
    for w in result.get("workloads", []):
        rep.workload_runs += 1
        line = f"{tag} {w['name']}: {w.get('explanation', '')[:300]}"
        if w["verdict"] == "mismatch":
            rep.workload_mismatches.append(line)
        elif w["verdict"] != "match":
            rep.workload_errors.append(line)
    ms, where = slowest_wait(run_dir)
    if ms > rep.slowest_wait_ms:
        rep.slowest_wait_ms, rep.slowest_wait = ms, f"{tag} {where}"
    rep.guest_boot_seconds += result.get("metadata", {}).get("guest_boots", [])


def _one_round(rep: StressReport, suite: list[str], run_dir: Path, tag: str,
               isolation: str) -> dict[str, Any] | None:
    start = time.monotonic()
    try:
        outcome = vmtest.run_vm_test(vmtest.VmTestRequest(suite=suite, out=run_dir,
                                                          isolation=isolation))
        result: dict[str, Any] | None = outcome.result
    except ThpvmError as e:
        result = None
        (rep.vmtest_errors if "selftest" in ",".join(suite) else rep.workload_errors).append(
            f"{tag}: {type(e).__name__}: {e.message[:300]}")
    rep.round_seconds.append(round(time.monotonic() - start, 1))
    rep.load_average.append([round(x, 2) for x in os.getloadavg()])
    if result is not None:
        _record(rep, result, run_dir, tag)
    return result


@dataclass(frozen=True)
class SeededBug:
    """A kernel patch the oracle must catch: run `suite` on the patched kernel; `catch` is
    "selftest" (an invocation fails) or "mismatch" (every workload mismatches)."""

    patch: Path
    suite: list[str]
    fragments: list[Path]
    catch: str


def load_seeded(path: Path, repo: Path) -> list[SeededBug]:
    """The seeded-bug catalogue (tests/data/patches/seeded.toml); paths are resolved
    against the catalogue's folder (patches) and `repo` (fragments)."""
    data = tomllib.loads(path.read_text())
    return [SeededBug(path.parent / s["patch"], list(s["suite"]),
                      [repo / f for f in s.get("fragments", [])], s["catch"])
            for s in data["seeded"]]


def caught(bug: SeededBug, result: dict[str, Any]) -> bool:
    """Whether a run of the patched kernel caught the bug."""
    if result["exit_code"] != 1:
        return False
    if bug.catch == "selftest":
        return any(i["status"] == "fail" for i in result["selftest"]["invocations"])
    return bool(result["workloads"]) and all(w["verdict"] == "mismatch"
                                             for w in result["workloads"])


def _seeded_round(rep: StressReport, bug: SeededBug, run_dir: Path, tag: str) -> None:
    counts = rep.seeded.setdefault(bug.patch.name, {"runs": 0, "caught": 0, "errors": 0})
    kernel = KernelRequest(fragments=bug.fragments, patches=[bug.patch])
    start = time.monotonic()
    try:
        result = vmtest.run_vm_test(vmtest.VmTestRequest(kernel=kernel, suite=bug.suite,
                                                         out=run_dir)).result
    except ThpvmError as e:
        counts["errors"] += 1
        rep.seeded_misses.append(f"{tag}: {type(e).__name__}: {e.message[:300]}")
        return
    finally:
        rep.round_seconds.append(round(time.monotonic() - start, 1))
        rep.load_average.append([round(x, 2) for x in os.getloadavg()])
    miss = f"{tag}: exit {result['exit_code']}: {result['reason'][:300]}"
    if result["exit_code"] == 125:  # could not test: neither a catch nor a miss
        counts["errors"] += 1
        rep.seeded_misses.append(miss)
        return
    counts["runs"] += 1
    if caught(bug, result):
        counts["caught"] += 1
    else:
        rep.seeded_misses.append(miss)


def stress(out: Path, workload_rounds: int, vmtest_rounds: int, isolation: str = "guest",
           hog: bool = True, until: float | None = None,
           progress: Callable[[str], None] = print, seeded: list[SeededBug] | None = None,
           seeded_rounds: int = 0) -> StressReport:
    """`workload_rounds` x every built-in workload, then `vmtest_rounds` x the default
    vm-test suites, then `seeded_rounds` x each seeded bug, under a CPU hog; run
    directories under `out`. Stops starting new rounds at the monotonic time `until`
    (the report says how many ran)."""
    rep = StressReport()
    with cpu_hog() if hog else _no_load() as rep.load:
        for r in range(workload_rounds):
            if until is not None and time.monotonic() > until:
                break
            _one_round(rep, ["workloads"], out / f"workloads-{r}", f"round {r}", isolation)
            progress(f"[stress] workloads round {r + 1}/{workload_rounds}: " + rep.summary())
        for r in range(vmtest_rounds):
            if until is not None and time.monotonic() > until:
                break
            result = _one_round(rep, ["selftest", "workloads"], out / f"vm-test-{r}",
                                f"vm-test {r}", isolation)
            if result is not None:
                rep.vmtest_runs += 1
                if result["exit_code"] != 0:
                    rep.vmtest_failures.append(f"vm-test {r}: {result['reason'][:300]}")
            progress(f"[stress] vm-test round {r + 1}/{vmtest_rounds}: " + rep.summary())
        for r in range(seeded_rounds):
            if until is not None and time.monotonic() > until:
                break
            for bug in seeded or []:
                name = bug.patch.stem
                _seeded_round(rep, bug, out / f"seeded-{name}-{r}", f"seeded {name} {r}")
            progress(f"[stress] seeded round {r + 1}/{seeded_rounds}: " + rep.summary())
    return rep


@contextmanager
def _no_load() -> Iterator[str]:
    yield "no added load"
