"""Thin git helpers, every call through `proc.run`.

thpvm never changes the user's checkout: bisect and validate work in a
*scratch clone* under the cache (`git clone --shared --no-checkout`), keyed by
the user's repository path so the same scratch tree, and therefore the same
incremental kernel build directory, is reused run after run. The clone reads
the user's objects through `objects/info/alternates`, so every commit of the
user's repository, present or future, is reachable there by its hash without
a fetch; only refs are not shared, which is why revisions are resolved to
hashes in the user's repository first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.cache import cache_dir, digest, locked
from orchestrator.errors import InfraError, ThpvmError, UserError

log = logging.getLogger(__name__)

# Commits thpvm makes (applied patches) must not depend on the user's git config.
IDENTITY = {
    "GIT_AUTHOR_NAME": "thpvm", "GIT_AUTHOR_EMAIL": "thpvm@localhost",
    "GIT_COMMITTER_NAME": "thpvm", "GIT_COMMITTER_EMAIL": "thpvm@localhost",
}
# The kernel build's object directories inside trees thpvm owns (scratch clones, worktrees,
# patched copies), one per build variant (`.thpvm-obj-<variant>`, see build/kernel.py):
# kept by every checkout/clean so the next build stays incremental.
OWNED_OBJ = ".thpvm-obj"
OWNED_OBJ_PATTERN = f"/{OWNED_OBJ}*"  # for `git clean -e`: every variant's directory
# The user's global git config must not break thpvm's own commits (signing, hooks), and no
# `git gc --auto` may detach from thpvm's commands: it outlives them in a session of its own
# and repacks a kernel repository for minutes (seen in a cold `make test`).
SAFE_CONFIG = ["-c", "commit.gpgSign=false", "-c", "core.hooksPath=/dev/null",
               "-c", "gc.auto=0"]


def git(repo: Path, *args: str, check: bool = True, error: type[ThpvmError] = InfraError,
        env: Mapping[str, str] | None = None, log_path: Path | None = None,
        timeout: float | None = 600.0, pass_fds: tuple[int, ...] = ()) -> proc.Result:
    """Run `git -C repo ARGS...` (no pager, no prompts) and return its Result."""
    full_env = {"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "LC_ALL": "C"}
    full_env.update(env or {})
    return proc.run(["git", *SAFE_CONFIG, "-C", str(repo), *args], env=full_env, check=check,
                    error=error, log_path=log_path, timeout=timeout, pass_fds=pass_fds)


def out(repo: Path, *args: str) -> str:
    """The stripped output of a git command that must succeed."""
    return git(repo, *args).output.strip()


def toplevel(path: Path) -> Path:
    """The top of the work tree containing `path`; UserError if it is not a git work tree."""
    if not path.is_dir():
        raise UserError(f"not a directory: {path}")
    res = git(path, "rev-parse", "--show-toplevel", check=False)
    if res.returncode != 0 or not res.output.strip():
        raise UserError(f"not a git work tree: {path}", res.output.strip())
    return Path(res.output.strip().splitlines()[-1])


def common_dir(repo: Path) -> Path:
    """The repository's common git directory (the main .git, also for a linked worktree)."""
    return Path(out(repo, "rev-parse", "--path-format=absolute", "--git-common-dir"))


def resolve(repo: Path, rev: str) -> str:
    """The full commit hash of `rev` in `repo`; UserError naming the revision if unknown."""
    res = git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
              check=False)
    if res.returncode != 0 or not res.output.strip():
        raise UserError(f"unknown revision in {repo}: {rev!r}")
    return res.output.strip().splitlines()[-1]


def head(repo: Path) -> str:
    """The commit hash HEAD points at."""
    return out(repo, "rev-parse", "--verify", "HEAD")


def current_branch(repo: Path) -> str | None:
    """The branch HEAD is on (e.g. 'refs/heads/main'), or None when detached."""
    res = git(repo, "symbolic-ref", "--quiet", "HEAD", check=False)
    if res.returncode != 0:
        return None
    return res.output.strip() or None


def status(repo: Path) -> str:
    """`git status --porcelain` including untracked files: '' for a clean tree."""
    return git(repo, "status", "--porcelain", "--untracked-files=all").output


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    """Whether `older` is an ancestor of (or equal to) `newer`."""
    return git(repo, "merge-base", "--is-ancestor", older, newer, check=False).returncode == 0


def subject(repo: Path, rev: str) -> str:
    """The one-line subject of a commit."""
    return out(repo, "log", "-1", "--format=%s", rev)


def describe(repo: Path, rev: str) -> dict[str, str]:
    """Hash, short hash, subject, author and date of a commit, for reports."""
    fmt = "%H%x00%h%x00%s%x00%an <%ae>%x00%aI"
    fields = out(repo, "log", "-1", f"--format={fmt}", rev).split("\x00")
    keys = ("sha", "short", "subject", "author", "date")
    return dict(zip(keys, fields, strict=False))


@dataclass(frozen=True)
class RepoState:
    """What must be identical before and after thpvm touched a repository."""

    head: str
    branch: str | None
    status: str
    bisecting: bool

    @classmethod
    def capture(cls, repo: Path) -> RepoState:
        """Snapshot HEAD, the branch, the work tree/index status and bisect state."""
        gitdir = Path(out(repo, "rev-parse", "--path-format=absolute", "--git-dir"))
        return cls(head(repo), current_branch(repo), status(repo),
                   (gitdir / "BISECT_START").exists())

    def differences(self, other: RepoState) -> list[str]:
        """Human-readable list of what changed from self to other."""
        diffs = []
        for name in ("head", "branch", "status", "bisecting"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                diffs.append(f"{name}: {a!r} -> {b!r}")
        return diffs


@dataclass
class Scratch:
    """A scratch clone of a user's repository under the cache, held under a lock."""

    path: Path
    source: Path


def scratch_path(user_repo: Path, purpose: str = "scratch") -> Path:
    """Where the scratch clone of `user_repo` lives (stable for a given repository path)."""
    key = digest(str(common_dir(user_repo).resolve()))
    return cache_dir("worktrees", f"{purpose}-{key}") / "tree"


@contextmanager
def scratch_clone(user_repo: Path, purpose: str = "scratch") -> Iterator[Scratch]:
    """Lock and yield the (created on demand) scratch clone of `user_repo`.

    The clone is left clean and detached, never bisecting: a bisect that a
    previous crash left behind is reset. Raises UserError when another thpvm
    holds the lock.
    """
    path = scratch_path(user_repo, purpose)
    with locked(path.parent / "lock",
                busy=f"another thpvm bisect/validate is using {path.parent}"):
        if not (path / ".git").is_dir():
            _make_clone(user_repo, path)
        _tidy(path)
        yield Scratch(path, user_repo)


def _make_clone(user_repo: Path, path: Path) -> None:
    if path.exists():
        proc.run(["rm", "-rf", "--", str(path)])
    log.info("creating scratch clone of %s at %s", user_repo, path)
    proc.run(["git", "clone", "--quiet", "--shared", "--no-checkout",
              str(common_dir(user_repo)), str(path)], env={"GIT_TERMINAL_PROMPT": "0"})


def _tidy(path: Path) -> None:
    """Leave no bisect, am or merge in progress behind in a scratch clone."""
    gitdir = path / ".git"
    if (gitdir / "BISECT_START").exists():
        git(path, "bisect", "reset", check=False)
    if (gitdir / "rebase-apply").exists():
        git(path, "am", "--abort", check=False)


def checkout(scratch: Path, rev: str) -> None:
    """Force the scratch clone's work tree to exactly `rev` (detached), dropping strays.

    Files git ignores are removed too (`clean -x`: `make O=` refuses a source
    tree with build products in it), except the kernel build's own object
    directories (`OWNED_OBJ*`), which keep the next build incremental.
    """
    git(scratch, "checkout", "--quiet", "--force", "--detach", rev)
    git(scratch, "clean", "-q", "-f", "-d", "-x", "-e", OWNED_OBJ_PATTERN)


def is_mbox(patch: Path) -> bool:
    """Whether a patch file is a mail (format-patch/mbox) rather than a bare diff."""
    with open(patch, "rb") as f:
        head_bytes = f.read(4096)
    first = head_bytes.split(b"\n", 1)[0]
    return first.startswith(b"From ") or (b"\nSubject:" in b"\n" + head_bytes
                                          and b"\nFrom:" in b"\n" + head_bytes)


def apply_patch(scratch: Path, patch: Path) -> str:
    """Commit `patch` on top of the scratch clone's HEAD and return the new hash.

    A mail is applied with `git am` (keeping its author and message), a bare
    diff with `git apply --index` and a commit named after the file. A patch
    that does not apply raises UserError naming the file and the failing hunk.
    """
    _check_applies(scratch, patch)
    # Dated like the commit below it: the same patch on the same base gives the same
    # hash, so re-validating it hits the kernel cache.
    date = out(scratch, "log", "-1", "--format=%cI", "HEAD")
    env = {**IDENTITY, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    if is_mbox(patch):
        res = git(scratch, "am", "--quiet", "--keep-cr", str(patch), check=False, env=env)
        if res.returncode != 0:
            git(scratch, "am", "--abort", check=False)
            raise UserError(f"git am failed on {patch}: {failed_hunk(res.output)}",
                            res.output.strip())
    else:
        git(scratch, "apply", "--index", str(patch), error=UserError)
        git(scratch, "commit", "--quiet", "--no-verify", "-m", f"thpvm validate: {patch.name}",
            env=env)
    return head(scratch)


def apply_to_tree(tree: Path, patch: Path) -> None:
    """Apply `patch` (a mail or a bare diff, -p1) to the files of `tree`, git or not.

    The same `git apply` that `apply_patch` commits with, so `--patch` means one thing
    everywhere; it replaces the files it changes (hard-linked copies stay intact). A
    patch that does not apply is a UserError naming the file and the failing hunk.
    """
    env = {"GIT_CEILING_DIRECTORIES": str(tree.parent)}  # never a repository around it
    _check_applies(tree, patch, env)
    git(tree, "apply", str(patch.resolve()), env=env, error=UserError)


def _check_applies(tree: Path, patch: Path, env: Mapping[str, str] | None = None) -> None:
    check = git(tree, "apply", "--check", "--verbose", str(patch.resolve()), check=False,
                env=env)
    if check.returncode != 0:
        raise UserError(f"--patch {patch} does not apply: {failed_hunk(check.output)}",
                        check.output.strip()[-2000:])


def failed_hunk(output: str) -> str:
    """The most telling line of git apply/am output: 'patch failed: FILE:LINE' if present.

    Accepts lines like ``error: patch failed: mm/khugepaged.c:1234`` and
    ``error: mm/khugepaged.c: patch does not apply``; falls back to the first
    ``error:`` line, then to the last non-empty line.
    """
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln.removeprefix("error:").strip() for ln in lines if ln.startswith("error:")]
    for want in ("patch failed:", "does not apply", "does not exist", "corrupt patch"):
        for e in errors:
            if want in e:
                return e
    if errors:
        return errors[0]
    return lines[-1] if lines else "no output from git"
