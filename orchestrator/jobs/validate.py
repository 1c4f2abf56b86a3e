"""`thpvm validate`: A/B test a patch (or a head revision) against a base.

Both kernels are built from the same scratch clone under the cache (the
user's checkout is never touched, see `gitrepo.scratch_clone`): the base
revision, then the base plus the patches (committed there with `git am` for
mails, `git apply` + commit for bare diffs) or `--head`. The same suite runs
`--repeat` times on each; `validate_compare` turns the runs into changes and a
verdict. The report ends with `rundiff`'s side-by-side view of the first
run of each side.

==============  ====  ============================================================
verdict         exit  meaning
==============  ====  ============================================================
no-change       0     nothing the comparison judges changed
improvement     0     a case or workload went from failing to passing, and nothing
                      regressed
regression      1     a case passed and now fails, a workload now mismatches, a new
                      kernel console event, or a counter delta moved beyond the
                      run-to-run variation seen in the repeats
could-not-test  125   a side had no run that got as far as a verdict
==============  ====  ============================================================

The run directory gets ``base/``, ``patched/`` (one run directory per
repeat), ``validate.json`` and ``report.txt``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.build import git as gitrepo
from orchestrator.cache import new_run_dir, write_json
from orchestrator.errors import EXIT_FOR_VALIDATE, UserError
from orchestrator.jobs import trials
from orchestrator.jobs.vmtest import VmTestRequest, check_inputs
from orchestrator.judge import ab as vc
from orchestrator.judge import rundiff

log = logging.getLogger(__name__)



@dataclass
class ValidateRequest:
    """A `thpvm validate` invocation: exactly one of `patches` and `head`."""

    tree: Path
    base: str
    patches: list[Path] = field(default_factory=list)
    head: str | None = None
    test: VmTestRequest = field(default_factory=VmTestRequest)
    repeat: int = 1
    out: Path | None = None


@dataclass
class Side:
    """One kernel of the comparison and its runs."""

    label: str
    rev: str
    commit: dict[str, str]
    runs: list[trials.RunRecord]
    decision: trials.Decision

    @property
    def results(self) -> list[dict[str, Any]]:
        """Result dicts of the runs that got as far as a verdict."""
        return [r.result for r in self.runs if r.result and r.status != trials.SKIP]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "commit": self.commit,
                "decision": self.decision.__dict__, "runs": [r.to_json() for r in self.runs]}


@dataclass
class ValidateOutcome:
    """The verdict, its exit code, both sides and every change found."""

    verdict: str
    exit_code: int
    run_dir: Path
    base: Side
    patched: Side
    changes: list[vc.Change]
    report: str


def check_request(req: ValidateRequest) -> None:
    """UserError for anything wrong that can be seen before building."""
    if bool(req.patches) == bool(req.head):
        raise UserError("validate needs either --patch FILE... or --head REV (not both)")
    if req.repeat < 1:
        raise UserError(f"--repeat must be at least 1, not {req.repeat}")
    for path in [*req.patches, *req.test.kernel.fragments]:
        if not path.is_file():
            raise UserError(f"file not found: {path}")
    check_inputs(req.test)  # before the first build


def run_validate(req: ValidateRequest, tester: trials.Tester | None = None) -> ValidateOutcome:
    """Build and test base and patched kernels, compare, report.

    Raises UserError for bad input, including a patch that does not apply
    (before anything is built).
    """
    check_request(req)
    tree = gitrepo.toplevel(req.tree.resolve())
    base = gitrepo.resolve(tree, req.base)
    head = gitrepo.resolve(tree, req.head) if req.head else None
    patches = [p.resolve() for p in req.patches]
    run_dir = (req.out.resolve() if req.out else new_run_dir("validate"))
    run_dir.mkdir(parents=True, exist_ok=True)
    with gitrepo.scratch_clone(tree) as scratch:
        patched = head or _apply(scratch.path, base, patches)
        sides = [_test_side(req, scratch.path, label, rev, run_dir, tester)
                 for label, rev in (("base", base), ("patched", patched))]
    return _conclude(tree, req, sides[0], sides[1], run_dir)


def _apply(scratch: Path, base: str, patches: list[Path]) -> str:
    gitrepo.checkout(scratch, base)
    for patch in patches:
        log.info("applying %s", patch)
        gitrepo.apply_patch(scratch, patch)
    rev = gitrepo.head(scratch)
    gitrepo.git(scratch, "update-ref", "refs/thpvm/validate-patched", rev)  # keep it from gc
    return rev


def _test_side(req: ValidateRequest, scratch: Path, label: str, rev: str, run_dir: Path,
               tester: trials.Tester | None) -> Side:
    gitrepo.checkout(scratch, rev)
    log.info("validate: testing %s %s", label, rev[:12])
    policy = trials.TrialPolicy(repeat=req.repeat, flaky="majority")
    runs = trials.run_trials(req.test, scratch, policy, run_dir / label,
                             tester or trials.vm_tester, label="run")
    decision = trials.decide([r.status for r in runs], req.repeat, "majority")
    return Side(label, rev, gitrepo.describe(scratch, rev), runs, decision)


def _conclude(tree: Path, req: ValidateRequest, base: Side, patched: Side,
              run_dir: Path) -> ValidateOutcome:
    untestable = [s.label for s in (base, patched) if not s.results]
    changes = [] if untestable else vc.compare(base.results, patched.results)
    verdict = "could-not-test" if untestable else vc.verdict_of(changes)
    record: dict[str, Any] = {
        "verdict": verdict, "exit_code": EXIT_FOR_VALIDATE[verdict], "tree": str(tree),
        "patches": [str(p) for p in req.patches], "repeat": req.repeat,
        "untestable": untestable, "changes": [c.to_json() for c in changes],
        "base": base.to_json(), "patched": patched.to_json(),
        "counters_judged": req.repeat >= 2,
        "counters": vc.counter_table(base.results, patched.results),
        "side_by_side": _side_by_side(base, patched),
    }
    text = format_report(record)
    write_json(run_dir / "validate.json", record)
    (run_dir / "report.txt").write_text(text)
    return ValidateOutcome(verdict, record["exit_code"], run_dir, base, patched, changes, text)


def _side_by_side(base: Side, patched: Side) -> dict[str, Any] | None:
    """`rundiff`'s A/B view of the first judged run of each side (both in JSON and text)."""
    if not (base.results and patched.results):
        return None
    try:
        diff = rundiff.diff_runs(base.results[0], patched.results[0])
        return {"diff": diff.to_dict(), "text": diff.format_diff()}
    except (KeyError, TypeError, ValueError) as e:  # a report nicety must not lose the verdict
        log.warning("run diff failed: %s", e)
        return None


def format_report(record: dict[str, Any]) -> str:
    """Plain-text report of a validate record (as written to validate.json)."""
    b, p = record["base"], record["patched"]
    lines = [f"verdict: {record['verdict']}",
             f"  base     {b['commit']['short']} {b['commit']['subject']}",
             f"  patched  {p['commit']['short']} {p['commit']['subject']}", ""]
    lines += [f"{'':<10}{'base':<36}patched"]
    lines += [f"{'runs':<10}{_runs(b):<36}{_runs(p)}"]
    if record["untestable"]:
        lines.append(f"\ncould not test: {', '.join(record['untestable'])} had no judged run")
    lines += ["", "changes (base -> patched)"]
    for c in record["changes"]:
        lines.append(f"  {c['effect']:<12} {c['kind']} {c['name']}: {c['base']} -> {c['patched']}")
    if not record["changes"]:
        lines.append("  (none)")
    judged = "" if record["counters_judged"] else " (not judged: needs --repeat 2 or more)"
    lines += ["", f"counter deltas{judged}", f"{'':<28}{'base':<18}patched"]
    lines += [f"  {name:<26}{a:<18}{z}" for name, a, z in record["counters"]]
    if record.get("side_by_side"):
        lines += ["", "first run of each side (A = base, B = patched):",
                  record["side_by_side"]["text"]]
    return "\n".join(lines) + "\n"


def _runs(side: dict[str, Any]) -> str:
    outs = [r["outcome"] for r in side["runs"]]
    return ", ".join(outs) or "-"
