"""The kernel's khugepaged selftest: build it from the tree, run its matrix, parse.

The binary is built statically on the host through the tree's own selftest
Makefile, against the kernel build's `make headers` output, in a scratch copy
of `tools/` (the Makefile writes generated headers into its source directory,
and a user's tree is never dirtied). It is cached beside the kernel artifacts.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator import cache, proc
from orchestrator.build.kernel import KernelArtifacts
from orchestrator.data import SELFTEST_MATRIX
from orchestrator.errors import BuildError, GuestError, UserError
from orchestrator.machine.guest import GuestShell
from orchestrator.suites import counters
from orchestrator.suites.selftest.output import SelftestRun

log = logging.getLogger(__name__)

MATRIX_FILE = SELFTEST_MATRIX
GUEST_BIN = "/root/khugepaged"
GUEST_FILEDIR = "/root/thpvm-file-thp"
# the XFS loop mount of 7.2's run_vmtests.sh (`khugepaged all:file $XFS_PATH`): same size
GUEST_XFS_IMAGE = "/tmp/thpvm-xfs.img"
GUEST_XFSDIR = "/tmp/thpvm-xfs"
XFS_IMAGE_BYTES = 314572800
RUN_TIMEOUT = 900.0
MOUNT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Interface:
    """What the tree's selftest understands."""

    subdir: str  # "mm" (6.3+) or "vm" (6.1/6.2)
    features: frozenset[str]


@dataclass(frozen=True)
class KnownRace:
    """A race in the selftest itself (not the kernel), documented in the matrix file:
    when an invocation's only failed case is one of `cases` in `context` (any context
    for "*"), the output has `message` and the case's failed step starts with `step`,
    the invocation is run again, up to `attempts` times in all."""

    id: str
    cases: frozenset[str]
    context: str
    message: str  # in the output ("" = any), or
    attempts: int
    why: str
    needs: tuple[str, ...] = ()
    step: str = ""  # the failed step's message starts with this ("" = any)


@dataclass(frozen=True)
class Invocation:
    """One run of the selftest binary, with the known races of this tree's selftest."""

    id: str
    args: tuple[str, ...]
    needs: tuple[str, ...] = ()
    races: tuple[KnownRace, ...] = ()


@dataclass
class InvocationOutcome:
    """What one invocation produced (raw; parsed by selftest_output)."""

    invocation: Invocation
    argv: list[str]
    exit_code: int | None
    output: str
    duration: float
    before: counters.Snapshot | None = None
    after: counters.Snapshot | None = None
    error: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def detect_interface(tree: Path, kernel_config: str | None = None) -> Interface:
    """Find the selftest and the interface it offers; a tree without one is a UserError.

    With the kernel's final `.config` text, `xfs` is a feature when the kernel can
    loop-mount XFS (the file cases of 7.2's runner)."""
    for subdir in ("mm", "vm"):
        src = tree / "tools/testing/selftests" / subdir / "khugepaged.c"
        if src.is_file():
            text = src.read_text(errors="replace")
            feats = set()
            if "parse_test_type" in text:
                feats.add("ctx-mem")
            if "case 's'" in text:
                feats.add("order")
            scan = _function_body(text, "wait_for_scan")
            if scan and "MADV_NOHUGEPAGE" not in scan:
                feats.add("scan-leaves-hugepage")
            if kernel_config and all(f"\n{o}=y" in "\n" + kernel_config
                                     for o in ("CONFIG_XFS_FS", "CONFIG_BLK_DEV_LOOP")):
                feats.add("xfs")
            return Interface(subdir, frozenset(feats))
    raise UserError(f"{tree}: no tools/testing/selftests/{{mm,vm}}/khugepaged.c "
                    "(tree too old or too new for thpvm's selftest support)")


def _function_body(source: str, name: str) -> str:
    """The text of C function `name` in `source` (from its name to the next line that
    is a lone closing brace), or "" when it is not there."""
    m = re.search(rf"^\w[^\n;]*\b{name}\(.*?^}}", source, re.M | re.S)
    return m.group(0) if m else ""


def load_matrix(path: Path = MATRIX_FILE) -> list[Invocation]:
    """The invocation matrix from its TOML file; each invocation carries every known race
    (`select` keeps those whose `needs` the tree's selftest has)."""
    try:
        data = tomllib.loads(path.read_text())
        races = tuple(KnownRace(str(r["id"]), frozenset(r["cases"]), str(r["context"]),
                                str(r.get("message", "")), int(r["attempts"]), str(r["why"]),
                                tuple(r.get("needs", ())), str(r.get("step", "")))
                      for r in data.get("known_race", []))
        return [Invocation(str(i["id"]), tuple(i.get("args", ())), tuple(i.get("needs", ())),
                           races) for i in data["invocation"]]
    except (OSError, KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"selftest matrix {path}: {e}") from e


_RUNNER_LINE = re.compile(r'CATEGORY="thp"\s+run_test\s+\./khugepaged\b([^\n#]*)')
# run_vmtests.sh's XFS loop mount directory, which thpvm creates itself
_RUNNER_XFS = re.compile(r"^\$\{?SPLIT_HUGE_PAGE_TEST_XFS_PATH\}?$")


def runner_args(tree: Path, iface: Interface) -> list[tuple[str, ...]] | None:
    """Argument lists the tree's run_vmtests.sh uses for khugepaged (None: no runner)."""
    script = tree / "tools/testing/selftests" / iface.subdir / "run_vmtests.sh"
    if not script.is_file():
        return None
    found = [tuple("{xfsdir}" if _RUNNER_XFS.match(a) else a for a in shlex.split(m.group(1)))
             for m in _RUNNER_LINE.finditer(script.read_text())]
    return found or None


def default_ids(matrix: list[Invocation], tree: Path, iface: Interface) -> list[str]:
    """The invocations the tree's own runner runs (all anon-only ones if it has none)."""
    wanted = runner_args(tree, iface)
    if wanted is None:
        return [i.id for i in matrix if not any(":" in a for a in i.args)]  # anon only
    return [i.id for i in matrix if i.args in wanted]


def check_ids(matrix: list[Invocation], ids: list[str]) -> None:
    """UserError naming every id that is not in the matrix."""
    known = {i.id for i in matrix}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise UserError(f"unknown selftest invocation(s) {unknown}; known: {sorted(known)}")


def select(matrix: list[Invocation], iface: Interface, ids: list[str] | None) -> list[Invocation]:
    """Invocations the tree supports, optionally narrowed to `ids` (unknown id: UserError)."""
    if ids:
        check_ids(matrix, ids)
        matrix = [i for i in matrix if i.id in ids]
    chosen = [i for i in matrix if set(i.needs) <= iface.features]
    for i in matrix:
        if i not in chosen:
            log.info("selftest %s skipped: this tree's selftest lacks %s", i.id,
                     sorted(set(i.needs) - iface.features))
    return [replace(i, races=tuple(r for r in i.races if set(r.needs) <= iface.features))
            for i in chosen]


def known_race(inv: Invocation, parsed: SelftestRun, output: str) -> KnownRace | None:
    """The known race a failed invocation shows, if any: its only failed case is one of
    the race's cases in the race's context, and the output has the race's message."""
    failed = [c for c in parsed.cases if c.status in ("fail", "crash")]
    if parsed.status != "fail" or len(failed) != 1:
        return None
    case = failed[0]
    failed_steps = [s.message for s in case.steps if s.outcome != "ok"]
    for race in inv.races:
        if case.name in race.cases and race.context in ("*", case.context) \
                and race.message in output \
                and (not race.step or any(m.startswith(race.step) for m in failed_steps)):
            return race
    return None


def build_selftest(art: KernelArtifacts) -> Path:
    """Build (or reuse) the static khugepaged binary for a kernel build. One builder per
    kernel: parallel runs of the same kernel (a matrix with --jobs N) wait and reuse it."""
    out = art.dir / "selftest"
    if cache.verify(out) is None:
        return out / "khugepaged"
    with cache.locked(cache.cache_dir("build") / f"selftest-{art.key}.lock"):
        bad = cache.verify(out)
        if bad is not None:
            if out.exists():
                log.warning("selftest cache entry is bad (%s): rebuilding it", bad)
            _build_selftest(art, out)
    return out / "khugepaged"


def _build_selftest(art: KernelArtifacts, out: Path) -> None:
    tree = art.tree.path
    iface = detect_interface(tree)
    scratch = art.dir / "selftest-src"
    shutil.rmtree(scratch, ignore_errors=True)
    _scratch_tree(tree, scratch)
    tmp_out = art.dir / "selftest.partial"
    shutil.rmtree(tmp_out, ignore_errors=True)
    tmp_out.mkdir()
    sdir = scratch / "tools/testing/selftests" / iface.subdir
    kselftest_h = scratch / "tools/testing/selftests/kselftest.h"
    proc.run(["make", "-C", sdir, f"OUTPUT={tmp_out}",
              f"KHDR_INCLUDES=-isystem {art.headers / 'usr/include'}",
              # -include: some stable trees use KSFT_SKIP without including kselftest.h;
              # it then comes before the test's own `#define _GNU_SOURCE`, so define that
              # first, as the test does (empty: no redefinition warning), or 6.1's mremap()
              # and memfd_create() are undeclared
              f"EXTRA_CFLAGS=-static -D_GNU_SOURCE= -include {kselftest_h}",
              f"{tmp_out}/khugepaged"],
             log_path=art.dir / "selftest-build.log", error=BuildError)
    cache.seal(tmp_out, ["khugepaged"])
    shutil.rmtree(out, ignore_errors=True)
    tmp_out.rename(out)
    shutil.rmtree(scratch, ignore_errors=True)


def _scratch_tree(tree: Path, scratch: Path) -> None:
    """`tools/` hard-linked (cheap, and new files land only in the copy), the rest symlinked."""
    scratch.mkdir(parents=True)
    proc.run(["cp", "-al", tree / "tools", scratch / "tools"], error=BuildError)
    for entry in tree.iterdir():
        if entry.name not in ("tools", ".git"):
            os.symlink(entry, scratch / entry.name)


def prepare_guest(shell: GuestShell, binary: Path,
                  invocations: list[Invocation] | None = None) -> None:
    """Upload the binary, create the directory for the file memory type and, when an
    invocation needs it, the XFS loop mount (as 7.2's run_vmtests.sh makes it)."""
    shell.put(binary, GUEST_BIN)
    res = shell.run(f"mkdir -p {GUEST_FILEDIR}", timeout=30)
    if not res.ok:
        raise GuestError(f"could not create {GUEST_FILEDIR} in the guest: {res.stderr}")
    if any("{xfsdir}" in a for inv in invocations or [] for a in inv.args):
        mount_xfs(shell)


def mount_xfs(shell: GuestShell) -> None:
    """A fresh XFS file system on a loop device at GUEST_XFSDIR (idempotent)."""
    cmd = (f"if ! mountpoint -q {GUEST_XFSDIR}; then "
           f"rm -f {GUEST_XFS_IMAGE} && truncate -s {XFS_IMAGE_BYTES} {GUEST_XFS_IMAGE} && "
           f"mkfs.xfs -q {GUEST_XFS_IMAGE} && mkdir -p {GUEST_XFSDIR} && "
           f"mount -o loop {GUEST_XFS_IMAGE} {GUEST_XFSDIR}; fi")
    res = shell.run(cmd, timeout=MOUNT_TIMEOUT)
    if not res.ok:
        raise GuestError(f"could not loop-mount XFS at {GUEST_XFSDIR} in the guest "
                         "(needs CONFIG_XFS_FS, CONFIG_BLK_DEV_LOOP and xfsprogs in the image)",
                         (res.stdout + res.stderr).strip()[-2000:])


def guest_argv(inv: Invocation) -> list[str]:
    """The command line of an invocation in the guest."""
    return ["./khugepaged", *(a.replace("{filedir}", GUEST_FILEDIR)
                              .replace("{xfsdir}", GUEST_XFSDIR) for a in inv.args)]


def run_invocation(shell: GuestShell, inv: Invocation,
                   before: counters.Snapshot | None = None) -> InvocationOutcome:
    """Run one invocation with counter snapshots around it. `before` may be a snapshot
    just taken (the previous invocation's `after`), saving a guest command."""
    argv = guest_argv(inv)
    if before is None:
        before = counters.snapshot(shell)
    start = time.monotonic()
    log.info("selftest %s: running %s", inv.id, shlex.join(argv))
    res = shell.run(f"cd /root && {shlex.join(argv)} 2>&1", timeout=RUN_TIMEOUT)
    duration = time.monotonic() - start
    after = counters.snapshot(shell)
    log.info("selftest %s: exit %d in %.1f s", inv.id, res.exit_code, duration)
    return InvocationOutcome(inv, argv, res.exit_code, res.stdout, duration, before, after)
