"""Kernel source trees and out-of-tree builds, cached by content.

Trees: Debian's linux-source-6.12 tarball (the default, extracted once into the
cache), a user's tree built in place with `O=` (never dirtied), or a git
revision checked out into a persistent scratch worktree in the cache.

Builds run in a persistent build directory per tree location (so make is
incremental and a bisect step recompiles only what changed), with ccache;
finished artifacts are copied to `kernels/<key>/`, where the key is the tree
identity + the merged config + the compiler version. A key hit skips make.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator import cache

from orchestrator.build import kconfig

from orchestrator import proc
from orchestrator.errors import BuildError, ConfigError, UserError
from orchestrator.data import KCONFIG_DIR

log = logging.getLogger(__name__)

DEFAULT_FRAGMENTS = ("base.config", "thp.config")
DEBIAN_PACKAGE = "linux-source-6.12"
# kernel-provided fragments merged after tinyconfig; not validated (they carry
# options for other architectures, e.g. S390_GUEST)
KERNEL_BASE_FRAGMENTS = ("kernel/configs/kvm_guest.config",)

Progress = Callable[[str], None]
OWNED_OBJ = ".thpvm-obj"
BUILD_TIMEOUT = 3 * 3600.0  # a hung make must not hang a bisect forever
CONFIG_TIMEOUT = 600.0
KERNEL_FILES = ("bzImage", "config", "System.map", "metadata.json")  # sealed in kernels/<key>


@dataclass(frozen=True)
class KernelTree:
    """A source tree to build and what identifies its content."""

    path: Path
    kind: str  # "debian-source" | "git" | "plain"
    identity: str
    revision: str | None
    slot: str  # names the persistent build directory


@dataclass
class KernelRequest:
    """What to build: a tree (None = Debian default), an optional git revision, fragments."""

    tree: Path | None = None
    rev: str | None = None
    fragments: list[Path] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    jobs: int | None = None
    patches: list[Path] = field(default_factory=list)


@dataclass
class KernelArtifacts:
    """A finished, cached kernel build."""

    key: str
    dir: Path
    tree: KernelTree
    cached: bool
    build_seconds: float
    metadata: dict[str, object]

    @property
    def bzimage(self) -> Path:
        return self.dir / "bzImage"

    @property
    def config(self) -> Path:
        return self.dir / "config"

    @property
    def headers(self) -> Path:
        """Directory holding `usr/include` from `make headers`."""
        return self.dir / "headers"

    @property
    def release(self) -> str:
        return str(self.metadata.get("kernel_release", ""))


# ---------------------------------------------------------------- trees

def default_tarball() -> Path:
    """The Debian linux-source tarball (THPVM_LINUX_SOURCE overrides)."""
    env = os.environ.get("THPVM_LINUX_SOURCE")
    return Path(env) if env else Path(f"/usr/src/{DEBIAN_PACKAGE}.tar.xz")


def default_tree() -> Path:
    """Extract the Debian linux-source tarball into the cache once; return the tree."""
    tarball = default_tarball()
    if not tarball.is_file():
        raise UserError(f"default kernel source {tarball} not found: run 'make setup' "
                        f"(installs {DEBIAN_PACKAGE}) or pass --tree PATH")
    st = tarball.stat()
    tag = cache.digest(str(tarball), str(st.st_size), str(st.st_mtime_ns), length=10)
    dest = cache.cache_dir("trees") / f"{tarball.name.split('.tar')[0]}-{tag}"
    if (dest / ".thpvm-complete").exists():
        return _single_subdir(dest)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("extracting %s into %s", tarball, dest)
    proc.run(["tar", "-xf", tarball, "-C", tmp], error=BuildError)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    (dest / ".thpvm-complete").write_text(f"{tarball}\n")
    return _single_subdir(dest)


def _single_subdir(path: Path) -> Path:
    subdirs = [p for p in path.iterdir() if p.is_dir()]
    return subdirs[0] if len(subdirs) == 1 else path


def resolve_tree(tree: Path | None, rev: str | None) -> KernelTree:
    """Turn --tree/--rev into a KernelTree (a checked-out scratch worktree for --rev)."""
    if tree is None:
        if rev:
            raise UserError("--rev needs --tree (the default Debian source is not a git tree)")
        path = default_tree()
        return KernelTree(path, "debian-source", f"debian:{path.parent.name}", None,
                          f"debian-{path.parent.name}")
    path = tree.expanduser().resolve()
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
    """A hard-linked copy of `base` in the cache with `patches` applied (`patch -p1`).

    `patch` replaces the files it changes, so the base tree is never modified.
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
        shutil.rmtree(tree / OWNED_OBJ, ignore_errors=True)
        for p in patches:
            res = proc.run(["patch", "-p1", "-N", "-s", "-d", tree, "-i", p.resolve()],
                           check=False, error=BuildError)
            if res.returncode != 0:
                shutil.rmtree(dest, ignore_errors=True)
                raise UserError(f"--patch {p} does not apply to {base.path}",
                                res.output.strip()[-2000:])
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
        _git(wt, "clean", "-fdxq", "-e", f"/{OWNED_OBJ}")
    return KernelTree(wt, "git", f"git:{commit}", commit, slot)


def _git(repo: Path, *args: str) -> str:
    return proc.run(["git", "-C", repo, *args], error=BuildError).output


def _stat_digest(path: Path) -> str:
    items: list[str] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            st = os.lstat(os.path.join(root, name))
            items.append(f"{root}/{name}:{st.st_size}:{st.st_mtime_ns}")
    return cache.digest("\n".join(items))


# ---------------------------------------------------------------- config

def default_fragment_paths() -> list[Path]:
    """The shipped fragments every build gets."""
    return [KCONFIG_DIR / name for name in DEFAULT_FRAGMENTS]


def load_fragments(extra: list[Path], configs: list[str]) -> list[kconfig.Fragment]:
    """Shipped fragments, then --fragment files, then --config one-offs."""
    frags = [kconfig.load_fragment(p) for p in default_fragment_paths() + list(extra)]
    if configs:
        frags.append(kconfig.fragment_from_options(configs))
    return frags


def make_config(tree: KernelTree, fragments: list[kconfig.Fragment], workdir: Path,
                log_path: Path) -> str:
    """tinyconfig + kvm_guest.config + fragments → merge_config.sh → olddefconfig.

    Runs in `workdir` (its own O= dir, so the real build dir is only touched when
    the result differs) and returns the final `.config` text after checking that
    every requested option survived.
    """
    requested = kconfig.merge_fragments(fragments)
    workdir.mkdir(parents=True, exist_ok=True)
    key = cache.digest(tree.identity, compiler_version(), *(f.text() for f in fragments))
    memo = workdir / f"final-{key}.config"
    if memo.exists():  # same tree and fragments: olddefconfig would give the same result
        return memo.read_text()
    merged = workdir / "thpvm-fragments.config"
    merged.write_text("".join(f.text() for f in fragments))
    make = ["make", "-C", str(tree.path), f"O={workdir}", "ARCH=x86_64"]
    proc.run([*make, "tinyconfig"], log_path=log_path, timeout=CONFIG_TIMEOUT, error=BuildError)
    bases = [str(tree.path / b) for b in KERNEL_BASE_FRAGMENTS if (tree.path / b).exists()]
    proc.run([str(tree.path / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(workdir),
              str(workdir / ".config"), *bases, str(merged)],
             cwd=tree.path, log_path=log_path, error=BuildError)
    proc.run([*make, "olddefconfig"], log_path=log_path, timeout=CONFIG_TIMEOUT,
             error=BuildError)
    text = (workdir / ".config").read_text()
    final = kconfig.parse_config_text(text, str(workdir / ".config"))
    dropped = kconfig.check_survival(requested, final, tree.path)
    if dropped:
        raise ConfigError(
            f"{len(dropped)} requested kconfig option(s) did not survive olddefconfig "
            "(probably due to unsatisfied dependencies):\n" + kconfig.format_dropped(dropped))
    memo.write_text(text)
    return text


# ---------------------------------------------------------------- build

def compiler_version() -> str:
    """First line of `gcc --version`."""
    return proc.run(["gcc", "--version"], error=BuildError).output.splitlines()[0]


def build_kernel(req: KernelRequest, progress: Progress | None = None) -> KernelArtifacts:
    """Build (or fetch from the cache) a kernel for `req`."""
    fragments = load_fragments(req.fragments, req.configs)  # bad input fails before any work
    tree = resolve_tree(req.tree, req.rev)
    if req.patches:
        tree = apply_patches(tree, req.patches)
    slot_dir = cache.cache_dir("build", tree.slot)
    with _locked(slot_dir / "lock"):
        log_path = slot_dir / "config.log"
        log_path.write_text("")
        config_text = make_config(tree, fragments, slot_dir / "config", log_path)
        gcc = compiler_version()
        key = cache.digest(tree.identity, config_text, gcc)
        art_dir = cache.cache_root() / "kernels" / key
        cached = _load_artifacts(key, art_dir, tree)
        if cached is not None:
            log.info("kernel cache hit: %s", art_dir)
            return cached
        return _build(tree, config_text, key, gcc, slot_dir, req.jobs, progress)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def obj_dir(tree: KernelTree, slot_dir: Path) -> Path:
    """Where make puts objects.

    For trees thpvm owns (under the cache: the extracted Debian source, scratch
    worktrees, patched copies) it is `<tree>/.thpvm-obj`: kbuild then uses the
    relative srctree `..`, so compiler command lines are identical across tree
    copies and ccache hits for every unchanged file (bisect, validate, patched
    kernels). A user's own tree is never written: its objects go to the cache.
    """
    if tree.path.is_relative_to(cache.cache_root()):
        return tree.path / OWNED_OBJ
    return slot_dir / "obj"


def _build(tree: KernelTree, config_text: str, key: str, gcc: str, slot_dir: Path,
           jobs: int | None, progress: Progress | None) -> KernelArtifacts:
    obj = obj_dir(tree, slot_dir)
    obj.mkdir(exist_ok=True)
    cfg = obj / ".config"
    if not cfg.exists() or cfg.read_text() != config_text:
        cfg.write_text(config_text)  # only a changed config touches the build dir
    build_log = slot_dir / "build.log"
    build_log.write_text("")
    make = ["make", "-C", str(tree.path), f"O={obj}", "ARCH=x86_64",
            f"-j{jobs or os.cpu_count() or 1}", "CC=ccache gcc", "HOSTCC=ccache gcc"]
    counter = _ProgressCounter(slot_dir / "objcount", progress)
    start = time.monotonic()
    try:
        proc.run([*make, "bzImage"], env=ccache_env(), log_path=build_log, timeout=BUILD_TIMEOUT,
                 on_line=counter.line, keep_output=False, error=BuildError)
        proc.run([*make, "headers"], env=ccache_env(), log_path=build_log, timeout=BUILD_TIMEOUT,
                 keep_output=False, error=BuildError)
    except BuildError as e:
        raise BuildError(f"kernel build failed (log: {build_log})",
                         first_errors(build_log) or e.detail) from e
    seconds = time.monotonic() - start
    counter.save()
    return _collect(tree, key, gcc, obj, build_log, seconds)


def ccache_env() -> dict[str, str]:
    """ccache settings: cache in the thpvm cache dir, paths relative to the build dir."""
    return {
        "CCACHE_DIR": str(cache.cache_dir("ccache")),
        "CCACHE_BASEDIR": "/",
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_COMPILERCHECK": "content",
        "CCACHE_MAXSIZE": os.environ.get("CCACHE_MAXSIZE", "5G"),
        "KBUILD_BUILD_USER": "thpvm",
        "KBUILD_BUILD_HOST": "thpvm",
    }


_ERROR_LINE = re.compile(r"(error:|Error \d|undefined reference|fatal error)", re.I)


def first_errors(log_path: Path, limit: int = 15) -> str:
    """The first compiler/make error lines of a build log, with one line of context."""
    lines = log_path.read_text(errors="replace").splitlines()
    picked: list[str] = []
    for i, line in enumerate(lines):
        if _ERROR_LINE.search(line):
            picked += lines[max(0, i - 1): i + 2]
        if len(picked) >= limit:
            break
    return "\n".join(dict.fromkeys(picked))[:4000]


class _ProgressCounter:
    """Turns kbuild's `  CC  path` lines into a moving progress line."""

    def __init__(self, store: Path, progress: Progress | None) -> None:
        self.store = store
        self.progress = progress
        self.count = 0
        self.total = int(store.read_text()) if store.exists() else 0

    def line(self, line: str) -> None:
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("CC", "AS", "LD", "AR", "OBJCOPY", "HOSTCC"):
            self.count += 1
            if self.progress:
                of = f"/~{self.total}" if self.total > self.count else ""
                self.progress(f"{parts[0]} {parts[-1]} [{self.count}{of}]")

    def save(self) -> None:
        if self.count > self.total:
            self.store.write_text(str(self.count))


def _collect(tree: KernelTree, key: str, gcc: str, obj: Path, build_log: Path,
             seconds: float) -> KernelArtifacts:
    final = cache.cache_root() / "kernels" / key
    tmp = final.with_name(key + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(obj / "arch/x86/boot/bzImage", tmp / "bzImage")
    shutil.copy2(obj / ".config", tmp / "config")
    shutil.copy2(obj / "System.map", tmp / "System.map")
    shutil.copy2(build_log, tmp / "build.log")
    shutil.copytree(obj / "usr" / "include", tmp / "headers" / "usr" / "include")
    release = (obj / "include/config/kernel.release").read_text().strip()
    meta: dict[str, object] = {
        "key": key, "tree": str(tree.path), "tree_kind": tree.kind,
        "tree_identity": tree.identity, "revision": tree.revision,
        "config_hash": cache.digest((obj / ".config").read_text()),
        "compiler": gcc, "kernel_release": release, "build_seconds": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ccache": ccache_stats(),
    }
    cache.write_json(tmp / "metadata.json", meta)
    cache.seal(tmp, KERNEL_FILES)  # last: the entry is complete
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    log.info("kernel %s built in %.0f s: %s", release, seconds, final)
    return KernelArtifacts(key, final, tree, False, seconds, meta)


def ccache_stats() -> dict[str, str]:
    """Hit/miss figures of the thpvm ccache (best effort)."""
    res = proc.run(["ccache", "--print-stats"], env=ccache_env(), check=False)
    stats = dict(line.split("\t", 1) for line in res.output.splitlines() if "\t" in line)
    return {k: v for k, v in stats.items()
            if k in ("direct_cache_hit", "preprocessed_cache_hit", "cache_miss")}


def _load_artifacts(key: str, art_dir: Path, tree: KernelTree) -> KernelArtifacts | None:
    """The cached build, or None (with a log line if an entry was there but bad)."""
    if not art_dir.exists():
        return None
    bad = cache.verify(art_dir)
    meta = cache.read_json_entry(art_dir / "metadata.json") if bad is None else None
    if meta is None:
        log.warning("kernel cache entry %s is bad (%s): rebuilding it", art_dir,
                    bad or "metadata.json is not a JSON object")
        return None
    return KernelArtifacts(key, art_dir, tree, True, 0.0, meta)


def describe(art: KernelArtifacts) -> dict[str, object]:
    """Metadata for a run's metadata.json."""
    return {**art.metadata, "cached": art.cached, "artifacts": str(art.dir),
            "tree": asdict(art.tree) | {"path": str(art.tree.path)}}
