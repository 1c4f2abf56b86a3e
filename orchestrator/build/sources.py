"""Kernel source trees: where a tree comes from and what identifies its content.

The one place that turns `--tree`/`--rev`/`--patch` into a tree to build:
Debian's linux-source packages (`debian:6.1`, `debian:6.12` (the default),
`debian:7.2`; build/debian.py fetches and extracts them into the cache), a
user's tree built in place with `O=` (never dirtied), a git revision checked
out into a persistent scratch worktree in the cache, or a hard-linked copy of
any of them with patches applied.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from orchestrator import cache, proc
from orchestrator.build import debian
from orchestrator.build import git as gitrepo
from orchestrator.build.git import OWNED_OBJ, OWNED_OBJ_PATTERN
from orchestrator.build.kconfig import Version
from orchestrator.errors import BuildError, UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KernelTree:
    """A source tree to build and what identifies its content."""

    path: Path
    kind: str  # "debian-source" | "git" | "plain"
    identity: str
    revision: str | None
    slot: str  # names the persistent build directory

    @property
    def version(self) -> Version | None:
        """(VERSION, PATCHLEVEL) from the tree's top Makefile; None if unreadable."""
        return tree_version(self.path)


def debian_tree(version: str) -> KernelTree:
    """Debian's linux-source-`version` as a KernelTree (installed, cached or fetched)."""
    src = debian.source_tree(version)
    return KernelTree(src.path, "debian-source", f"debian:{src.label}", None,
                      f"debian-{src.label}")


def tree_version(path: Path) -> Version | None:
    """(VERSION, PATCHLEVEL) of a kernel tree, read from its top Makefile."""
    try:
        head = (path / "Makefile").read_text(errors="replace")[:2000]
    except OSError:
        return None
    major = re.search(r"^VERSION\s*=\s*(\d+)", head, re.M)
    minor = re.search(r"^PATCHLEVEL\s*=\s*(\d+)", head, re.M)
    return (int(major.group(1)), int(minor.group(1))) if major and minor else None


def resolve_tree(tree: Path | str | None, rev: str | None) -> KernelTree:
    """Turn --tree/--rev into a KernelTree (a checked-out scratch worktree for --rev).

    No tree means `debian:6.12`; `debian:X.Y` is Debian's linux-source-X.Y.
    """
    version = debian.parse_spec(str(tree)) if tree is not None else debian.DEFAULT_VERSION
    if version is not None:
        if rev:
            raise UserError("--rev needs a git --tree (a Debian source package is not a git tree)")
        return debian_tree(version)
    assert tree is not None
    path = Path(tree).expanduser().resolve()
    if not (path / "Makefile").is_file() or not (path / "mm" / "khugepaged.c").is_file():
        raise UserError(f"--tree {tree}: not a Linux kernel source tree "
                        "(no Makefile or mm/khugepaged.c)")
    is_git = (path / ".git").exists()
    if not rev and ((path / ".config").exists() or (path / "include/config").is_dir()):
        raise UserError(f"--tree {tree} has an in-tree build (.config), so an out-of-tree "
                        "build is impossible without dirtying it; use --rev HEAD (builds "
                        "a scratch worktree) or run 'make mrproper' there")
    if rev:
        if not is_git:
            raise UserError(f"--rev {rev}: {tree} is not a git tree")
        return checkout_revision(path, rev)
    if is_git:
        head = _git(path, "rev-parse", "HEAD").strip()
        dirty = _git(path, "status", "--porcelain", "--untracked-files=no")
        diff = _git(path, "diff", "HEAD") if dirty else ""
        ident = f"git:{head}:{cache.digest(diff)}" if diff else f"git:{head}"
        return KernelTree(path, "git", ident, head + ("-dirty" if diff else ""),
                          "tree-" + cache.digest(str(path)))
    return KernelTree(path, "plain", f"plain:{_stat_digest(path)}", None,
                      "tree-" + cache.digest(str(path)))


def apply_patches(base: KernelTree, patches: list[Path]) -> KernelTree:
    """A hard-linked copy of `base` in the cache with `patches` applied (`git apply`).

    `git apply` replaces the files it changes, so the base tree is never modified.
    A patch that does not apply is a UserError naming the patch and its hunks.
    """
    texts = []
    for p in patches:
        try:
            texts.append(p.read_bytes())
        except OSError as e:
            raise UserError(f"--patch {p}: {e.strerror}") from e
    ident = f"{base.identity}+patches:{cache.digest(*texts)}"
    dest = cache.cache_root() / "trees" / f"patched-{cache.digest(ident)}"
    tree = dest / base.path.name
    if not (dest / ".thpvm-complete").exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        proc.run(["cp", "-al", base.path, tree], error=BuildError)
        for obj in tree.glob(OWNED_OBJ + "*"):  # the base tree's objects stay its own
            shutil.rmtree(obj, ignore_errors=True)
        try:
            for p in patches:
                gitrepo.apply_to_tree(tree, p)
        except UserError:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        (dest / ".thpvm-complete").write_text("\n".join(map(str, patches)) + "\n")
    return KernelTree(tree, base.kind, ident, base.revision, dest.name)


def checkout_revision(repo: Path, rev: str) -> KernelTree:
    """Check `rev` out into the repo's persistent scratch worktree in the cache.

    The user's checkout, HEAD and index are untouched; only git's worktree
    metadata in the repo records the scratch worktree.
    """
    try:
        commit = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    except BuildError as e:
        raise UserError(f"--rev {rev}: not a commit in {repo}") from e
    slot = "wt-" + cache.digest(str(repo))
    wt = cache.cache_root() / "worktrees" / slot
    if not (wt / ".git").exists():
        wt.parent.mkdir(parents=True, exist_ok=True)
        _git(repo, "worktree", "prune")
        _git(repo, "worktree", "add", "--detach", "--force", str(wt), commit)
    else:
        _git(wt, "checkout", "--detach", "--force", commit)
        _git(wt, "clean", "-fdxq", "-e", OWNED_OBJ_PATTERN)
    return KernelTree(wt, "git", f"git:{commit}", commit, slot)


def _git(repo: Path, *args: str) -> str:
    return gitrepo.git(repo, *args, error=BuildError).output


def _stat_digest(path: Path) -> str:
    items: list[str] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            st = os.lstat(os.path.join(root, name))
            items.append(f"{root}/{name}:{st.st_size}:{st.st_mtime_ns}")
    return cache.digest("\n".join(items))


