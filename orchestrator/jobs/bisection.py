"""`thpvm bisect`: find the first bad kernel commit with `git bisect run`.

The user's checkout is never touched: not its HEAD, branch, index, work tree
nor bisect state. The bisect happens in a scratch clone under the cache
(`gitrepo.scratch_clone`) whose path is the same at every step and every run,
so the kernel build stays incremental; `git bisect run` calls `thpvm
bisect-step` (module `bisect_step`) there, which appends a JSON line per commit
to ``steps.jsonl`` in the bisect's run directory. The run directory ends with
``bisect.json`` (the full record), ``report.txt``, ``bisect.log`` (git's
output) and ``git-bisect-log.txt`` (``git bisect log``, replayable).

A SIGKILLed `thpvm bisect` takes the whole tree along: `git bisect run` gets
PR_SET_PDEATHSIG (`proc.py`), and the step, git's grandchild, watches a
lifeline pipe whose only writer is this process (`bisect_step.lifeline`) and
SIGKILLs itself at EOF, so its QEMU and builds die by their own PDEATHSIG.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.build import git as gitrepo
from orchestrator.cache import new_run_dir, write_json
from orchestrator.errors import EXIT_ABORT, EXIT_COULD_NOT_TEST, EXIT_OK, EXIT_USER_ERROR, UserError
from orchestrator.jobs import bisect_step, trials
from orchestrator.jobs.vmtest import VmTestRequest, check_inputs

log = logging.getLogger(__name__)

FIRST_BAD = re.compile(r"^([0-9a-f]{40}) is the first bad commit", re.M)
SHA_LINE = re.compile(r"^([0-9a-f]{40})$", re.M)


@dataclass
class BisectRequest:
    """A `thpvm bisect` invocation."""

    tree: Path
    good: str
    bad: str
    test: VmTestRequest = field(default_factory=VmTestRequest)
    policy: trials.TrialPolicy = field(default_factory=trials.TrialPolicy)
    out: Path | None = None


@dataclass
class BisectOutcome:
    """How a bisect ended. `status`: found, ambiguous (only skipped commits
    left), aborted (a step aborted) or failed (git bisect gave up)."""

    status: str
    exit_code: int
    run_dir: Path
    first_bad: dict[str, str] | None
    candidates: list[dict[str, str]]
    steps: list[dict[str, Any]]
    report: str
    user_tree_changes: list[str] = field(default_factory=list)


def step_command() -> list[str]:
    """argv prefix that runs `thpvm bisect-step` with this very installation."""
    script = Path(sys.executable).parent / "thpvm"
    found = str(script) if script.exists() else shutil.which("thpvm")
    if found:
        return [found, "bisect-step"]
    code = "import sys; from orchestrator.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, "bisect-step"]


def step_arguments(req: BisectRequest, run_dir: Path) -> list[str]:
    """The options `thpvm bisect` passes to every `bisect-step`."""
    pol, test = req.policy, req.test
    args = ["--repeat", str(pol.repeat), "--boot-failure", pol.boot_failure,
            "--flaky", pol.flaky, "--accel", test.accel, "--out", str(run_dir / "steps"),
            "--step-log", str(run_dir / "steps.jsonl")]
    if test.suite:
        args += ["--suite", ",".join(test.suite)]
    for frag in test.kernel.fragments:
        args += ["--fragment", str(frag.resolve())]
    for cfg in test.kernel.configs:
        args += ["--config", cfg]
    for pattern in test.allow_warn:
        args += ["--allow-warn", pattern]
    return args


def check_request(req: BisectRequest) -> None:
    """UserError for anything wrong that can be seen before the first build."""
    req.policy.check()
    for frag in req.test.kernel.fragments:
        if not frag.is_file():
            raise UserError(f"kconfig fragment not found: {frag}")
    check_inputs(req.test)  # before the first build


def run_bisect(req: BisectRequest, step_prefix: list[str] | None = None) -> BisectOutcome:
    """Bisect `req.good..req.bad` in a scratch clone of `req.tree` and report.

    `step_prefix` replaces ``thpvm bisect-step`` (tests use a fake step).
    Raises UserError for bad input; the outcome's exit_code is 0 when the first
    bad commit was found, 125 when only skipped commits were left, 2 when a
    step aborted on bad input, 128 on any other abort.
    """
    check_request(req)
    tree = gitrepo.toplevel(req.tree.resolve())
    good, bad = _endpoints(tree, req.good, req.bad)
    before = gitrepo.RepoState.capture(tree)
    run_dir = _prepare_run_dir(req.out)
    argv = (step_prefix or step_command()) + step_arguments(req, run_dir)
    start = time.monotonic()
    with gitrepo.scratch_clone(tree) as scratch:
        output = _bisect_in(scratch.path, good, bad, argv, run_dir)
    changes = before.differences(gitrepo.RepoState.capture(tree))
    if changes:
        log.warning("the user's tree changed during the bisect (not by thpvm?): %s", changes)
    return _conclude(tree, good, bad, output, run_dir, time.monotonic() - start, changes)


def _endpoints(tree: Path, good_rev: str, bad_rev: str) -> tuple[str, str]:
    good = gitrepo.resolve(tree, good_rev)
    bad = gitrepo.resolve(tree, bad_rev)
    if good == bad:
        raise UserError(f"--good {good_rev} and --bad {bad_rev} are the same commit")
    if gitrepo.is_ancestor(tree, bad, good):
        raise UserError(f"--bad {bad_rev} is an ancestor of --good {good_rev}: swapped?")
    return good, bad


def _prepare_run_dir(out: Path | None) -> Path:
    run_dir = out.resolve() if out else new_run_dir("bisect")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "steps.jsonl").write_text("")
    return run_dir


def _bisect_in(scratch: Path, good: str, bad: str, argv: list[str], run_dir: Path) -> str:
    """Run the whole `git bisect` in the scratch clone; return git's output."""
    glog = run_dir / "bisect.log"
    gitrepo.checkout(scratch, bad)
    try:
        start = gitrepo.git(scratch, "bisect", "start", bad, good, "--", log_path=glog,
                            timeout=3600)
        with bisect_step.lifeline() as lifeline_env:
            env = {bisect_step.STEP_LOG_ENV: str(run_dir / "steps.jsonl"), **lifeline_env}
            run = gitrepo.git(scratch, "bisect", "run", *argv, check=False, env=env,
                              log_path=glog, timeout=None,
                              pass_fds=(int(lifeline_env[bisect_step.LIFELINE_ENV]),))
        replay = gitrepo.git(scratch, "bisect", "log", check=False)
        (run_dir / "git-bisect-log.txt").write_text(replay.output)
        return start.output + run.output
    finally:
        gitrepo.git(scratch, "bisect", "reset", check=False)


def parse_bisect_output(text: str) -> tuple[str, str | None, list[str]]:
    """(status, first bad hash, candidate hashes) from `git bisect start/run` output.

    Recognises ``<sha> is the first bad commit``; ``There are only 'skip'ped
    commits left to test.`` followed by one hash per line; and ``bisect run
    failed`` / ``bisect run cannot continue`` for aborts.
    """
    found = FIRST_BAD.search(text)
    if found:
        return "found", found.group(1), []
    if "only 'skip'ped commits left" in text:
        tail = text.split("could be any of:", 1)[-1].split("We cannot bisect more", 1)[0]
        return "ambiguous", None, SHA_LINE.findall(tail)
    if "bisect run failed" in text or "cannot continue" in text:
        return "aborted", None, []
    return "failed", None, []


def _exit_code(status: str, steps: list[dict[str, Any]]) -> int:
    if status == "found":
        return EXIT_OK
    if status == "ambiguous":
        return EXIT_COULD_NOT_TEST
    last = steps[-1] if steps else {}
    if last.get("decision") == "abort" and last.get("error_kind") == "user":
        return EXIT_USER_ERROR
    return EXIT_ABORT


def _conclude(tree: Path, good: str, bad: str, output: str, run_dir: Path,
              elapsed: float, changes: list[str]) -> BisectOutcome:
    status, first, cands = parse_bisect_output(output)
    steps = bisect_step.read_step_log(run_dir / "steps.jsonl")
    first_bad = gitrepo.describe(tree, first) if first else None
    candidates = [gitrepo.describe(tree, c) for c in cands]
    code = _exit_code(status, steps)
    record: dict[str, Any] = {
        "status": status, "tree": str(tree), "good": gitrepo.describe(tree, good),
        "bad": gitrepo.describe(tree, bad), "first_bad": first_bad, "candidates": candidates,
        "steps": steps, "duration": round(elapsed, 1), "user_tree_changes": changes,
        "exit_code": code,
    }
    if status in ("aborted", "failed"):
        record["git_output_tail"] = output.strip().splitlines()[-20:]
    text = format_report(record)
    write_json(run_dir / "bisect.json", record)
    (run_dir / "report.txt").write_text(text)
    return BisectOutcome(status, code, run_dir, first_bad, candidates, steps,
                         text, changes)


def format_report(record: dict[str, Any]) -> str:
    """A plain-text report of a bisect record (as written to bisect.json)."""
    lines = [_headline(record),
             f"  good {record['good']['short']} {record['good']['subject']}",
             f"  bad  {record['bad']['short']} {record['bad']['subject']}", "",
             f"{'step':>4}  {'revision':<12}  {'decision':<8}  {'duration':>8}  runs"]
    for n, step in enumerate(record["steps"], 1):
        runs = ", ".join(_run_summary(r) for r in step.get("runs", [])) or step.get("reason", "")
        rev = (step.get("rev") or "?")[:12]
        lines.append(f"{n:>4}  {rev:<12}  {step.get('decision', '?'):<8}  "
                     f"{step.get('duration', 0):>6.0f} s  {runs}")
        if step.get("flaky") or step.get("decision") == "abort":
            lines.append(f"{'':>4}  {step.get('reason', '')}")
    lines.append(f"\ntotal {record['duration']:.0f} s over {len(record['steps'])} steps")
    if record.get("git_output_tail"):
        lines += ["", "git bisect said:", *("  " + ln for ln in record["git_output_tail"])]
    if record.get("user_tree_changes"):
        lines += ["", "warning: the user's tree changed meanwhile (not by thpvm):",
                  *("  " + c for c in record["user_tree_changes"])]
    return "\n".join(lines) + "\n"


def _headline(record: dict[str, Any]) -> str:
    status = record["status"]
    if status == "found":
        fb = record["first_bad"]
        return f"first bad commit: {fb['sha']} {fb['subject']}"
    if status == "ambiguous":
        shas = " ".join(c["short"] for c in record["candidates"])
        return f"could not decide, only skipped commits left; first bad is one of: {shas}"
    return f"bisect {status}"


def _run_summary(run: dict[str, Any]) -> str:
    """'fail (build 38 s, boot 10 s, selftest 71 s)' for one run of a step."""
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in (run.get("timings") or {}).items())
    return f"{run.get('outcome', '?')}" + (f" ({stages})" if stages else "")
