"""bisect-step exit codes, majority voting, and real `git bisect` with a fake step.

No kernel is built: the tester (normally `vmtest.run_vm_test`) is a fake that
reads the file `value` of the commit under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cli
from orchestrator.build import git as gitrepo
from orchestrator.build.kernel import KernelRequest
from orchestrator.errors import (
    BootError,
    BuildError,
    ConfigError,
    GuestError,
    ImageError,
    InfraError,
    UserError,
)
from orchestrator.jobs import bisect_step, bisection, trials, vmtest
from orchestrator.jobs.vmtest import VmTestRequest


@pytest.fixture(autouse=True)
def _isolated(isolated_git: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private cache and git environment (tests/conftest.py), no step log from outside."""
    monkeypatch.delenv(bisect_step.STEP_LOG_ENV, raising=False)


def sh(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, text=True,
                          capture_output=True).stdout.strip()


def make_repo(path: Path, n: int) -> list[str]:
    """n commits on branch main; commit i writes 'value' = i. Returns the hashes."""
    path.mkdir(parents=True)
    sh(path, "init", "-q", "-b", "main")
    shas = []
    for i in range(n):
        (path / "value").write_text(f"{i}\n")
        sh(path, "add", "value")
        sh(path, "commit", "-q", "-m", f"commit {i}")
        shas.append(sh(path, "rev-parse", "HEAD"))
    return shas


@dataclass
class FakeOutcome:
    exit_code: int
    run_dir: Path = Path("/nonexistent/run")
    result: dict[str, Any] = field(default_factory=dict)


def outcome(code: int) -> FakeOutcome:
    verdict = {0: "pass", 1: "fail", 2: "bad-input", 125: "could-not-test"}.get(code, "?")
    return FakeOutcome(code, result={"verdict": verdict, "reason": f"exit {code}",
                                     "metadata": {"durations": {"build": 1.5, "boot": 2.0}}})


def fake_tester(*items: object) -> trials.Tester:
    """A tester that returns/raises `items` in turn (the last one repeats)."""
    calls = {"n": 0}

    def tester(req: VmTestRequest) -> FakeOutcome:
        item = items[min(calls["n"], len(items) - 1)]
        calls["n"] += 1
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, int)
        return outcome(item)

    return tester


def step_main(argv: list[str], tester: trials.Tester | None = None) -> int:
    """`thpvm bisect-step ARGV`, with `tester` in place of the pipeline."""
    try:
        args = cli.build_parser().parse_args(["bisect-step", *argv])
    except SystemExit:  # what cli.main turns into 128 for bisect-step
        return 128
    return bisect_step.run_step(cli.step_options(args), tester)


# ------------------------------------------------------------ step exit codes

@pytest.mark.parametrize("item, policy, code", [
    (0, "skip", 0),
    (1, "skip", 1),
    (125, "skip", 125),
    (BuildError("no"), "skip", 125),
    (BuildError("no"), "bad", 125),
    (ImageError("no"), "skip", 125),
    (BootError("panic at boot"), "skip", 125),
    (BootError("panic at boot"), "bad", 1),
    (GuestError("ssh lost"), "skip", 125),
    (GuestError("ssh lost"), "bad", 125),
    (InfraError("qemu missing"), "skip", 125),
    (UserError("bad suite"), "skip", 128),
    (ConfigError("option dropped"), "skip", 128),
    (2, "skip", 128),
    (255, "skip", 128),
    (130, "skip", 128),
    (RuntimeError("thpvm bug"), "skip", 128),
    (KeyError("x"), "skip", 128),
])
def test_step_exit_code_for_every_outcome(tmp_path: Path, item: object, policy: str,
                                          code: int) -> None:
    make_repo(tmp_path / "r", 1)
    log = tmp_path / "steps.jsonl"
    argv = ["--tree", str(tmp_path / "r"), "--boot-failure", policy, "--step-log", str(log)]
    assert step_main(argv, fake_tester(item)) == code
    entry = json.loads(log.read_text())
    assert entry["exit_code"] == code
    assert entry["rev"] == sh(tmp_path / "r", "rev-parse", "HEAD")
    assert entry["subject"] == "commit 0"
    assert entry["duration"] >= 0
    assert entry["decision"] == {0: "good", 1: "bad", 125: "skip", 128: "abort"}[code]


def test_step_log_records_runs_and_stage_timings(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    make_repo(tmp_path / "r", 1)
    log = tmp_path / "via-env.jsonl"
    monkeypatch.setenv(bisect_step.STEP_LOG_ENV, str(log))
    code = step_main(["--tree", str(tmp_path / "r"), "--repeat", "3"],
                     fake_tester(1, BuildError("cc1: error")))
    assert code == 125
    entry = json.loads(log.read_text())
    runs = entry["runs"]
    assert [r["outcome"] for r in runs] == ["fail", "build-failed"]  # stops after a build failure
    assert runs[0]["verdict"] == "fail" and runs[0]["timings"] == {"build": 1.5, "boot": 2.0}
    assert runs[1]["error"] == "cc1: error"
    assert "no majority" in entry["reason"]


@pytest.mark.parametrize("argv", [
    ["--boot-failure", "maybe"], ["--repeat", "x"], ["--no-such-option"], ["--repeat", "0"],
])
def test_step_bad_arguments_abort_with_128(tmp_path: Path, argv: list[str]) -> None:
    make_repo(tmp_path / "r", 1)
    assert step_main(["--tree", str(tmp_path / "r"), *argv], fake_tester(0)) == 128


def test_step_outside_a_git_tree_aborts(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    assert step_main(["--tree", str(tmp_path / "plain")], fake_tester(0)) == 128


def test_step_passes_the_request_to_the_pipeline(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The default tester calls vmtest.run_vm_test with the checked-out tree and rev=None."""
    make_repo(tmp_path / "r", 1)
    seen: list[VmTestRequest] = []

    def run_vm_test(req: VmTestRequest) -> FakeOutcome:
        seen.append(req)
        return outcome(0)

    monkeypatch.setattr(vmtest, "run_vm_test", run_vm_test)
    frag = tmp_path / "x.config"
    frag.write_text("CONFIG_X=y\n")
    argv = ["--tree", str(tmp_path / "r"), "--suite", "selftest:anon+shmem,workloads:s1_full_pmd",
            "--suite", "workloads", "--fragment", str(frag), "--config", "CONFIG_Y=n",
            "--accel", "tcg", "--out", str(tmp_path / "steps")]
    assert step_main(argv) == 0
    assert step_main(["--tree", str(tmp_path / "r")]) == 0
    req, default = seen
    sha = sh(tmp_path / "r", "rev-parse", "HEAD")
    assert req.kernel.tree == (tmp_path / "r").resolve() and req.kernel.rev is None
    assert req.suite == ["selftest:anon+shmem", "workloads:s1_full_pmd", "workloads"]
    assert req.kernel.fragments == [frag] and req.kernel.configs == ["CONFIG_Y=n"]
    assert req.accel == "tcg"
    assert req.out == tmp_path / "steps" / sha[:12] / "run-1"
    assert default.suite == ["selftest", "workloads"] and default.out is None


def test_the_real_pipeline_accepts_the_request() -> None:
    items = vmtest.suite_items(["selftest:anon+shmem,workloads:s1_full_pmd"])
    suite = vmtest.parse_suite(VmTestRequest(suite=items).suite)
    assert suite.selftest == ["anon", "shmem"] and suite.workloads == ["s1_full_pmd"]


# ------------------------------------------------------------ majority voting

G, B, S = trials.GOOD, trials.BAD, trials.SKIP


@pytest.mark.parametrize("statuses, repeat, flaky, verdict, is_flaky", [
    ([G], 1, "skip", G, False),
    ([B], 1, "skip", B, False),
    ([S], 1, "skip", S, False),
    ([G, G, G], 3, "skip", G, False),
    ([B, B, B], 3, "skip", B, False),
    ([G, G, S], 3, "skip", G, False),       # 2 of 3 is a majority of the requested runs
    ([G, S, S], 3, "skip", S, False),       # 1 of 3 is not
    ([G, B], 3, "skip", S, True),           # disagreement: flaky, skipped by default
    ([G, G, B], 3, "majority", G, True),
    ([B, B, G], 3, "majority", B, True),
    ([G, B, S], 3, "majority", S, True),    # no majority
    ([G, G, B, B], 4, "majority", S, True),  # a tie
    ([S], 3, "skip", S, False),             # stopped early after a build failure
])
def test_decide(statuses: list[str], repeat: int, flaky: str, verdict: str,
                is_flaky: bool) -> None:
    d = trials.decide(statuses, repeat, flaky)
    assert (d.verdict, d.flaky) == (verdict, is_flaky)
    assert sum(d.counts.values()) == len(statuses)


def test_run_trials_stops_once_flaky_under_skip_policy(tmp_path: Path) -> None:
    req = VmTestRequest()
    runs = trials.run_trials(req, tmp_path, trials.TrialPolicy(5, flaky="skip"), None,
                             fake_tester(0, 1, 0))
    assert [r.status for r in runs] == [G, B]
    runs = trials.run_trials(req, tmp_path, trials.TrialPolicy(3, flaky="majority"),
                             tmp_path / "o", fake_tester(0, 1, 0))
    assert [r.status for r in runs] == [G, B, G]
    assert trials.decide([r.status for r in runs], 3, "majority").verdict == G


def test_repeat_flaky_commit_is_skipped_by_default(tmp_path: Path) -> None:
    make_repo(tmp_path / "r", 1)
    tree = str(tmp_path / "r")
    assert step_main(["--tree", tree, "--repeat", "3"], fake_tester(0, 1)) == 125
    assert step_main(["--tree", tree, "--repeat", "3", "--flaky", "majority"],
                     fake_tester(1, 0, 1)) == 1
    assert step_main(["--tree", tree, "--repeat", "3"],
                     fake_tester(0, GuestError("ssh"), 0)) == 0


# ------------------------------------------------------------ real git bisect

FAKE_STEP = """\
import sys
from pathlib import Path
from orchestrator import cli, errors
from orchestrator.jobs import bisect_step

BAD_FROM, BUILD_FAILS, ABORT_AT = {bad_from}, {build_fails}, {abort_at}

class Outcome:
    def __init__(self, code):
        self.exit_code, self.run_dir = code, Path("/nonexistent")
        self.result = {{"verdict": "fail" if code else "pass"}}

def tester(req):
    value = int((req.kernel.tree / "value").read_text())
    if value in BUILD_FAILS:
        raise errors.BuildError(f"mm/khugepaged.c:1: error: syntax at {{value}}")
    if value == ABORT_AT:
        raise errors.UserError("unknown suite name")
    return Outcome(1 if value >= BAD_FROM else 0)

sys.exit(bisect_step.run_step(cli.step_options(
    cli.build_parser().parse_args(["bisect-step", *sys.argv[1:]])), tester))
"""


def fake_step(tmp_path: Path, bad_from: int, build_fails: tuple[int, ...] = (),
              abort_at: int = -1) -> list[str]:
    script = tmp_path / "fake_step.py"
    script.write_text(FAKE_STEP.format(bad_from=bad_from, build_fails=build_fails,
                                       abort_at=abort_at))
    return [sys.executable, str(script)]


def user_repo(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    """A user repo on a feature branch with uncommitted, staged and untracked changes."""
    repo = tmp_path / "user"
    shas = make_repo(repo, n)
    sh(repo, "checkout", "-q", "-b", "feature", shas[n // 2])
    (repo / "value").write_text("work in progress\n")
    (repo / "staged").write_text("staged\n")
    sh(repo, "add", "staged")
    (repo / "untracked.txt").write_text("mine\n")
    return repo, shas


def snapshot(repo: Path) -> tuple[gitrepo.RepoState, str, str, list[str]]:
    return (gitrepo.RepoState.capture(repo), (repo / "value").read_text(),
            sh(repo, "diff", "--cached"), sorted(p.name for p in repo.iterdir()))


def test_bisect_finds_first_bad_and_leaves_user_tree_alone(tmp_path: Path) -> None:
    repo, shas = user_repo(tmp_path, 10)
    before = snapshot(repo)
    req = bisection.BisectRequest(tree=repo, good=shas[0], bad="main", out=tmp_path / "run")
    res = bisection.run_bisect(req, step_prefix=fake_step(tmp_path, bad_from=6))
    assert (res.status, res.exit_code) == ("found", 0)
    assert res.first_bad and res.first_bad["sha"] == shas[6]
    assert snapshot(repo) == before
    assert sh(repo, "rev-parse", "--abbrev-ref", "HEAD") == "feature"
    record = json.loads((tmp_path / "run" / "bisect.json").read_text())
    assert record["first_bad"]["subject"] == "commit 6"
    assert record["user_tree_changes"] == []
    tested = {s["rev"]: s["decision"] for s in res.steps}
    assert tested and all((v == "bad") == (shas.index(r) >= 6) for r, v in tested.items())
    assert all(s["duration"] >= 0 and s["runs"] for s in res.steps)
    assert "first bad commit: " + shas[6] in res.report
    assert (tmp_path / "run" / "git-bisect-log.txt").read_text().count("# first bad commit")
    with gitrepo.scratch_clone(repo) as scratch:  # the scratch bisect was reset
        assert not (scratch.path / ".git" / "BISECT_START").exists()


def test_bisect_skips_a_commit_that_does_not_build(tmp_path: Path) -> None:
    """G H1 S F B H2: S does not build and is the first midpoint git tests."""
    repo, shas = user_repo(tmp_path, 6)
    req = bisection.BisectRequest(tree=repo, good=shas[0], bad=shas[5], out=tmp_path / "run")
    res = bisection.run_bisect(req, step_prefix=fake_step(tmp_path, bad_from=4, build_fails=(2,)))
    assert res.status == "found" and res.first_bad and res.first_bad["sha"] == shas[4]
    by_rev = {s["rev"]: s for s in res.steps}
    assert by_rev[shas[2]]["decision"] == "skip" and by_rev[shas[2]]["exit_code"] == 125
    assert by_rev[shas[2]]["runs"][0]["outcome"] == "build-failed"
    assert "build-failed" in res.report


def test_bisect_with_only_skipped_commits_left_is_ambiguous(tmp_path: Path) -> None:
    repo, shas = user_repo(tmp_path, 6)
    req = bisection.BisectRequest(tree=repo, good=shas[0], bad=shas[5], out=tmp_path / "run")
    res = bisection.run_bisect(req, step_prefix=fake_step(tmp_path, bad_from=4,
                                                       build_fails=(2, 3, 4)))
    assert (res.status, res.exit_code) == ("ambiguous", 125)
    assert {c["sha"] for c in res.candidates} == {shas[2], shas[3], shas[4], shas[5]}
    assert "only skipped commits left" in res.report


def test_bisect_step_abort_stops_the_bisect(tmp_path: Path) -> None:
    repo, shas = user_repo(tmp_path, 8)
    before = snapshot(repo)
    req = bisection.BisectRequest(tree=repo, good=shas[0], bad=shas[7], out=tmp_path / "run")
    res = bisection.run_bisect(req, step_prefix=fake_step(tmp_path, bad_from=5,
                                                       abort_at=4))
    assert (res.status, res.exit_code) == ("aborted", 2)
    assert res.steps[-1]["decision"] == "abort" and "unknown suite" in res.steps[-1]["reason"]
    assert snapshot(repo) == before


def test_bisect_leaves_the_users_own_bisect_alone(tmp_path: Path) -> None:
    repo, shas = user_repo(tmp_path, 6)
    sh(repo, "stash", "-q", "-u")
    sh(repo, "bisect", "start", shas[5], shas[0])
    before = snapshot(repo)
    user_log = sh(repo, "bisect", "log")
    req = bisection.BisectRequest(tree=repo, good=shas[0], bad=shas[5], out=tmp_path / "run")
    res = bisection.run_bisect(req, step_prefix=fake_step(tmp_path, bad_from=3))
    assert res.first_bad and res.first_bad["sha"] == shas[3]
    assert snapshot(repo) == before and before[0].bisecting
    assert sh(repo, "bisect", "log") == user_log


@pytest.mark.parametrize("good, bad, match", [
    ("nope", "main", "unknown revision"),
    ("main", "main", "same commit"),
    ("main", "main~3", "ancestor"),
])
def test_bisect_rejects_bad_endpoints(tmp_path: Path, good: str, bad: str, match: str) -> None:
    make_repo(tmp_path / "r", 5)
    req = bisection.BisectRequest(tree=tmp_path / "r", good=good, bad=bad, out=tmp_path / "run")
    with pytest.raises(UserError, match=match):
        bisection.run_bisect(req, step_prefix=["false"])


def test_bisect_rejects_bad_options(tmp_path: Path) -> None:
    make_repo(tmp_path / "r", 3)
    for kw in ({"policy": trials.TrialPolicy(repeat=0)},
               {"policy": trials.TrialPolicy(boot_failure="maybe")},
               {"test": VmTestRequest(KernelRequest(fragments=[tmp_path / "x"]))}):
        req = bisection.BisectRequest(tree=tmp_path / "r", good="main~2", bad="main", **kw)
        with pytest.raises(UserError):
            bisection.run_bisect(req, step_prefix=["false"])


def test_step_arguments_round_trip(tmp_path: Path) -> None:
    frag = tmp_path / "f.config"
    frag.write_text("")
    test = VmTestRequest(KernelRequest(fragments=[frag], configs=["CONFIG_A=y"]),
                         suite=["selftest", "w1"], accel="tcg")
    req = bisection.BisectRequest(tree=tmp_path, good="a", bad="b", test=test,
                                  policy=trials.TrialPolicy(3, "bad", "majority"))
    argv = ["bisect-step", *bisection.step_arguments(req, tmp_path / "run")]
    opts = cli.step_options(cli.build_parser().parse_args(argv))
    assert (opts.test.suite, opts.policy) == (["selftest", "w1"],
                                              trials.TrialPolicy(3, "bad", "majority"))
    assert opts.test.kernel.fragments == [frag.resolve()]
    assert opts.test.kernel.configs == ["CONFIG_A=y"] and opts.test.accel == "tcg"
    assert opts.step_log == tmp_path / "run" / "steps.jsonl"
    assert bisection.step_command()[-1] == "bisect-step"


def test_parse_bisect_output() -> None:
    sha = "a" * 40
    assert bisection.parse_bisect_output(f"x\n{sha} is the first bad commit\n") == (
        "found", sha, [])
    text = ("There are only 'skip'ped commits left to test.\n"
            f"The first bad commit could be any of:\n{sha}\n{'b' * 40}\nWe cannot bisect more!\n")
    assert bisection.parse_bisect_output(text) == ("ambiguous", None, [sha, "b" * 40])
    assert bisection.parse_bisect_output("error: bisect run failed: exit code 128")[0] == "aborted"
    assert bisection.parse_bisect_output("something else")[0] == "failed"


def test_bisect_arguments_make_a_request(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args([
        "bisect", "--tree", "/src/linux", "--good", "v6.11", "--bad", "HEAD",
        "--suite", "selftest:anon", "--repeat", "3", "--boot-failure", "bad",
        "--config", "CONFIG_A=y"])
    req = cli.bisect_request(args)
    assert (req.tree, req.good, req.bad, req.test.suite) == (Path("/src/linux"), "v6.11", "HEAD",
                                                             ["selftest:anon"])
    assert req.policy == trials.TrialPolicy(3, "bad", "skip")
    assert req.test.kernel.configs == ["CONFIG_A=y"] and req.test.kernel.tree is None


def test_step_with_a_boot_failure_is_skipped(tmp_path: Path) -> None:
    make_repo(tmp_path / "r", 1)
    assert step_main(["--tree", str(tmp_path / "r")], fake_tester(BootError("no"))) == 125


HANGING_STEP = """
import os, sys, time
sys.path.insert(0, {root!r})
from orchestrator import cli, proc
from orchestrator.jobs import bisect_step

def tester(req):  # a step that boots a "QEMU" (a PDEATHSIG child, as proc.spawn makes it)
    child = proc.spawn(["sleep", "600"])
    with open({pids!r} + ".tmp", "w") as f:
        f.write(f"{{os.getpid()}} {{child.pid}}")
    os.rename({pids!r} + ".tmp", {pids!r})
    time.sleep(600)

sys.exit(bisect_step.run_step(cli.step_options(
    cli.build_parser().parse_args(["bisect-step", *sys.argv[1:]])), tester))
"""

TOP = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from orchestrator.jobs import bisection
req = bisection.BisectRequest(tree=Path({repo!r}), good={good!r}, bad="main", out=Path({out!r}))
bisection.run_bisect(req, step_prefix=[sys.executable, {step!r}])
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_sigkilled_bisect_takes_the_nested_step_and_its_qemu_along(tmp_path: Path) -> None:
    """Issue 15: SIGKILL of `thpvm bisect` while `git bisect run` runs a step (git's
    child, not thpvm's) that runs a PDEATHSIG child: the whole tree is gone within
    seconds, not when the step ends. Real processes: python -> git -> step -> sleep."""
    repo = tmp_path / "r"
    shas = make_repo(repo, 4)
    root = str(Path(__file__).resolve().parents[2])
    pids_file = tmp_path / "pids"
    step = tmp_path / "step.py"
    step.write_text(HANGING_STEP.format(root=root, pids=str(pids_file)))
    top_py = tmp_path / "top.py"
    top_py.write_text(TOP.format(root=root, repo=str(repo), good=shas[0],
                                 out=str(tmp_path / "run"), step=str(step)))
    top = subprocess.Popen([sys.executable, str(top_py)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not pids_file.exists():
            assert top.poll() is None, "thpvm bisect ended before its step started"
            assert time.monotonic() < deadline, "no step within 120 s"
            time.sleep(0.05)
        step_pid, qemu_pid = map(int, pids_file.read_text().split())
        assert _alive(step_pid) and _alive(qemu_pid)
        top.kill()
        killed = time.monotonic()
        top.wait()
        while (_alive(step_pid) or _alive(qemu_pid)) and time.monotonic() - killed < 30:
            time.sleep(0.02)
        took = time.monotonic() - killed
        print(f"step and its child gone {took:.2f} s after SIGKILL of thpvm bisect")
        assert not _alive(step_pid), "the nested bisect-step outlived a SIGKILLed thpvm bisect"
        assert not _alive(qemu_pid), "the step's PDEATHSIG child outlived it"
        assert took < 5.0  # ~0.1 s idle; generous for a loaded host
    finally:
        top.kill()
        for pid in (int(p) for p in (pids_file.read_text().split()
                                     if pids_file.exists() else [])):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
