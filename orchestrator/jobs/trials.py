"""Run the VM test on one tree N times, classify every run, decide by majority.

Shared by `bisect` (one decision per commit) and `validate` (base vs patched).
Each run is classified from what `vmtest.run_vm_test` returned or raised:

=========================  ========  ==============
run                        status    outcome
=========================  ========  ==============
exit code 0                good      pass
exit code 1               bad       fail
BuildError                 skip      build-failed
ImageError                 skip      image-failed
BootError                  skip/bad  boot-failed   (bad with boot_failure="bad")
GuestError                 skip      guest-failed
other InfraError           skip      infra-failed
=========================  ========  ==============

UserError and unexpected exceptions are not classified: they propagate, since
they mean the request (or thpvm) is wrong, not the commit.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.errors import (
    EXIT_USER_ERROR,
    BootError,
    BuildError,
    GuestError,
    ImageError,
    InfraError,
    UserError,
)
from orchestrator.jobs import vmtest
from orchestrator.jobs.vmtest import VmTestRequest

log = logging.getLogger(__name__)

GOOD, BAD, SKIP = "good", "bad", "skip"
BOOT_POLICIES = ("skip", "bad")
FLAKY_POLICIES = ("skip", "majority")


class Outcome(Protocol):
    """What `vmtest.run_vm_test` returns (VmTestOutcome)."""

    exit_code: int
    run_dir: Path
    result: dict[str, Any]


@dataclass
class TrialPolicy:
    """How often a kernel is tested and how its runs are judged."""

    repeat: int = 1
    boot_failure: str = "skip"  # a kernel that does not boot: "skip" or "bad"
    flaky: str = "skip"  # runs that disagree: "skip" the kernel or take the "majority"

    def check(self) -> None:
        """UserError naming the option that is out of range."""
        if self.repeat < 1:
            raise UserError(f"--repeat must be at least 1, not {self.repeat}")
        if self.boot_failure not in BOOT_POLICIES:
            raise UserError(f"--boot-failure must be one of {BOOT_POLICIES}")
        if self.flaky not in FLAKY_POLICIES:
            raise UserError(f"--flaky must be one of {FLAKY_POLICIES}")


Tester = Callable[[VmTestRequest], Outcome]


def vm_tester(req: VmTestRequest) -> Outcome:
    """The real tester: the whole vm-test pipeline."""
    return vmtest.run_vm_test(req)


@dataclass
class RunRecord:
    """One run of the VM test: its classification, duration and where it left its files."""

    index: int
    status: str
    outcome: str
    duration: float
    verdict: str | None = None
    error: str | None = None
    run_dir: str | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The record without the (large) result dict, for logs."""
        data = {k: v for k, v in self.__dict__.items() if k != "result"}
        data["duration"] = round(self.duration, 1)
        return data


_INFRA_OUTCOMES: list[tuple[type[InfraError], str]] = [
    (BuildError, "build-failed"), (ImageError, "image-failed"),
    (BootError, "boot-failed"), (GuestError, "guest-failed"), (InfraError, "infra-failed"),
]


def infra_outcome(exc: InfraError) -> str:
    """The outcome name of an infrastructure error class."""
    for cls, name in _INFRA_OUTCOMES:
        if isinstance(exc, cls):
            return name
    return "infra-failed"


def run_once(req: VmTestRequest, index: int, tester: Tester,
             boot_failure: str = "skip") -> RunRecord:
    """Run the test once and classify it (see the module table)."""
    start = time.monotonic()
    out = req.out
    try:
        outcome = tester(req)
    except InfraError as e:
        name = infra_outcome(e)
        status = BAD if isinstance(e, BootError) and boot_failure == "bad" else SKIP
        log.warning("run %d: %s: %s", index, name, e.message)
        return RunRecord(index, status, name, time.monotonic() - start, error=e.message,
                         run_dir=str(out) if out else None)
    return _record_outcome(index, outcome, time.monotonic() - start)


def _record_outcome(index: int, outcome: Outcome, elapsed: float) -> RunRecord:
    code = outcome.exit_code
    result = outcome.result or {}
    if code == EXIT_USER_ERROR:
        raise UserError(f"the test run rejected its input: {result.get('reason', '')}")
    statuses = {0: (GOOD, "pass"), 1: (BAD, "fail"), 125: (SKIP, "infra-failed")}
    if code not in statuses:
        raise RuntimeError(f"vm test returned unexpected exit code {code}")
    status, name = statuses[code]
    timings = (result.get("metadata") or {}).get("durations") or {}
    error = result.get("reason") or None if status == SKIP else None
    return RunRecord(index, status, name, elapsed, verdict=result.get("verdict"), error=error,
                     run_dir=str(outcome.run_dir), timings=dict(timings), result=result)


def run_trials(req: VmTestRequest, tree: Path, policy: TrialPolicy, out_root: Path | None,
               tester: Tester, label: str = "run") -> list[RunRecord]:
    """Test `tree` as checked out up to `policy.repeat` times, stopping early when more
    runs cannot help: after a build or image failure (the same tree fails the same way)
    and, with the `skip` flaky policy, as soon as two runs disagree.
    """
    records: list[RunRecord] = []
    for i in range(policy.repeat):
        out = out_root / f"{label}-{i + 1}" if out_root else None
        rec = run_once(req.for_tree(tree, out), i + 1, tester, policy.boot_failure)
        records.append(rec)
        log.info("%s %d/%d: %s (%s, %.0f s)", label, i + 1, policy.repeat, rec.status,
                 rec.outcome, rec.duration)
        if rec.outcome in ("build-failed", "image-failed"):
            break
        if policy.flaky == "skip" and disagree([r.status for r in records]):
            break
    return records


def disagree(statuses: list[str]) -> bool:
    """Whether judged runs (good/bad, not skip) disagree."""
    return GOOD in statuses and BAD in statuses


@dataclass
class Decision:
    """The verdict on a tree from its runs."""

    verdict: str
    flaky: bool
    counts: dict[str, int]
    reason: str


def decide(statuses: list[str], repeat: int, flaky: str = "skip") -> Decision:
    """Decide good/bad/skip from run statuses by strict majority of `repeat`.

    Runs that disagree make the tree flaky: skipped with the `skip` policy,
    else judged by majority. A verdict needs more than half of the requested
    runs; anything less (infrastructure failures, a tie) is a skip.
    """
    counts = Counter(statuses)
    summary = {s: counts.get(s, 0) for s in (GOOD, BAD, SKIP)}
    is_flaky = disagree(statuses)
    if is_flaky and flaky == "skip":
        return Decision(SKIP, True, summary, f"flaky: runs disagree {_fmt(summary)}")
    for verdict in (GOOD, BAD):
        if summary[verdict] * 2 > repeat:
            return Decision(verdict, is_flaky, summary, f"majority {verdict} {_fmt(summary)}")
    return Decision(SKIP, is_flaky, summary, f"no majority of {repeat} runs {_fmt(summary)}")


def _fmt(counts: dict[str, int]) -> str:
    return "(" + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + ")"
