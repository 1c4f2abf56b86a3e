"""validate: the A/B comparison on recorded results, and the driver on a tiny git repo.

No kernel is built: the tester returns recorded results (tests/data/results)
chosen by the file `value` of the tree under test.
"""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cli
from orchestrator.build import git as gitrepo
from orchestrator.errors import BuildError, UserError
from orchestrator.jobs import validate
from orchestrator.jobs.vmtest import VmTestRequest
from orchestrator.judge import ab as vc

DATA = Path(__file__).resolve().parents[1] / "data" / "results"
def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.fixture(autouse=True)
def _isolated(isolated_git: None) -> None:
    """Every test gets a private cache and git environment (tests/conftest.py)."""


# ------------------------------------------------------------ comparison

def effects(changes: list[vc.Change]) -> set[tuple[str, str, str]]:
    return {(c.kind, c.name, c.effect) for c in changes}


def test_same_results_are_no_change() -> None:
    changes = vc.compare([load("pass")], [load("pass")])
    assert changes == [] and vc.verdict_of(changes) == "no-change"


def test_failing_case_and_mismatching_workload_are_regressions() -> None:
    changes = vc.compare([load("pass")], [load("case-fail")])
    assert {("case", "collapse_max_ptes_shared(khugepaged:anon)", "regression"),
            ("workload", "s3_too_many_none", "regression"), ("run", "verdict", "regression"),
            ("console", "warning", "regression")} <= effects(changes)
    assert changes[0].effect == "regression"  # regressions first
    assert vc.verdict_of(changes) == "regression"


def test_fixed_case_is_an_improvement() -> None:
    changes = vc.compare([load("case-fail")], [load("pass")])
    assert vc.verdict_of(changes) == "improvement"
    case = next(c for c in changes if c.kind == "case")
    assert (case.base, case.patched) == ("fail", "pass")


def test_crash_is_a_regression_even_when_cases_vanish() -> None:
    changes = vc.compare([load("pass")], [load("crash")])
    assert ("console", "oops", "regression") in effects(changes)
    assert ("case", "collapse_compound_extreme(khugepaged:anon)", "regression") in effects(changes)
    vanished = [c for c in changes if c.kind == "case" and c.patched == "absent"]
    assert vanished and all(c.effect == "info" for c in vanished)


def test_case_status_is_decided_by_majority_over_repeats() -> None:
    good, bad = load("pass"), load("case-fail")
    assert vc.verdict_of(vc.case_changes([good] * 3, [good, good, bad])) == "no-change"
    assert vc.verdict_of(vc.case_changes([good] * 3, [bad, bad, good])) == "regression"
    flaky = vc.case_changes([good, good], [good, bad])
    assert flaky and {c.effect for c in flaky} == {"info"} and flaky[0].patched.startswith("flaky")


def with_delta(result: dict[str, Any], **deltas: int) -> dict[str, Any]:
    r = copy.deepcopy(result)
    r["counters"]["delta"].update(deltas)
    return r


def test_counters_are_judged_against_run_to_run_variation() -> None:
    base = load("pass")
    a = [with_delta(base, pages_collapsed=v) for v in (35, 36, 34)]
    noisy = [with_delta(base, pages_collapsed=v) for v in (37, 38, 36)]
    moved = [with_delta(base, pages_collapsed=v) for v in (3, 2, 4)]
    assert vc.counter_changes(a, noisy) == []
    (change,) = vc.counter_changes(a, moved)
    assert (change.name, change.base, change.patched) == ("pages_collapsed", "34..36", "2..4")
    # one run a side shows no variation: not judged at all
    assert vc.counter_changes(a[:1], moved[:1]) == []
    # time-driven counters are not judged
    assert vc.counter_changes([with_delta(base, full_scans=v) for v in (10, 11)],
                              [with_delta(base, full_scans=v) for v in (90, 91)]) == []


@pytest.mark.parametrize("base, patched, moved", [
    ([10, 10], [10, 10], False),
    ([10, 10], [13, 13], True),    # beyond the absolute floor of 2
    ([10, 10], [12, 12], False),
    ([10, 20], [31, 35], True),    # spread 10, gap 11
    ([10, 20], [25, 30], False),   # gap 5 within spread
    ([1000, 1000], [1090, 1090], False),  # within 10 %
    ([1000, 1000], [1200, 1200], True),
    ([5], [50], False),            # needs two runs a side
])
def test_counter_moved(base: list[int], patched: list[int], moved: bool) -> None:
    assert vc.counter_moved(base, patched) == moved


def test_majority() -> None:
    assert vc.majority([]) is None
    assert vc.majority(["pass", "fail", "pass"]) == "pass"
    assert vc.majority(["pass", "fail"]) == "flaky(fail/pass)"


# ------------------------------------------------------------ driver on a real repo

@dataclass
class FakeOutcome:
    exit_code: int
    run_dir: Path
    result: dict[str, Any]


class FakePipeline:
    """value 'good' -> pass.json, 'broken' -> case-fail.json, 'nobuild' -> BuildError."""

    def __init__(self) -> None:
        self.trees: list[str] = []

    def __call__(self, req: VmTestRequest) -> FakeOutcome:
        out = req.out
        value = (req.kernel.tree / "value").read_text().strip()
        self.trees.append(value)
        if value == "nobuild":
            raise BuildError("mm/khugepaged.c:1: error: expected ';'")
        result = load("case-fail" if value == "broken" else "pass")
        return FakeOutcome(result["exit_code"], out or Path("/nonexistent"), result)


def sh(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, text=True,
                          capture_output=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """base (value good) -> main (value broken); the user has local changes."""
    path = tmp_path / "user"
    path.mkdir()
    sh(path, "init", "-q", "-b", "main")
    (path / "value").write_text("good\n")
    (path / "khugepaged.c").write_text("/* khugepaged */\nint x;\n")
    sh(path, "add", ".")
    sh(path, "commit", "-q", "-m", "base")
    sh(path, "tag", "base")
    (path / "value").write_text("broken\n")
    sh(path, "commit", "-q", "-am", "break it")
    (path / "khugepaged.c").write_text("/* local edit */\nint x;\n")
    return path


def diff_patch(repo: Path, tmp_path: Path, name: str, **files: str) -> Path:
    """A bare diff against tag 'base' writing `files`, made in a throwaway clone."""
    work = tmp_path / f"mk-{name}"
    subprocess.run(["git", "clone", "-q", str(repo), str(work)], check=True)
    sh(work, "checkout", "-q", "base")
    for fname, text in files.items():
        (work / fname).write_text(text)
    patch = tmp_path / name
    patch.write_text(sh(work, "diff") + "\n")
    return patch


def request(repo: Path, tmp_path: Path, **kw: Any) -> validate.ValidateRequest:
    return validate.ValidateRequest(tree=repo, base="base", out=tmp_path / "run", **kw)


def test_breaking_patch_is_a_regression(repo: Path, tmp_path: Path) -> None:
    before = gitrepo.RepoState.capture(repo)
    patch = diff_patch(repo, tmp_path, "break.patch", value="broken\n")
    fake = FakePipeline()
    res = validate.run_validate(request(repo, tmp_path, patches=[patch], repeat=2), fake)
    assert (res.verdict, res.exit_code) == ("regression", 1)
    assert fake.trees == ["good", "good", "broken", "broken"]
    assert gitrepo.RepoState.capture(repo) == before
    assert (repo / "khugepaged.c").read_text() == "/* local edit */\nint x;\n"
    record = json.loads((tmp_path / "run" / "validate.json").read_text())
    assert record["verdict"] == "regression" and record["counters_judged"]
    assert record["patched"]["commit"]["subject"] == "thpvm validate: break.patch"
    assert "collapse_max_ptes_shared(khugepaged:anon)" in res.report
    assert "regression" in (tmp_path / "run" / "report.txt").read_text()
    assert record["side_by_side"]["diff"]["kind"] == "regression"  # rundiff agrees
    assert "selftest cases changed: 1" in res.report


def test_comment_only_patch_is_no_change(repo: Path, tmp_path: Path) -> None:
    patch = diff_patch(repo, tmp_path, "comment.patch",
                       **{"khugepaged.c": "/* khugepaged, now with a comment */\nint x;\n"})
    res = validate.run_validate(request(repo, tmp_path, patches=[patch]), FakePipeline())
    assert (res.verdict, res.exit_code) == ("no-change", 0)
    assert "not judged" in res.report


def test_head_revision_instead_of_patches(repo: Path, tmp_path: Path) -> None:
    res = validate.run_validate(request(repo, tmp_path, head="main"), FakePipeline())
    assert res.verdict == "regression" and res.patched.rev == sh(repo, "rev-parse", "main")
    res = validate.run_validate(
        validate.ValidateRequest(tree=repo, base="main", head="base", out=tmp_path / "r2"),
        FakePipeline())
    assert (res.verdict, res.exit_code) == ("improvement", 0)


def test_patch_that_does_not_apply_is_a_user_error(repo: Path, tmp_path: Path) -> None:
    patch = diff_patch(repo, tmp_path, "stale.patch", value="other\n")
    fake = FakePipeline()
    req = validate.ValidateRequest(tree=repo, base="main", patches=[patch], out=tmp_path / "run")
    with pytest.raises(UserError) as info:
        validate.run_validate(req, fake)
    assert str(patch.resolve()) in info.value.message
    assert "patch failed: value:1" in info.value.message
    assert fake.trees == []  # nothing was built


def test_unbuildable_patch_could_not_test(repo: Path, tmp_path: Path) -> None:
    patch = diff_patch(repo, tmp_path, "nobuild.patch", value="nobuild\n")
    res = validate.run_validate(request(repo, tmp_path, patches=[patch], repeat=3),
                                FakePipeline())
    assert (res.verdict, res.exit_code) == ("could-not-test", 125)
    assert [r.outcome for r in res.patched.runs] == ["build-failed"]
    assert "could not test: patched" in res.report


@pytest.mark.parametrize("kw, match", [
    ({}, "either --patch"),
    ({"patches": [Path("x.patch")], "head": "main"}, "either --patch"),
    ({"patches": [Path("/nonexistent/x.patch")]}, "file not found"),
    ({"head": "main", "repeat": 0}, "--repeat"),
    ({"head": "nope"}, "unknown revision"),
])
def test_bad_requests(repo: Path, tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(UserError, match=match):
        validate.run_validate(request(repo, tmp_path, **kw), FakePipeline())


def test_validate_arguments_make_a_request() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["validate", "--tree", "/src", "--base", "v6.12", "--patch",
                              "a.patch", "b.patch", "--patch", "c.mbox", "--repeat", "2"])
    req = cli.validate_request(args)
    assert req.patches == [Path("a.patch"), Path("b.patch"), Path("c.mbox")]
    assert (req.base, req.head, req.repeat) == ("v6.12", None, 2)
    assert req.test.suite == ["selftest", "workloads"] and req.test.kernel.patches == []
    req = cli.validate_request(parser.parse_args(["validate", "--tree", "/src", "--base", "a",
                                                  "--head", "b"]))
    assert (req.patches, req.head) == ([], "b")
    with pytest.raises(SystemExit):
        parser.parse_args(["validate", "--tree", "/src", "--base", "a", "--head", "b",
                           "--patch", "p"])
