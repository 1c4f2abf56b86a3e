"""kernel.py build logic against a FAKE kernel tree (tests/fakes/kernel-tree, tuxmake style).

The fake tree's Makefile imitates `tinyconfig`, `olddefconfig`, `bzImage` and
`headers` with `O=`, appends every target it runs to $FAKE_MAKE_LOG (a call
counter), fails on request ($FAKE_FAIL=TARGET) and drops options on request
($FAKE_DROP). Real make, sh, awk, gcc --version, ccache, git and patch run; no
compiler is invoked, so each test takes well under a second. THPVM_CACHE points
into tmp_path: the real cache is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.build import kernel, sources
from orchestrator.build.git import OWNED_OBJ
from orchestrator.errors import BuildError, ConfigError, UserError

FAKE_TREE = Path(__file__).resolve().parent.parent / "fakes" / "kernel-tree"
GIT = ["git", "-c", "user.name=thpvm test", "-c", "user.email=test@thpvm.invalid",
       "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_MAKE_LOG", str(tmp_path / "make-calls"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("FAKE_FAIL", "FAKE_DROP", "FAKE_RELEASE", "THPVM_LINUX_SOURCE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """A fresh copy of the fake kernel tree (a user's plain tree)."""
    dest = tmp_path / "linux"
    shutil.copytree(FAKE_TREE, dest)
    return dest


def calls(tmp_path: Path) -> list[str]:
    """Targets the fake Makefile (and merge_config.sh) ran, in order."""
    log = tmp_path / "make-calls"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def snapshot(tree: Path) -> dict[str, bytes]:
    """Every file of a tree (except .git) and its content."""
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(tree).parts}


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, text=True,
                          capture_output=True).stdout.strip()


# ---------------------------------------------------------------- the fake itself

def test_fake_tree_is_executable_and_complete() -> None:
    assert os.access(FAKE_TREE / "scripts/kconfig/merge_config.sh", os.X_OK)
    for rel in ("Makefile", "mm/khugepaged.c", "kernel/configs/kvm_guest.config", "Kconfig",
                "mm/Kconfig", "include/uapi/linux/mman.h"):
        assert (FAKE_TREE / rel).is_file(), rel


# ---------------------------------------------------------------- builds

def test_build_produces_artifacts_and_metadata(fake: Path, tmp_path: Path) -> None:
    before = snapshot(fake)
    lines: list[str] = []
    art = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1), lines.append)

    assert not art.cached
    assert art.dir == tmp_path / "cache" / "kernels" / art.key
    assert art.bzimage.read_text().startswith("FAKE bzImage 6.12.0-fake")
    assert (art.dir / "System.map").read_text().startswith("ffffffff81000000 T _text")
    assert "#define MADV_COLLAPSE" in (art.headers / "usr/include/linux/mman.h").read_text()
    assert "CC      mm/khugepaged.o" in (art.dir / "build.log").read_text()
    assert art.release == "6.12.0-fake"

    # the final config: tinyconfig + kvm_guest.config + the shipped fragments, normalised
    config = art.config.read_text()
    assert "CONFIG_64BIT=y" in config and "CONFIG_TRANSPARENT_HUGEPAGE=y" in config
    # fragments after kvm_guest.config win: it enables 9P, base.config turns it off
    assert "# CONFIG_IPV6 is not set" in config and "# CONFIG_9P_FS is not set" in config
    assert "CONFIG_9P_FS=y" not in config
    assert "CONFIG_S390_GUEST=y" in config  # kvm_guest.config is merged but not validated

    meta = json.loads((art.dir / "metadata.json").read_text())
    assert meta == art.metadata
    assert meta["key"] == art.key and meta["tree_kind"] == "plain"
    assert meta["tree"] == str(fake.resolve()) and meta["revision"] is None
    assert meta["kernel_release"] == "6.12.0-fake"
    assert meta["compiler"].startswith("gcc")
    assert len(meta["config_hash"]) == 16
    assert isinstance(meta["ccache"], dict)

    # progress turned kbuild lines into a counter
    assert any(line.startswith("CC mm/khugepaged.o [1") for line in lines)
    assert calls(tmp_path) == ["tinyconfig", "merge_config", "olddefconfig", "bzImage",
                               "headers"]
    # a user's tree is never written: objects live in the cache
    assert snapshot(fake) == before
    assert not (fake / ".config").exists() and not (fake / OWNED_OBJ).exists()
    assert list((tmp_path / "cache" / "build").glob("tree-*/v*/obj/arch/x86/boot/bzImage"))


def test_second_build_is_a_cache_hit_without_make_bzimage(fake: Path, tmp_path: Path) -> None:
    first = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    (tmp_path / "make-calls").unlink()
    second = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))

    assert second.cached and second.key == first.key and second.dir == first.dir
    assert second.metadata == first.metadata
    # nothing runs: neither the config step nor the build
    made = calls(tmp_path)
    assert "bzImage" not in made and "headers" not in made
    assert made == []  # the merged config is memoised per tree + fragments


def test_cache_hit_does_not_wait_for_the_slot_lock(fake: Path, tmp_path: Path) -> None:
    """Another configuration of the same tree being built holds the slot lock; a
    kernel that is already cached is returned without waiting for it."""
    import fcntl

    first = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    locks = list((tmp_path / "cache" / "build").glob("*/lock"))
    assert len(locks) == 1
    with open(locks[0], "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "another build" holds it
        second = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    assert second.cached and second.key == first.key


def test_two_variants_of_a_tree_build_at_once_in_their_own_object_dirs(
        fake: Path, tmp_path: Path) -> None:
    """A tree's plain and debug kernels have an object directory and a build lock each:
    one builds while the other's make holds its lock, and neither overwrites the
    other's objects."""
    import fcntl

    debug = tmp_path / "debug.config"
    debug.write_text("CONFIG_DEBUG_VM=y\n")
    plain = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    slot = next((tmp_path / "cache" / "build").glob("tree-*"))
    (plain_lock,) = slot.glob("lock-v*")
    with open(plain_lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the plain kernel's make runs
        dbg = kernel.build_kernel(kernel.KernelRequest(tree=fake, fragments=[debug], jobs=1))
    assert not dbg.cached and dbg.key != plain.key
    objs = sorted(slot.glob("v*/obj"))
    assert len(objs) == 2 and all((o / "arch/x86/boot/bzImage").is_file() for o in objs)
    assert "CONFIG_DEBUG_VM=y" in (objs[0] / ".config").read_text() + \
        (objs[1] / ".config").read_text()


@pytest.mark.parametrize("damage", ["truncate-bzImage", "corrupt-metadata", "no-seal",
                                    "metadata-not-object"])
def test_a_bad_cache_entry_is_rebuilt_with_a_log_line(
        fake: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 15 rows 8-9: a truncated artifact, a corrupt metadata.json or a missing seal
    is not a cache hit: the entry is rebuilt, with a warning naming what was wrong."""
    first = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    size = first.bzimage.stat().st_size
    if damage == "truncate-bzImage":
        with open(first.bzimage, "r+b") as fh:
            fh.truncate(size // 2)
    elif damage == "corrupt-metadata":
        (first.dir / "metadata.json").write_text('{"key": ')
    elif damage == "metadata-not-object":
        (first.dir / "metadata.json").write_text("[]")
    else:
        (first.dir / ".sha256").unlink()
    (tmp_path / "make-calls").unlink()
    second = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))

    assert not second.cached and second.dir == first.dir
    assert "bzImage" in calls(tmp_path)
    assert second.bzimage.stat().st_size == size
    assert second.metadata["kernel_release"] == first.metadata["kernel_release"]
    warned = [r.getMessage() for r in caplog.records if "rebuilding it" in r.getMessage()]
    assert len(warned) == 1 and str(first.dir) in warned[0], warned
    third = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    assert third.cached


def test_config_change_misses_the_cache(fake: Path, tmp_path: Path) -> None:
    first = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    (tmp_path / "make-calls").unlink()
    second = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1,
                                                      configs=["CONFIG_HZ_1000=y"]))
    assert not second.cached and second.key != first.key
    assert "bzImage" in calls(tmp_path)
    assert "CONFIG_HZ_1000=y" in second.config.read_text()
    assert "CONFIG_HZ_1000" not in first.config.read_text()
    assert first.bzimage.read_text() != second.bzimage.read_text()  # cksum of .config inside


def fake_gcc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """A `gcc` first on PATH that only answers --version (the fake tree compiles nothing)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    gcc = bindir / "gcc"
    gcc.write_text(f"#!/bin/sh\necho 'gcc (Debian {version}) {version}'\n")
    gcc.chmod(0o755)
    if not os.environ["PATH"].startswith(str(bindir)):
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_compiler_change_misses_the_cache(fake: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gcc(tmp_path, monkeypatch, "12.2.0")
    first = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    assert first.metadata["compiler"] == "gcc (Debian 12.2.0) 12.2.0"
    fake_gcc(tmp_path, monkeypatch, "13.1.0")
    second = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    assert not second.cached and second.key != first.key
    assert second.metadata["compiler"] == "gcc (Debian 13.1.0) 13.1.0"


# regression: the memoised olddefconfig result is keyed by the compiler too
def test_compiler_change_reruns_olddefconfig(fake: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gcc(tmp_path, monkeypatch, "12.2.0")
    kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    (tmp_path / "make-calls").unlink()
    fake_gcc(tmp_path, monkeypatch, "13.1.0")
    kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    assert "olddefconfig" in calls(tmp_path)


def test_dropped_option_is_not_memoised(fake: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DROP", "CONFIG_SWAP")
    for _ in range(2):
        with pytest.raises(ConfigError, match="CONFIG_SWAP=y"):
            kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    monkeypatch.delenv("FAKE_DROP")
    assert kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1)).bzimage.is_file()


def test_extra_fragment_file_is_merged(fake: Path, tmp_path: Path) -> None:
    frag = tmp_path / "extra.config"
    frag.write_text("# debugging\nCONFIG_DEBUG_VM=y\n")
    art = kernel.build_kernel(kernel.KernelRequest(tree=fake, fragments=[frag], jobs=1))
    assert "CONFIG_DEBUG_VM=y" in art.config.read_text()


def test_tree_content_change_misses_the_cache(fake: Path, tmp_path: Path) -> None:
    first = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    (fake / "mm/khugepaged.c").write_text("/* changed */\nint khugepaged_fake(void);\n")
    second = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    assert not second.cached and second.key != first.key


def test_failing_build_raises_build_error_with_compiler_line(
        fake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FAIL", "bzImage")
    with pytest.raises(BuildError) as info:
        kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    err = info.value
    build_log = next((tmp_path / "cache" / "build").glob("tree-*/v*/build.log"))
    assert str(build_log) in err.message
    assert "mm/khugepaged.c:12:3: error: expected ';' before '}' token" in err.detail
    assert "Error 1" in err.detail  # the make line that follows, as context
    assert "headers" not in calls(tmp_path)
    assert not list((tmp_path / "cache" / "kernels").glob("*/metadata.json"))
    # after the failure is fixed, the build succeeds (no stale partial state)
    monkeypatch.delenv("FAKE_FAIL")
    assert kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1)).bzimage.is_file()


def test_failing_config_step_is_a_build_error(
        fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FAIL", "olddefconfig")
    with pytest.raises(BuildError, match="olddefconfig") as info:
        kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    assert "target olddefconfig failed on request" in info.value.detail


def test_dropped_options_raise_config_error_listing_them(
        fake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DROP", "CONFIG_TRANSPARENT_HUGEPAGE CONFIG_THPVM_NO_SUCH")
    with pytest.raises(ConfigError) as info:
        kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1,
                                                 configs=["CONFIG_THPVM_NO_SUCH=y"]))
    msg = info.value.message
    assert "2 requested kconfig option(s) did not survive olddefconfig" in msg
    thp = next(line for line in msg.splitlines() if "CONFIG_TRANSPARENT_HUGEPAGE=" in line)
    assert "kconfigs/thp.config" in thp and "ended up n" in thp
    assert "depends on HAVE_ARCH_TRANSPARENT_HUGEPAGE && !PREEMPT_RT" in thp
    unknown = next(line for line in msg.splitlines() if "CONFIG_THPVM_NO_SUCH" in line)
    assert "(from --config)" in unknown and "unknown symbol" in unknown
    assert "bzImage" not in calls(tmp_path)
    assert info.value.exit_code == 2


def test_conflicting_config_is_a_config_error(fake: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"CONFIG_SWAP: y in .*thp.config but n in --config"):
        kernel.build_kernel(kernel.KernelRequest(tree=fake, configs=["# CONFIG_SWAP is not set"]))
    assert calls(tmp_path) == []  # rejected before make runs


def test_missing_fragment_names_the_file(fake: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing.config"):
        kernel.build_kernel(kernel.KernelRequest(tree=fake,
                                                 fragments=[tmp_path / "missing.config"]))


def test_not_a_kernel_tree(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a Linux kernel source tree"):
        sources.resolve_tree(tmp_path / "empty", None)


def test_rev_needs_a_tree_and_a_git_tree(fake: Path) -> None:
    with pytest.raises(UserError, match="--rev needs a git --tree"):
        sources.resolve_tree(None, "HEAD")
    with pytest.raises(UserError, match="not a git tree"):
        sources.resolve_tree(fake, "HEAD")


def test_default_tree_missing_tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THPVM_LINUX_SOURCE", str(tmp_path / "nope.tar.xz"))
    with pytest.raises(UserError, match="nope.tar.xz not found"):
        sources.resolve_tree(None, None)


def test_plain_tree_identity_follows_content(fake: Path) -> None:
    a = sources.resolve_tree(fake, None)
    assert a.kind == "plain" and a.identity == sources.resolve_tree(fake, None).identity
    (fake / "mm" / "new.c").write_text("int x;\n")
    assert sources.resolve_tree(fake, None).identity != a.identity
    assert sources.resolve_tree(fake, None).slot == a.slot  # same build directory


def test_first_errors_picks_error_lines_with_context(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("  CC      mm/a.o\n  CC      mm/khugepaged.o\n"
                   "mm/khugepaged.c: In function 'f':\n"
                   "mm/khugepaged.c:12:3: error: expected ';'\n   12 | x\n"
                   "  CC      mm/b.o\nld: vmlinux.o: undefined reference to `foo'\n")
    out = kernel.first_errors(log).splitlines()
    assert out == ["mm/khugepaged.c: In function 'f':", "mm/khugepaged.c:12:3: error: expected ';'",
                   "   12 | x", "  CC      mm/b.o", "ld: vmlinux.o: undefined reference to `foo'"]


# ---------------------------------------------------------------- git trees and --rev

@pytest.fixture
def repo(fake: Path) -> tuple[Path, list[str]]:
    """The fake tree as a git repo with two commits, then a modified and an untracked file."""
    git(fake, "init", "-q")
    git(fake, "add", "-A")
    git(fake, "commit", "-q", "-m", "v1")
    first = git(fake, "rev-parse", "HEAD")
    (fake / "mm/khugepaged.c").write_text("/* v2 */\nint khugepaged_fake(void) { return 2; }\n")
    git(fake, "commit", "-q", "-am", "v2")
    second = git(fake, "rev-parse", "HEAD")
    (fake / "mm/khugepaged.c").write_text("/* local edit */\n")
    (fake / "untracked.txt").write_text("mine\n")
    return fake, [first, second]


def test_rev_checks_out_into_the_cache_leaving_the_checkout_alone(
        repo: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, (first, second) = repo
    status = git(path, "status", "--porcelain")
    files = snapshot(path)

    tree = sources.resolve_tree(path, "HEAD~1")
    assert tree.kind == "git" and tree.revision == first and tree.identity == f"git:{first}"
    assert tree.path.is_relative_to(tmp_path / "cache" / "worktrees")
    assert "v2" not in (tree.path / "mm/khugepaged.c").read_text()
    assert (tree.path / "mm/khugepaged.c").read_text().startswith("// SPDX")
    assert not (tree.path / "untracked.txt").exists()

    # the same slot is reused for another revision, and cleaned
    (tree.path / "stray.o").write_text("x")
    again = sources.resolve_tree(path, second)
    assert again.path == tree.path and again.revision == second
    assert "v2" in (again.path / "mm/khugepaged.c").read_text()
    assert not (again.path / "stray.o").exists()

    # the user's checkout: HEAD, the modified file, the untracked file, the index
    assert git(path, "rev-parse", "HEAD") == second
    assert git(path, "status", "--porcelain") == status
    assert snapshot(path) == files
    assert (path / "mm/khugepaged.c").read_text() == "/* local edit */\n"
    assert (path / "untracked.txt").read_text() == "mine\n"


def test_bad_rev_is_a_user_error(repo: tuple[Path, list[str]]) -> None:
    path, _ = repo
    with pytest.raises(UserError, match="--rev no-such-rev: not a commit"):
        sources.resolve_tree(path, "no-such-rev")


def test_dirty_git_tree_identity(repo: tuple[Path, list[str]]) -> None:
    path, (_, second) = repo
    dirty = sources.resolve_tree(path, None)
    assert dirty.kind == "git" and dirty.revision == f"{second}-dirty"
    assert dirty.identity.startswith(f"git:{second}:")
    git(path, "checkout", "-q", "--", "mm/khugepaged.c")
    clean = sources.resolve_tree(path, None)
    # an untracked file does not make the tree dirty
    assert clean.revision == second and clean.identity == f"git:{second}"


def test_build_of_a_rev_records_the_revision(repo: tuple[Path, list[str]],
                                             tmp_path: Path) -> None:
    path, (first, _) = repo
    files, status = snapshot(path), git(path, "status", "--porcelain")
    art = kernel.build_kernel(kernel.KernelRequest(tree=path, rev=first, jobs=1))
    assert art.metadata["revision"] == first and art.metadata["tree_kind"] == "git"
    # an owned (cache) tree builds in <tree>/.thpvm-obj-<variant>
    (obj,) = art.tree.path.glob(OWNED_OBJ + "-v*")
    assert (obj / "arch/x86/boot/bzImage").is_file()
    assert snapshot(path) == files
    assert git(path, "status", "--porcelain") == status


# ---------------------------------------------------------------- patches

GOOD_PATCH = """\
--- a/mm/khugepaged.c
+++ b/mm/khugepaged.c
@@ -2,5 +2,5 @@
 /* fake mm/khugepaged.c: thpvm's resolve_tree looks for this file */
 int khugepaged_fake(void)
 {
-\treturn 0;
+\treturn 1;
 }
"""

BAD_PATCH = """\
--- a/mm/khugepaged.c
+++ b/mm/khugepaged.c
@@ -2,5 +2,5 @@
 /* this context is not in the file */
 int something_else(void)
 {
-\treturn 42;
+\treturn 43;
 }
"""


def test_apply_good_patch_leaves_base_untouched(fake: Path, tmp_path: Path) -> None:
    patch = tmp_path / "good.patch"
    patch.write_text(GOOD_PATCH)
    base = sources.resolve_tree(fake, None)
    original = (fake / "mm/khugepaged.c").read_text()

    patched = sources.apply_patches(base, [patch])
    assert "\treturn 1;" in (patched.path / "mm/khugepaged.c").read_text()
    assert (fake / "mm/khugepaged.c").read_text() == original
    assert patched.path.is_relative_to(tmp_path / "cache" / "trees")
    assert patched.identity.startswith(base.identity + "+patches:")
    assert patched.kind == base.kind
    # applied once: a second call reuses the patched copy
    assert sources.apply_patches(base, [patch]) == patched


def test_apply_bad_patch_names_the_patch(fake: Path, tmp_path: Path) -> None:
    patch = tmp_path / "bad.patch"
    patch.write_text(BAD_PATCH)
    base = sources.resolve_tree(fake, None)
    with pytest.raises(UserError, match=r"--patch .*bad.patch does not apply") as info:
        kernel.apply_patches(base, [patch])
    assert "patch failed: mm/khugepaged.c:2" in info.value.message  # the failing hunk
    assert not list((tmp_path / "cache" / "trees").glob("patched-*"))  # no half state
    assert "return 0" in (fake / "mm/khugepaged.c").read_text()


def test_missing_patch_is_a_user_error(fake: Path, tmp_path: Path) -> None:
    base = sources.resolve_tree(fake, None)
    with pytest.raises(UserError, match="nope.patch"):
        sources.apply_patches(base, [tmp_path / "nope.patch"])


def test_build_with_patch(fake: Path, tmp_path: Path) -> None:
    patch = tmp_path / "good.patch"
    patch.write_text(GOOD_PATCH)
    plain = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    patched = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1, patches=[patch]))
    assert patched.key != plain.key and not patched.cached
    assert "+patches:" in str(patched.metadata["tree_identity"])


def test_user_tree_with_an_in_tree_build_is_a_user_error(fake: Path) -> None:
    """O= builds are impossible once a tree has its own .config: say so, exit 2."""
    (fake / ".config").write_text("CONFIG_X=y\n")
    with pytest.raises(UserError) as exc:
        sources.resolve_tree(fake, None)
    assert str(fake) in exc.value.message and "--rev HEAD" in exc.value.message


def _set_version(tree: Path, major: int, minor: int) -> None:
    mk = tree / "Makefile"
    mk.write_text(f"VERSION = {major}\nPATCHLEVEL = {minor}\nSUBLEVEL = 13\n" + mk.read_text())


def test_tree_version_from_the_top_makefile(fake: Path) -> None:
    assert sources.tree_version(fake) is None  # the fake has no VERSION lines
    _set_version(fake, 7, 2)
    assert sources.resolve_tree(fake, None).version == (7, 2)


def test_option_for_older_versions_only_is_not_requested_on_a_newer_tree(
        fake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 7.2 removed READ_ONLY_THP_FOR_FS: olddefconfig drops it, and thp.config says
    # '# until: 7.1', so a 7.2 tree builds; the 7.2-only XFS options are requested
    monkeypatch.setenv("FAKE_DROP", "CONFIG_READ_ONLY_THP_FOR_FS")
    _set_version(fake, 7, 2)
    art = kernel.build_kernel(kernel.KernelRequest(tree=fake, jobs=1))
    assert "CONFIG_XFS_FS=y" in art.config.read_text()
    older = tmp_path / "older"
    shutil.copytree(FAKE_TREE, older)
    _set_version(older, 6, 12)
    with pytest.raises(ConfigError, match="CONFIG_READ_ONLY_THP_FOR_FS=y"):
        kernel.build_kernel(kernel.KernelRequest(tree=older, jobs=1))
