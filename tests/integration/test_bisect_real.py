"""Bisect and patch validation on a real kernel history (real builds, real guests).

A small git history is made on top of the default Debian 6.12 source, with
fixed identities and dates so its commit hashes (and so the kernel cache keys)
are the same on every run:

    G  baseline: Debian linux-source-6.12             good
    H1 harmless: a note in README
    S  syntax error in mm/khugepaged.c               does not build: must be skipped
    F  fix the build (S reverted)
    B  break-anon-collapse.patch                     the first bad commit
    H2 harmless: a note in the THP documentation     bad

On a linear history of this shape `git bisect` tests S first (skip), then F
(good), then B (bad). The repository lives in the cache (test-repos/) and is
reused, so a second run hits the kernel cache.

The suite is kept narrow (`selftest:anon`, i.e. `./khugepaged` = all:anon) so
each step is one short guest run; the patch makes the khugepaged-context anon
cases fail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import qemu_procs

from orchestrator import cli, proc
from orchestrator.build import git as gitrepo
from orchestrator.cache import cache_dir


def _cli_wired() -> bool:
    """Whether cli.py has the bisect, bisect-step and validate subcommands yet."""
    subs = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return bool(subs) and {"bisect", "bisect-step", "validate"} <= set(subs[0].choices)


pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not _cli_wired(), reason="thpvm bisect/validate not in cli.py")]

SUITE = "selftest:anon"
BREAK_PATCH = Path(__file__).resolve().parents[1] / "data" / "patches" / "break-anon-collapse.patch"
ENV = {"GIT_AUTHOR_NAME": "thpvm tests", "GIT_AUTHOR_EMAIL": "thpvm-tests@example.invalid",
       "GIT_COMMITTER_NAME": "thpvm tests", "GIT_COMMITTER_EMAIL": "thpvm-tests@example.invalid",
       "GIT_AUTHOR_DATE": "2025-01-01T00:00:00+00:00",
       "GIT_COMMITTER_DATE": "2025-01-01T00:00:00+00:00",
       "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
SUBJECTS = ["baseline: Debian linux-source-6.12", "harmless: a note in README",
            "broken build: syntax error in mm/khugepaged.c", "fix the build",
            "mm/khugepaged: stop collapsing anonymous memory (thpvm test seed)",
            "harmless: a note in the THP documentation"]


@dataclass
class History:
    repo: Path
    commits: dict[str, str]  # G H1 S F B H2 -> hash
    comment_patch: Path


def git(repo: Path, *args: str) -> str:
    # gc.auto=0: the fixture's commits of a whole kernel tree would start a detached
    # `git gc --auto`, repacking it for minutes beside the tests
    return proc.run(["git", "-c", "gc.auto=0", "-C", str(repo), *args], env=ENV).output.strip()


def commit_all(repo: Path, message: str, force: bool = False) -> None:
    # force: Debian's linux-source .gitignore ignores everything at the top level
    git(repo, "add", "-A", *(["-f"] if force else []))
    git(repo, "commit", "-q", "--no-verify", "-m", message)


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def make_history(src: Path, repo: Path) -> None:
    """Copy the Debian tree and commit G H1 S F B H2 on branch main."""
    from orchestrator.build.git import OWNED_OBJ

    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(src, repo, symlinks=True, ignore=shutil.ignore_patterns(OWNED_OBJ + "*"))
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, SUBJECTS[0], force=True)
    append(repo / "README", "\nthpvm test history: nothing to see here.\n")
    commit_all(repo, SUBJECTS[1])
    append(repo / "mm" / "khugepaged.c", "\nint thpvm_broken_build = ;\n")
    commit_all(repo, SUBJECTS[2])
    git(repo, "revert", "--no-edit", "HEAD")
    git(repo, "commit", "-q", "--amend", "-m", SUBJECTS[3])
    git(repo, "am", "-q", "--committer-date-is-author-date", str(BREAK_PATCH))
    append(repo / "Documentation" / "admin-guide" / "mm" / "transhuge.rst",
           "\n.. thpvm test history: a harmless note.\n")
    commit_all(repo, SUBJECTS[5])


def history_ok(repo: Path) -> bool:
    if not (repo / ".git").is_dir():
        return False
    res = proc.run(["git", "-C", str(repo), "log", "--format=%s", "main"], check=False)
    return res.returncode == 0 and res.output.strip().splitlines()[::-1] == SUBJECTS


def make_comment_patch(repo: Path, dest: Path) -> Path:
    """A comment-only change near the top of mm/khugepaged.c, as a bare diff."""
    path = repo / "mm" / "khugepaged.c"
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    path.write_text(lines[0] + "/* thpvm test: a comment and nothing else */\n"
                    + "".join(lines[1:]))
    try:
        dest.write_text(git(repo, "diff", "--", "mm/khugepaged.c") + "\n")
    finally:
        git(repo, "checkout", "-q", "--", "mm/khugepaged.c")
    return dest


@pytest.fixture(scope="module")
def history() -> History:
    from orchestrator.build import sources

    assert BREAK_PATCH.is_file(), f"missing {BREAK_PATCH}"
    repo = cache_dir("test-repos") / "bisect-history-6.12"
    if not history_ok(repo):
        make_history(sources.resolve_tree(None, None).path, repo)
    git(repo, "checkout", "-q", "-f", "main")
    git(repo, "clean", "-q", "-f", "-d")
    shas = git(repo, "log", "--format=%H", "--reverse", "main").splitlines()
    commits = dict(zip(["G", "H1", "S", "F", "B", "H2"], shas, strict=True))
    patch = make_comment_patch(repo, cache_dir("test-repos") / "comment-only.patch")
    # The user's own work in progress, which thpvm must not touch.
    append(repo / "README", "\nlocal work in progress\n")
    (repo / "my-notes.txt").write_text("untracked\n")
    return History(repo, commits, patch)


def user_state(repo: Path) -> tuple[gitrepo.RepoState, str]:
    # --full-index: a background `git gc --auto` after the fixture's commits changes abbreviations
    return gitrepo.RepoState.capture(repo), git(repo, "diff", "--full-index")


def test_bisect_names_the_breaking_commit_and_skips_the_unbuildable_one(
        history: History, tmp_path: Path) -> None:
    c = history.commits
    before = user_state(history.repo)
    out = tmp_path / "bisect"
    code = cli.main(["bisect", "--tree", str(history.repo), "--good", c["G"], "--bad", "main",
                     "--suite", SUITE, "--out", str(out)])
    record = json.loads((out / "bisect.json").read_text())
    report = (out / "report.txt").read_text()
    assert code == 0, report
    assert record["status"] == "found"
    assert record["first_bad"]["sha"] == c["B"], report
    steps = {s["rev"]: s for s in record["steps"]}
    assert c["S"] in steps, f"git bisect did not test the unbuildable commit:\n{report}"
    assert steps[c["S"]]["exit_code"] == 125 and steps[c["S"]]["decision"] == "skip"
    assert steps[c["S"]]["runs"][0]["outcome"] == "build-failed"
    for name in ("H1", "F"):
        if c[name] in steps:
            assert steps[c[name]]["decision"] == "good", report
    assert steps[c["B"]]["decision"] == "bad", report
    assert all(s["duration"] > 0 for s in record["steps"])
    assert user_state(history.repo) == before
    assert (history.repo / "my-notes.txt").read_text() == "untracked\n"


def test_breaking_patch_is_a_regression(history: History, tmp_path: Path) -> None:
    before = user_state(history.repo)
    out = tmp_path / "validate"
    code = cli.main(["validate", "--tree", str(history.repo), "--base", history.commits["F"],
                     "--patch", str(BREAK_PATCH), "--suite", SUITE, "--out", str(out)])
    record = json.loads((out / "validate.json").read_text())
    assert (code, record["verdict"]) == (1, "regression"), (out / "report.txt").read_text()
    assert any(ch["kind"] == "case" and ch["effect"] == "regression" for ch in record["changes"])
    assert user_state(history.repo) == before


def test_comment_only_patch_is_no_change(history: History, tmp_path: Path) -> None:
    before = user_state(history.repo)
    out = tmp_path / "validate"
    code = cli.main(["validate", "--tree", str(history.repo), "--base", history.commits["F"],
                     "--patch", str(history.comment_patch), "--suite", SUITE, "--out", str(out)])
    record = json.loads((out / "validate.json").read_text())
    assert (code, record["verdict"]) == (0, "no-change"), (out / "report.txt").read_text()
    assert user_state(history.repo) == before


def test_patch_that_does_not_apply_is_a_user_error(history: History,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Already applied at B: git apply fails before anything is built."""
    code = cli.main(["validate", "--tree", str(history.repo), "--base", history.commits["B"],
                     "--patch", str(BREAK_PATCH), "--suite", SUITE])
    err = capsys.readouterr().err
    assert code == 2
    assert str(BREAK_PATCH) in err and "mm/khugepaged.c" in err


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead step waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _steps_of(tag: str) -> set[int]:
    """`thpvm bisect-step` processes carrying the test's tag in their environment."""
    needle = f"{qemu_procs.TAG_VAR}={tag}".encode()
    found = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if b"bisect-step" in (p / "cmdline").read_bytes() and \
                    needle in (p / "environ").read_bytes().split(b"\0"):
                found.add(int(p.name))
        except OSError:
            continue
    return found


def test_sigkilled_bisect_takes_the_nested_step_and_its_qemu_along(history: History,
                                                                    tmp_path: Path) -> None:
    """Issue 15: `thpvm bisect` SIGKILLed while a step's guest runs. The step is git's
    child, its QEMU the step's: both must die within seconds, not when the step ends."""
    tag = qemu_procs.new_tag()
    before = qemu_procs.qemu_pids()
    env = {**os.environ, qemu_procs.TAG_VAR: tag}
    out = tmp_path / "bisect"
    child = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "bisect", "--tree",
                              str(history.repo), "--good", history.commits["G"], "--bad", "main",
                              "--suite", SUITE, "--accel", "tcg", "--out", str(out)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 1800
        while not (qemu_procs.qemu_pids(tag) - before):
            assert child.poll() is None, (out / "bisect.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no step booted a guest within 30 min"
            time.sleep(0.5)
        time.sleep(2)  # the guest is booting: the step is in the middle of its run
        steps = _steps_of(tag)
        assert steps, "no bisect-step process under thpvm bisect"
        child.kill()
        killed = time.monotonic()
        child.wait()
        left = qemu_procs.wait_gone(tag, before, 30)
        qemu_s = time.monotonic() - killed
        while any(_running(p) for p in steps) and time.monotonic() - killed < 30:
            time.sleep(0.05)
        step_s = time.monotonic() - killed
        print(f"SIGKILLed bisect: step gone after {step_s:.2f} s, its QEMU after {qemu_s:.2f} s")
        assert not left, f"QEMU outlived a SIGKILLed thpvm bisect: {left}"
        assert not [p for p in steps if _running(p)], "the step outlived it"
        assert max(step_s, qemu_s) < 10.0  # ~2 s on a loaded host
    finally:
        child.kill()
        qemu_procs.kill_all(qemu_procs.qemu_pids(tag) - before)
        for pid in _steps_of(tag):
            os.kill(pid, 9)
