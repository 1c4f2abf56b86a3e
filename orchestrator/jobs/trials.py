"""Run the VM test on one tree N times, classify every run, decide by majority.

Shared by `bisect` (one decision per commit) and `validate` (base vs patched).
Each run is classified from what `vmtest.run_vm_test` returned or raised:

=========================  ========  ==============
run                        status    outcome
=========================  ========  ==============
exit code 0                good      pass
exit code 1, TestFailure   bad       fail
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
    TestFailure,
    UserError,
)

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
class TrialSpec:
    """Everything that says what to test on a tree, the same for every run."""

    tree: Path
    suite: list[str] = field(default_factory=list)
    fragments: list[Path] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    accel: str = "auto"
    boot_failure: str = "skip"
    allow_warn: list[str] = field(default_factory=list)


Tester = Callable[[TrialSpec, Path | None], Outcome]


def vm_tester(spec: TrialSpec, out: Path | None) -> Outcome:
    """The real tester: build, boot and test `spec.tree` as checked out (rev=None)."""
    from . import vmtest  # type: ignore[attr-defined]  # the lead's pipeline, imported late

    req = vmtest.VmTestRequest(tree=spec.tree, rev=None, fragments=list(spec.fragments),
                               configs=list(spec.configs), out=out, accel=spec.accel,
                               allow_warn=list(spec.allow_warn))
    if spec.suite:  # else the pipeline's default suite
        req.suite = list(spec.suite)
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


def run_once(spec: TrialSpec, index: int, out: Path | None, tester: Tester) -> RunRecord:
    """Run the test once and classify it (see the module table)."""
    start = time.monotonic()
    try:
        outcome = tester(spec, out)
    except TestFailure as e:  # the pipeline normally returns exit code 1 instead
        return RunRecord(index, BAD, "fail", time.monotonic() - start, error=e.message,
                         run_dir=str(out) if out else None)
    except InfraError as e:
        name = infra_outcome(e)
        status = BAD if isinstance(e, BootError) and spec.boot_failure == "bad" else SKIP
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


def run_trials(spec: TrialSpec, repeat: int, out_root: Path | None, tester: Tester,
               flaky: str = "skip", label: str = "run") -> list[RunRecord]:
    """Run the test up to `repeat` times, stopping early when more runs cannot help.

    Stops after a build or image failure (the same tree fails the same way) and,
    with the `skip` flaky policy, as soon as two runs disagree.
    """
    records: list[RunRecord] = []
    for i in range(repeat):
        out = out_root / f"{label}-{i + 1}" if out_root else None
        rec = run_once(spec, i + 1, out, tester)
        records.append(rec)
        log.info("%s %d/%d: %s (%s, %.0f s)", label, i + 1, repeat, rec.status, rec.outcome,
                 rec.duration)
        if rec.outcome in ("build-failed", "image-failed"):
            break
        if flaky == "skip" and disagree([r.status for r in records]):
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
