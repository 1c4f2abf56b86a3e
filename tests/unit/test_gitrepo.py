"""gitrepo: real git on tiny repositories made in tmp_path."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.build import git as gitrepo
from orchestrator.errors import UserError


@pytest.fixture(autouse=True)
def _isolated(isolated_git: None) -> None:
    """Every test gets a private cache and git environment (tests/conftest.py)."""


def sh(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, text=True,
                          capture_output=True).stdout.strip()


def make_repo(path: Path, n: int = 3) -> list[str]:
    """A repository with n commits, each writing 'value' = its index; returns hashes."""
    path.mkdir(parents=True)
    sh(path, "init", "-q", "-b", "main")
    shas = []
    for i in range(n):
        (path / "value").write_text(f"{i}\n")
        (path / "f.c").write_text("a\nb\nc\nd\ne\n" if i == 0 else f"a\nb{i}\nc\nd\ne\n")
        sh(path, "add", "value", "f.c")
        sh(path, "commit", "-q", "-m", f"commit {i}")
        shas.append(sh(path, "rev-parse", "HEAD"))
    return shas


def test_toplevel_and_not_a_repo(tmp_path: Path) -> None:
    make_repo(tmp_path / "r")
    (tmp_path / "r" / "sub").mkdir()
    assert gitrepo.toplevel(tmp_path / "r" / "sub") == (tmp_path / "r").resolve()
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a git work tree"):
        gitrepo.toplevel(tmp_path / "plain")
    with pytest.raises(UserError, match="not a directory"):
        gitrepo.toplevel(tmp_path / "missing")


def test_resolve(tmp_path: Path) -> None:
    shas = make_repo(tmp_path / "r")
    repo = tmp_path / "r"
    assert gitrepo.resolve(repo, "HEAD~2") == shas[0]
    assert gitrepo.resolve(repo, "main") == shas[2]
    assert gitrepo.resolve(repo, shas[1][:8]) == shas[1]
    with pytest.raises(UserError, match="unknown revision.*nope"):
        gitrepo.resolve(repo, "nope")
    with pytest.raises(UserError):
        gitrepo.resolve(repo, "--all")
    assert gitrepo.is_ancestor(repo, shas[0], shas[2])
    assert not gitrepo.is_ancestor(repo, shas[2], shas[0])
    assert gitrepo.describe(repo, shas[1])["subject"] == "commit 1"


def test_repo_state_sees_every_kind_of_change(tmp_path: Path) -> None:
    shas = make_repo(tmp_path / "r")
    repo = tmp_path / "r"
    before = gitrepo.RepoState.capture(repo)
    assert before.branch == "refs/heads/main" and before.status == "" and not before.bisecting
    (repo / "untracked").write_text("x")
    sh(repo, "checkout", "-q", "--detach", shas[0])
    after = gitrepo.RepoState.capture(repo)
    assert {d.split(":")[0] for d in before.differences(after)} == {"head", "branch", "status"}


def test_scratch_clone_leaves_user_repo_alone(tmp_path: Path) -> None:
    shas = make_repo(tmp_path / "r")
    repo = tmp_path / "r"
    (repo / "value").write_text("uncommitted\n")
    before = gitrepo.RepoState.capture(repo)
    with gitrepo.scratch_clone(repo) as scratch:
        assert scratch.path.is_dir() and scratch.path != repo
        gitrepo.checkout(scratch.path, shas[0])
        assert (scratch.path / "value").read_text() == "0\n"
        (scratch.path / "stray.o").write_text("x")
        (scratch.path / ".thpvm-obj").mkdir()
        (scratch.path / ".thpvm-obj" / "vmlinux.o").write_text("x")
        gitrepo.checkout(scratch.path, shas[1])
        assert not (scratch.path / "stray.o").exists()
        assert (scratch.path / ".thpvm-obj" / "vmlinux.o").exists()  # incremental builds
        first = scratch.path
    assert gitrepo.RepoState.capture(repo) == before
    assert (repo / "value").read_text() == "uncommitted\n"
    with gitrepo.scratch_clone(repo) as again:  # reused, same path: incremental builds
        assert again.path == first


def test_scratch_clone_sees_commits_made_after_the_clone(tmp_path: Path) -> None:
    make_repo(tmp_path / "r")
    repo = tmp_path / "r"
    with gitrepo.scratch_clone(repo):
        pass
    (repo / "value").write_text("later\n")
    sh(repo, "commit", "-q", "-am", "later")
    later = sh(repo, "rev-parse", "HEAD")
    with gitrepo.scratch_clone(repo) as scratch:
        gitrepo.checkout(scratch.path, later)  # via objects/info/alternates, no fetch
        assert (scratch.path / "value").read_text() == "later\n"


def test_scratch_clone_is_locked(tmp_path: Path) -> None:
    make_repo(tmp_path / "r")
    with gitrepo.scratch_clone(tmp_path / "r"):
        with pytest.raises(UserError, match="another thpvm"):
            with gitrepo.scratch_clone(tmp_path / "r"):
                pass


def test_scratch_clone_resets_a_leftover_bisect(tmp_path: Path) -> None:
    shas = make_repo(tmp_path / "r")
    with gitrepo.scratch_clone(tmp_path / "r") as scratch:
        gitrepo.checkout(scratch.path, shas[2])
        sh(scratch.path, "bisect", "start", shas[2], shas[0])
    with gitrepo.scratch_clone(tmp_path / "r") as scratch:
        assert not (scratch.path / ".git" / "BISECT_START").exists()


def write_patch(repo: Path, base: str, edit: str, mbox: bool, out: Path) -> Path:
    """A patch changing f.c's second line to `edit`, made on `base` (then dropped)."""
    sh(repo, "checkout", "-q", "--detach", base)
    (repo / "f.c").write_text(f"a\n{edit}\nc\nd\ne\n")
    if mbox:
        sh(repo, "commit", "-q", "-am", f"set {edit}")
        out.write_text(sh(repo, "format-patch", "-1", "--stdout", "HEAD") + "\n")
    else:
        out.write_text(sh(repo, "diff") + "\n")
        sh(repo, "checkout", "-q", "--", "f.c")
    sh(repo, "checkout", "-q", "main")
    return out


@pytest.mark.parametrize("mbox", [False, True])
def test_apply_patch(tmp_path: Path, mbox: bool) -> None:
    shas = make_repo(tmp_path / "r")
    repo = tmp_path / "r"
    patch = write_patch(repo, shas[2], "patched", mbox, tmp_path / "p.patch")
    assert gitrepo.is_mbox(patch) == mbox
    with gitrepo.scratch_clone(repo) as scratch:
        gitrepo.checkout(scratch.path, shas[2])
        new = gitrepo.apply_patch(scratch.path, patch)
        assert new != shas[2]
        assert (scratch.path / "f.c").read_text().splitlines()[1] == "patched"
        want = "set patched" if mbox else "thpvm validate: p.patch"
        assert gitrepo.subject(scratch.path, new) == want
        assert gitrepo.status(scratch.path) == ""


@pytest.mark.parametrize("mbox", [False, True])
def test_patch_that_does_not_apply_names_file_and_hunk(tmp_path: Path, mbox: bool) -> None:
    shas = make_repo(tmp_path / "r")
    repo = tmp_path / "r"
    patch = write_patch(repo, shas[2], "patched", mbox, tmp_path / "bad.patch")
    with gitrepo.scratch_clone(repo) as scratch:
        gitrepo.checkout(scratch.path, shas[1])  # line 2 is 'b1' there, not 'b2'
        with pytest.raises(UserError) as info:
            gitrepo.apply_patch(scratch.path, patch)
        assert str(patch) in info.value.message
        assert "patch failed: f.c:1" in info.value.message
        assert "b2" in info.value.detail  # the hunk git searched for
        assert gitrepo.head(scratch.path) == shas[1]
        assert gitrepo.status(scratch.path) == ""


def test_failed_hunk() -> None:
    out = ("Checking patch mm/khugepaged.c...\nerror: while searching for:\n  foo\n\n"
           "error: patch failed: mm/khugepaged.c:1234\n"
           "error: mm/khugepaged.c: patch does not apply\n")
    assert gitrepo.failed_hunk(out) == "patch failed: mm/khugepaged.c:1234"
    assert gitrepo.failed_hunk("error: corrupt patch at line 7\n") == "corrupt patch at line 7"
    assert gitrepo.failed_hunk("error: No valid patches in input\n") == "No valid patches in input"
    assert gitrepo.failed_hunk("") == "no output from git"


def test_same_patch_on_same_base_gives_the_same_commit(tmp_path: Path) -> None:
    """Deterministic hashes: re-validating a patch hits the kernel cache."""
    shas = make_repo(tmp_path / "r")
    patch = write_patch(tmp_path / "r", shas[2], "patched", False, tmp_path / "p.patch")
    with gitrepo.scratch_clone(tmp_path / "r") as scratch:
        gitrepo.checkout(scratch.path, shas[2])
        first = gitrepo.apply_patch(scratch.path, patch)
        gitrepo.checkout(scratch.path, shas[2])
        assert gitrepo.apply_patch(scratch.path, patch) == first
