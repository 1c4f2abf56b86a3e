"""Out-of-tree kernel builds, cached by content (trees come from build/sources.py).

Builds run in a persistent object directory per tree location and build variant (the
requested fragments), so make is incremental (a bisect step recompiles only what
changed; switching between a tree's plain and debug kernels rebuilds nothing) and two
variants of one tree build at once; with ccache. Finished artifacts are copied to
`kernels/<key>/`, where the key is the tree identity + the merged config + the compiler
version. A key hit skips make.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator import cache, proc
from orchestrator.build import kconfig
from orchestrator.build.git import OWNED_OBJ
from orchestrator.build.sources import KernelTree, apply_patches, resolve_tree
from orchestrator.data import KCONFIG_DIR
from orchestrator.errors import BuildError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_FRAGMENTS = ("base.config", "thp.config")
# kernel-provided fragments merged after tinyconfig; not validated (they carry
# options for other architectures, e.g. S390_GUEST)
KERNEL_BASE_FRAGMENTS = ("kernel/configs/kvm_guest.config",)

BuildProgress = Callable[[str], None]
BUILD_TIMEOUT = 3 * 3600.0  # a hung make must not hang a bisect forever
CONFIG_TIMEOUT = 600.0
KERNEL_FILES = ("bzImage", "config", "System.map", "metadata.json")  # sealed in kernels/<key>


@dataclass
class KernelRequest:
    """What to build: a tree (None = debian:6.12), an optional git revision, fragments."""

    tree: Path | str | None = None
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
    every requested option survived. Options annotated for other kernel
    versions than the tree's are left out before merging.
    """
    fragments = [f.for_version(tree.version) for f in fragments]
    requested = kconfig.merge_fragments(fragments)
    workdir.mkdir(parents=True, exist_ok=True)
    memo = _config_memo(tree, fragments, workdir)
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


def build_kernel(req: KernelRequest, progress: BuildProgress | None = None) -> KernelArtifacts:
    """Build (or fetch from the cache) a kernel for `req`."""
    fragments = load_fragments(req.fragments, req.configs)  # bad input fails before any work
    tree = resolve_tree(req.tree, req.rev)
    if req.patches:
        tree = apply_patches(tree, req.patches)
    slot_dir = cache.cache_dir("build", tree.slot)
    hit = _cache_hit_without_lock(tree, fragments, slot_dir)
    if hit is not None:
        return hit
    with cache.locked(slot_dir / "lock"):  # the tree's config work directory
        log_path = slot_dir / "config.log"
        log_path.write_text("")
        config_text = make_config(tree, fragments, slot_dir / "config", log_path)
    gcc = compiler_version()
    key = cache.digest(tree.identity, config_text, gcc)
    art_dir = cache.cache_root() / "kernels" / key
    variant = build_variant(tree, fragments)
    with cache.locked(slot_dir / f"lock-{variant}"):  # one make per object directory
        cached = _load_artifacts(key, art_dir, tree)
        if cached is not None:
            log.info("kernel cache hit: %s", art_dir)
            return cached
        return _build(tree, config_text, key, gcc, slot_dir / variant, req.jobs, progress)


def build_variant(tree: KernelTree, fragments: list[kconfig.Fragment]) -> str:
    """Names a build's object directory: the fragments as they apply to this tree's
    version. A bisect's commits share one (its steps stay incremental); a tree's plain
    and debug kernels have one each."""
    return "v" + cache.digest(*(f.for_version(tree.version).text() for f in fragments))[:10]


def _config_memo(tree: KernelTree, fragments: list[kconfig.Fragment], workdir: Path) -> Path:
    """Where make_config keeps the final .config of (tree, compiler, fragments)."""
    key = cache.digest(tree.identity, compiler_version(), *(f.text() for f in fragments))
    return workdir / f"final-{key}.config"


def _cache_hit_without_lock(tree: KernelTree, fragments: list[kconfig.Fragment],
                            slot_dir: Path) -> KernelArtifacts | None:
    """A cached kernel needs no slot lock: the remembered final .config names its
    key, and a finished build's directory appears by an atomic rename. So a run
    whose kernel is cached does not wait behind another configuration of the same
    tree being built (on a shared host that build can take half an hour)."""
    applicable = [f.for_version(tree.version) for f in fragments]  # as make_config keys it
    memo = _config_memo(tree, applicable, slot_dir / "config")
    try:
        config_text = memo.read_text()
    except OSError:
        return None
    key = cache.digest(tree.identity, config_text, compiler_version())
    art_dir = cache.cache_root() / "kernels" / key
    if cache.verify(art_dir) is not None:  # absent or bad: the locked path rebuilds it
        return None
    log.info("kernel cache hit (no lock needed): %s", art_dir)
    return _load_artifacts(key, art_dir, tree)


def obj_dir(tree: KernelTree, variant_dir: Path) -> Path:
    """Where make puts the objects of one build variant (`variant_dir` is
    `build/<slot>/<variant>` in the cache).

    For trees thpvm owns (under the cache: the extracted Debian source, scratch
    worktrees, patched copies) it is `<tree>/.thpvm-obj-<variant>`: a direct child,
    so kbuild uses the relative srctree `..`, compiler command lines are identical
    across tree copies and ccache hits for every unchanged file (bisect, validate,
    patched kernels). A user's own tree is never written: its objects go to the cache.
    """
    if tree.path.is_relative_to(cache.cache_root()):
        return tree.path / f"{OWNED_OBJ}-{variant_dir.name}"
    return variant_dir / "obj"


def _build(tree: KernelTree, config_text: str, key: str, gcc: str, variant_dir: Path,
           jobs: int | None, progress: BuildProgress | None) -> KernelArtifacts:
    variant_dir.mkdir(exist_ok=True)
    obj = obj_dir(tree, variant_dir)
    obj.mkdir(parents=True, exist_ok=True)
    cfg = obj / ".config"
    if not cfg.exists() or cfg.read_text() != config_text:
        cfg.write_text(config_text)  # only a changed config touches the build dir
    build_log = variant_dir / "build.log"
    build_log.write_text("")
    make = ["make", "-C", str(tree.path), f"O={obj}", "ARCH=x86_64",
            f"-j{jobs or os.cpu_count() or 1}", "CC=ccache gcc", "HOSTCC=ccache gcc"]
    counter = _ProgressCounter(variant_dir / "objcount", progress)
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

    def __init__(self, store: Path, progress: BuildProgress | None) -> None:
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
