"""Planning a matrix: the job list (stable ids), deterministic shards, CI engine formats.

A job is one kernel x one suite x one repeat, run as one `thpvm vm-test` in its own
guest and run directory. Its id, `<kernel>.<suite-slug>.r<repeat>`, depends only on the
matrix file's names (never on paths or the host), so shards on different CI runners
agree on it and `thpvm matrix merge` can put the results back together.

Shard I/N is the I-th contiguous block of the plan (plan order is kernel-major), so a
runner gets few kernels to build and N runners split a matrix with no coordination.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import UserError
from orchestrator.jobs.matrixspec import MatrixKernel, MatrixSpec

FILES_SUITE = "files"  # the column of a matrix's own workload spec files
GITHUB_MAX_JOBS = 256  # a GitHub Actions matrix may not have more


@dataclass(frozen=True)
class Job:
    """One kernel x suite x repeat of a matrix."""

    index: int
    kernel: MatrixKernel
    suite: str
    repeat: int

    @property
    def id(self) -> str:
        return f"{self.kernel.name}.{suite_slug(self.suite)}.r{self.repeat}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "index": self.index, "kernel": self.kernel.name,
                "source": self.kernel.source, "rev": self.kernel.rev,
                "fragments": [f.name for f in self.kernel.fragments],
                "configs": list(self.kernel.configs), "suite": self.suite,
                "repeat": self.repeat}


def suite_slug(suite: str) -> str:
    """A suite as a file/artifact-name-safe slug: 'selftest:anon' -> 'selftest-anon'."""
    return re.sub(r"[^A-Za-z0-9._+-]", "-", suite)


def plan_jobs(spec: MatrixSpec) -> list[Job]:
    """Every job of the matrix, kernel-major, then suite, then repeat."""
    suites = list(spec.suites) + ([FILES_SUITE] if spec.workload_files else [])
    jobs: list[Job] = []
    for kernel in spec.kernels:
        for suite in suites:
            for repeat in range(1, spec.repeats + 1):
                jobs.append(Job(len(jobs), kernel, suite, repeat))
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' with 1 <= I <= N -> (I, N); UserError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not (1 <= int(m.group(1)) <= int(m.group(2))):
        raise UserError(f"--shard {text!r}: expected I/N with 1 <= I <= N (e.g. 2/4)")
    return int(m.group(1)), int(m.group(2))


def shard(jobs: list[Job], index: int, total: int) -> list[Job]:
    """The index-th (1-based) of `total` contiguous, near-equal blocks of `jobs`."""
    n = len(jobs)
    return jobs[(index - 1) * n // total: index * n // total]


def vmtest_argv(spec: MatrixSpec, job: Job, out: str) -> list[str]:
    """The thpvm command line (after `thpvm`) that runs `job` into run directory `out`."""
    common = [*job.kernel.vmtest_args(), "--out", out, "--accel", spec.accel,
              "--machine", spec.machine]
    if job.suite == FILES_SUITE:
        return ["workload", "run", *common, *(str(f) for f in spec.workload_files)]
    return ["vm-test", *common, "--suite", job.suite]


def plan_json(spec: MatrixSpec, jobs: list[Job]) -> dict[str, Any]:
    """`thpvm matrix plan --format json`."""
    return {"matrix": spec.name, "description": spec.description, "repeats": spec.repeats,
            "machine": spec.machine, "accel": spec.accel,
            "kernels": [k.name for k in spec.kernels],
            "suites": sorted({j.suite for j in jobs}, key=[j.suite for j in jobs].index),
            "jobs": [j.to_json() for j in jobs]}


def github_include(jobs: list[Job], shards: int) -> dict[str, Any]:
    """The value for `strategy.matrix: ${{ fromJSON(...) }}`: one entry per shard."""
    total = _shard_count(jobs, shards, GITHUB_MAX_JOBS)
    include = []
    for i in range(1, total + 1):
        part = shard(jobs, i, total)
        include.append({"shard": f"{i}/{total}", "name": f"shard-{i}-of-{total}",
                        "kernels": " ".join(dict.fromkeys(j.kernel.name for j in part)),
                        "jobs": " ".join(j.id for j in part)})
    return {"include": include}


def _shard_count(jobs: list[Job], shards: int, limit: int) -> int:
    if shards < 0:
        raise UserError(f"--shards {shards}: expected a number of shards >= 1 (0 = one per job)")
    if not jobs:
        raise UserError("the matrix has no jobs")
    return min(shards or len(jobs), len(jobs), limit)


def gitlab_child_pipeline(matrix_file: str, jobs: list[Job], shards: int,
                          image: str = "debian:bookworm") -> dict[str, Any]:
    """A child pipeline: the shards as `parallel:matrix`, then one merge job."""
    total = _shard_count(jobs, shards, 200)  # GitLab: at most 200 parallel:matrix jobs
    setup = ["apt-get update -qq && apt-get install -y -qq --no-install-recommends make sudo",
             "make setup"]
    run = (f".venv/bin/thpvm matrix run {shlex.quote(matrix_file)} --shard \"$SHARD\" "
           "--out \"matrix-out/shard-${SHARD%%/*}\"")
    return {
        "stages": ["test", "merge"],
        "thp-matrix": {
            "stage": "test", "image": image, "tags": ["kvm"], "timeout": "6h",
            "before_script": list(setup), "script": [run],
            "parallel": {"matrix": [{"SHARD": [f"{i}/{total}" for i in range(1, total + 1)]}]},
            "artifacts": {"when": "always", "expire_in": "1 week", "paths": ["matrix-out/"]},
        },
        "thp-merge": {
            "stage": "merge", "image": image, "when": "always", "needs": ["thp-matrix"],
            "before_script": list(setup),
            "script": [".venv/bin/thpvm matrix merge matrix-out --out merged"],
            "artifacts": {"when": "always", "expire_in": "1 month", "paths": ["merged/"],
                          "reports": {"junit": "merged/junit.xml"}},
        },
    }
