"""Merging matrix run directories (from any number of machines) into one result.

Reads run directories only: every `matrix-job.json` found under the given
directories (a `thpvm matrix run` output, a CI artifact tree, single job dirs), and
plain vm-test run directories (`result.json` without a job record: one job each).

The merged view is a kernel x case grid. A case is a selftest case (`iter_cases`
ids) or a workload (judged by the model), or `job <suite>` when a whole job could
not test. Each cell aggregates the repeats of that kernel:

    pass   every repeat passed         fail  every repeat failed
    flaky  k of n repeats failed        could-not-test  no repeat produced a verdict
    skip   every repeat skipped

A failure is never hidden: `flaky` counts as failed for the exit code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import (
    EXIT_COULD_NOT_TEST,
    EXIT_OK,
    EXIT_TEST_FAILED,
    EXIT_USER_ERROR,
    UserError,
)
from orchestrator.report import resultdata as rd
from orchestrator.report.resultfile import RESULT_NAME, ResultSchemaError, load_result

log = logging.getLogger(__name__)

JOB_RECORD = "matrix-job.json"  # written by jobs/matrix.py into each job's run directory
_CASE_OUTCOME = {"pass": "pass", "fail": "fail", "crash": "fail", "skip": "skip",
                 "xfail": "pass", "timeout": "fail", "error": "fail"}
_WORKLOAD_OUTCOME = {"match": "pass", "mismatch": "fail", "error": "fail"}


@dataclass
class JobRun:
    """One job of the merged matrix: its record, and its result if it produced one."""

    job: str
    kernel: str
    suite: str
    repeat: int
    status: str
    exit_code: int | None
    dir: Path
    host: str
    wall_seconds: float | None
    result: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        meta = (self.result or {}).get("metadata", {})
        return {"job": self.job, "kernel": self.kernel, "suite": self.suite,
                "repeat": self.repeat, "status": self.status, "exit_code": self.exit_code,
                "dir": str(self.dir), "host": self.host, "wall_seconds": self.wall_seconds,
                "kernel_release": meta.get("kernel_release", ""),
                "durations": meta.get("durations", {})}


@dataclass
class Cell:
    """One kernel x case cell: the outcome of every repeat, in repeat order."""

    outcomes: list[tuple[int, str, str]] = field(default_factory=list)  # (repeat, outcome, why)

    @property
    def failed(self) -> int:
        return sum(1 for _, o, _ in self.outcomes if o == "fail")

    @property
    def judged(self) -> int:
        return sum(1 for _, o, _ in self.outcomes if o in ("pass", "fail"))

    @property
    def status(self) -> str:
        failed, judged = self.failed, self.judged
        if failed and failed < judged:
            return "flaky"
        if failed:
            return "fail"
        if judged:
            return "pass"
        if any(o == "could-not-test" for _, o, _ in self.outcomes):
            return "could-not-test"
        return "skip"

    @property
    def label(self) -> str:
        s, n = self.status, len(self.outcomes)
        if s in ("flaky", "fail"):
            return f"{s} {self.failed}/{self.judged}"
        return f"{s} {self.judged}/{n}" if s == "pass" else s

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "failed": self.failed, "judged": self.judged,
                "runs": len(self.outcomes),
                "outcomes": [{"repeat": r, "outcome": o, "why": w} for r, o, w in self.outcomes]}


@dataclass
class Row:
    """One case of the grid: kind (selftest | workload | job), suite and name."""

    kind: str
    suite: str
    name: str
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass
class Merged:
    """The merged matrix: kernels (columns), rows (cases), the jobs behind them."""

    kernels: list[str]
    rows: list[Row]
    jobs: list[JobRun]
    matrices: list[str]

    def exit_code(self) -> int:
        statuses = {c.status for r in self.rows for c in r.cells.values()}
        if statuses & {"fail", "flaky"}:
            return EXIT_TEST_FAILED
        if any(j.status == "bad-input" for j in self.jobs):
            return EXIT_USER_ERROR
        if "could-not-test" in statuses or any(j.result is None for j in self.jobs):
            return EXIT_COULD_NOT_TEST
        return EXIT_OK

    def verdict(self) -> str:
        return {EXIT_OK: "pass", EXIT_TEST_FAILED: "fail", EXIT_USER_ERROR: "bad-input"}.get(
            self.exit_code(), "could-not-test")

    def flaky(self) -> list[dict[str, Any]]:
        return [{"case": r.key, "suite": r.suite, "kernel": k, "failed": c.failed,
                 "runs": c.judged} for r in self.rows for k, c in r.cells.items()
                if c.status == "flaky"]


# ------------------------------------------------------------------ collecting

def find_job_dirs(dirs: Iterable[Path]) -> list[Path]:
    """Job run directories under `dirs`: those with a job record, else with result.json."""
    found: dict[Path, None] = {}
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise UserError(f"{d}: not a directory")
        records = sorted(p.parent for p in d.rglob(JOB_RECORD))
        plain = sorted(p.parent for p in d.rglob(RESULT_NAME)
                       if not (p.parent / JOB_RECORD).exists())
        found.update(dict.fromkeys(records + plain))
    if not found:
        raise UserError("no run directories (matrix-job.json or result.json) under "
                        + ", ".join(map(str, dirs)))
    return list(found)


def load_job(path: Path) -> JobRun:
    """A job's record and result; a job with no valid result.json has result None."""
    result = None
    if (path / RESULT_NAME).is_file():
        try:
            result = load_result(path)
        except (UserError, ResultSchemaError) as e:
            log.warning("%s: unreadable result: %s", path, e)
    rec: dict[str, Any] = {}
    if (path / JOB_RECORD).is_file():
        rec = json.loads((path / JOB_RECORD).read_text())
    meta = (result or {}).get("metadata", {})
    kernel = rec.get("kernel") or _kernel_label(meta) or path.name
    status = (result or {}).get("verdict") or rec.get("status") or "not-run"
    if result is not None and status == "pass" and rec.get("exit_code") not in (None, 0):
        status = rec.get("status", status)
    return JobRun(job=rec.get("job") or path.name, kernel=kernel,
                  suite=rec.get("suite") or "run", repeat=int(rec.get("repeat") or 1),
                  status=status,
                  exit_code=rec.get("exit_code", (result or {}).get("exit_code")),
                  dir=path, host=rec.get("host") or meta.get("host", ""),
                  wall_seconds=rec.get("wall_seconds"), result=result)


def _kernel_label(meta: dict[str, Any]) -> str:
    release = meta.get("kernel_release") or ""
    return f"{release}-{str(meta.get('config_hash', ''))[:8]}".strip("-") if release else ""


# ------------------------------------------------------------------ merging

def merge_dirs(dirs: Iterable[Path]) -> Merged:
    """Collect every job under `dirs` and merge them (a job id seen twice: the later run)."""
    by_id: dict[str, JobRun] = {}
    for path in find_job_dirs(dirs):
        job = load_job(path)
        if job.job in by_id:
            log.warning("job %s found twice (%s, %s): keeping the later", job.job,
                        by_id[job.job].dir, path)
        by_id[job.job] = job
    return merge_jobs(list(by_id.values()))


def merge_jobs(jobs: list[JobRun]) -> Merged:
    """The grid of `jobs` (kernels in first-seen order, rows in first-seen order)."""
    jobs = sorted(jobs, key=lambda j: (j.kernel, j.suite, j.repeat))
    kernels = list(dict.fromkeys(j.kernel for j in jobs))
    rows: dict[tuple[str, str, str], Row] = {}
    for job in jobs:
        for kind, name, outcome, why in _job_cases(job):
            row = rows.setdefault((kind, job.suite, name), Row(kind, job.suite, name))
            row.cells.setdefault(job.kernel, Cell()).outcomes.append((job.repeat, outcome, why))
    matrices = sorted({_matrix_name(j) for j in jobs} - {""})
    return Merged(kernels, list(rows.values()), jobs, matrices)


def _matrix_name(job: JobRun) -> str:
    rec = job.dir / JOB_RECORD
    return str(json.loads(rec.read_text()).get("matrix", "")) if rec.is_file() else ""


def _job_cases(job: JobRun) -> list[tuple[str, str, str, str]]:
    """(kind, name, outcome, why) of every case a job ran; one `job` case if it could not."""
    r = job.result
    if r is None or r["verdict"] in ("could-not-test", "bad-input"):
        why = (r or {}).get("reason") or f"no result ({job.status})"
        return [("job", job.suite, "could-not-test", str(why))]
    out = [("selftest", ref.case_id, _CASE_OUTCOME.get(ref.case["status"], "fail"),
            rd.failure_message(ref.case) if ref.case["status"] in ("fail", "crash") else "")
           for ref in rd.iter_cases(r)]
    for inv in rd.selftest_invocations(r):
        if not inv["cases"] and inv["status"] in ("fail", "crash"):
            out.append(("selftest", " ".join(inv["argv"]), "fail", f"invocation {inv['status']}"))
    out += [("workload", w["name"], _WORKLOAD_OUTCOME[w["verdict"]],
             "" if w["verdict"] == "match" else f"{w['verdict']}: {w['explanation']}")
            for w in r.get("workloads", [])]
    if r["verdict"] == "fail" and not any(o == "fail" for _, _, o, _ in out):
        out.append(("job", job.suite, "fail", str(r.get("reason", ""))))
    return out


def counter_table(merged: Merged, suite: str) -> list[tuple[str, dict[str, list[Any]]]]:
    """Key counter deltas of `suite`'s jobs: [(counter, {kernel: [value per repeat]})]."""
    table: dict[str, dict[str, list[Any]]] = {}
    for job in merged.jobs:
        if job.suite != suite or job.result is None:
            continue
        for name, value in rd.key_counters(job.result["counters"]["delta"]):
            table.setdefault(name, {}).setdefault(job.kernel, []).append(value)
    return [(n, table[n]) for n in rd.KEY_COUNTERS if n in table]


def summary_json(merged: Merged) -> dict[str, Any]:
    """matrix-summary.json: verdict, exit code, kernels, the grid, flaky cases, the jobs."""
    cells = [c for r in merged.rows for c in r.cells.values()]
    return {
        "schema": "thpvm-matrix-summary/1", "matrices": merged.matrices,
        "verdict": merged.verdict(), "exit_code": merged.exit_code(),
        "kernels": merged.kernels,
        "counts": {s: sum(1 for c in cells if c.status == s)
                   for s in ("pass", "fail", "flaky", "skip", "could-not-test")},
        "flaky": merged.flaky(),
        "cases": [{"kind": r.kind, "suite": r.suite, "name": r.name,
                   "cells": {k: c.to_json() for k, c in r.cells.items()}} for r in merged.rows],
        "jobs": [j.to_json() for j in merged.jobs],
    }
