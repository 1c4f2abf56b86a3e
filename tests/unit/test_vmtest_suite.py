"""vmtest.parse_suite and the selftest invocation choice (selftest.detect_interface,
runner_args, default_ids, select, load_matrix) on small fake selftest trees."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.jobs import vmtest
from orchestrator.jobs.vmtest import Suite, parse_suite
from orchestrator.machine.guest import CommandResult
from orchestrator.suites.selftest import runner as selftest
from orchestrator.suites.selftest.runner import Interface, Invocation

# ---------------------------------------------------------------- parse_suite


@pytest.mark.parametrize("items, want", [
    ([], Suite(None, None)),
    (["selftest"], Suite("default", None)),
    (["selftest-full"], Suite("full", None)),
    (["selftest:anon"], Suite(["anon"], None)),
    (["selftest:anon+anon-s2"], Suite(["anon", "anon-s2"], None)),
    (["selftest:anon", "selftest:shmem"], Suite(["anon", "shmem"], None)),
    (["workloads"], Suite(None, "builtin")),
    (["workloads:collapse-basic"], Suite(None, ["collapse-basic"])),
    (["workloads:a+b", "workloads:c"], Suite(None, ["a", "b", "c"])),
    (["all"], Suite("default", "builtin")),
    (["selftest", "workloads"], Suite("default", "builtin")),
    (["selftest,workloads"], Suite("default", "builtin")),
    ([" selftest-full , workloads:a "], Suite("full", ["a"])),
    (["selftest:anon", "workloads"], Suite(["anon"], "builtin")),
    (["", ","], Suite(None, None)),
    (["selftest:anon", "selftest"], Suite("default", None)),  # the later value wins
    (["selftest", "selftest:anon"], Suite(["anon"], None)),
])
def test_parse_suite_accepted_forms(items: list[str], want: Suite) -> None:
    assert parse_suite(items) == want


@pytest.mark.parametrize("bad", ["selftests", "workload", "bogus", "selftest-fast",
                                 "workload:a", "ALL", "st:anon"])
def test_parse_suite_bad_value(bad: str) -> None:
    with pytest.raises(UserError) as info:
        parse_suite(["selftest", bad])
    assert info.value.message.startswith(f"--suite {bad}: expected selftest, selftest-full")
    assert info.value.exit_code == 2


@pytest.mark.parametrize("bad", ["all:shmem", "selftest-full:anon"])
def test_parse_suite_rejects_suffix_on_all_and_full(bad: str) -> None:
    with pytest.raises(UserError, match=f"--suite {bad}"):
        parse_suite([bad])


def test_default_request_suite_is_selftest_and_workloads() -> None:
    assert parse_suite(vmtest.VmTestRequest().suite) == Suite("default", "builtin")


# ---------------------------------------------------------------- fake selftest trees

KHUGEPAGED_612 = """\
// SPDX-License-Identifier: GPL-2.0
#define _GNU_SOURCE
#include "vm_util.h"

static void usage(void)
{
\tfprintf(stderr, "\\nUsage: ./khugepaged [OPTIONS] <test type> [dir]\\n\\n");
}

static void parse_test_type(int argc, char **argv)
{
\tint opt;
\twhile ((opt = getopt(argc, argv, "s:")) != -1) {
\t\tswitch (opt) {
\t\tcase 's':
\t\t\thpage_pmd_order = atoi(optarg);
\t\t\tbreak;
\t\tdefault:
\t\t\tusage();
\t\t}
\t}
}

int main(int argc, char **argv)
{
\tparse_test_type(argc, argv);
\treturn 0;
}
"""

RUN_VMTESTS_612 = """\
#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Please run as root

CATEGORY="hugetlb" run_test ./hugepage-mmap
CATEGORY="thp" run_test ./khugepaged
CATEGORY="thp" run_test ./khugepaged -s 2
CATEGORY="thp" run_test ./transhuge-stress -d 20
CATEGORY="thp" run_test ./khugepaged_not_this -x
CATEGORY="madv_populate" run_test ./madv_populate
"""

# 6.15+ runner: the shmem invocations too, one with a trailing comment
RUN_VMTESTS_615 = RUN_VMTESTS_612 + """\
CATEGORY="thp" run_test ./khugepaged all:shmem
CATEGORY="thp" run_test ./khugepaged -s 4 all:shmem   # order 4
"""

KHUGEPAGED_61 = """\
// SPDX-License-Identifier: GPL-2.0
int main(void)
{
\tif (!check_huge_anon(p, 1, hpage_pmd_size))
\t\tfail("Fail");
\treturn 0;
}
"""

RUN_VMTESTS_61 = """\
#!/bin/bash
echo "running ./khugepaged"
run_test ./khugepaged
"""

KHUGEPAGED_62 = KHUGEPAGED_612.replace("case 's':", "case 'x':").replace('"s:"', '""')


def make_tree(root: Path, subdir: str, source: str, runner: str | None) -> Path:
    d = root / "tools/testing/selftests" / subdir
    d.mkdir(parents=True)
    (d / "khugepaged.c").write_text(source)
    if runner is not None:
        (d / "run_vmtests.sh").write_text(runner)
    return root


@pytest.fixture
def tree612(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "6.12", "mm", KHUGEPAGED_612, RUN_VMTESTS_612)


@pytest.fixture
def tree61(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "6.1", "vm", KHUGEPAGED_61, RUN_VMTESTS_61)


@pytest.fixture
def matrix() -> list[Invocation]:
    return selftest.load_matrix()


IFACE_612 = Interface("mm", frozenset({"ctx-mem", "order"}))
IFACE_61 = Interface("vm", frozenset())


def test_detect_interface_612(tree612: Path) -> None:
    assert selftest.detect_interface(tree612) == IFACE_612


def test_detect_interface_61(tree61: Path) -> None:
    assert selftest.detect_interface(tree61) == IFACE_61


def test_detect_interface_62_vm_with_ctx_mem(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "6.2", "vm", KHUGEPAGED_62, None)
    assert selftest.detect_interface(tree) == Interface("vm", frozenset({"ctx-mem"}))


def test_detect_interface_prefers_mm(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "both", "mm", KHUGEPAGED_612, None)
    make_tree(tree, "vm", KHUGEPAGED_61, None)
    assert selftest.detect_interface(tree).subdir == "mm"


def test_detect_interface_none(tmp_path: Path) -> None:
    (tmp_path / "tools/testing/selftests/mm").mkdir(parents=True)
    with pytest.raises(UserError, match=r"no tools/testing/selftests/\{mm,vm\}/khugepaged.c"):
        selftest.detect_interface(tmp_path)


def test_runner_args_612(tree612: Path) -> None:
    assert selftest.runner_args(tree612, IFACE_612) == [(), ("-s", "2")]


def test_runner_args_615(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "6.15", "mm", KHUGEPAGED_612, RUN_VMTESTS_615)
    assert selftest.runner_args(tree, IFACE_612) == [
        (), ("-s", "2"), ("all:shmem",), ("-s", "4", "all:shmem")]


def test_runner_args_without_thp_category_or_runner(tree61: Path, tmp_path: Path) -> None:
    assert selftest.runner_args(tree61, IFACE_61) is None  # 6.1: no CATEGORY lines
    tree = make_tree(tmp_path / "norunner", "mm", KHUGEPAGED_612, None)
    assert selftest.runner_args(tree, IFACE_612) is None


def test_default_ids_612(tree612: Path, matrix: list[Invocation]) -> None:
    assert selftest.default_ids(matrix, tree612, IFACE_612) == ["anon", "anon-s2"]


def test_default_ids_615(tmp_path: Path, matrix: list[Invocation]) -> None:
    tree = make_tree(tmp_path / "6.15", "mm", KHUGEPAGED_612, RUN_VMTESTS_615)
    assert selftest.default_ids(matrix, tree, IFACE_612) == [
        "anon", "shmem", "anon-s2", "shmem-s4"]


def test_default_ids_without_runner_61(tree61: Path, matrix: list[Invocation]) -> None:
    ids = selftest.default_ids(matrix, tree61, IFACE_61)
    assert ids[:2] == ["anon", "anon-s2"] and "shmem" not in ids
    # a 6.1 selftest supports only the plain invocation
    assert [i.id for i in selftest.select(matrix, IFACE_61, ids)] == ["anon"]


def test_default_ids_without_runner_are_anon_only(tmp_path: Path,
                                                  matrix: list[Invocation]) -> None:
    tree = make_tree(tmp_path / "norunner", "mm", KHUGEPAGED_612, None)
    ids = selftest.default_ids(matrix, tree, IFACE_612)
    assert [i.id for i in selftest.select(matrix, IFACE_612, ids)] == ["anon", "anon-s2"]


def test_select_all_supported(matrix: list[Invocation]) -> None:
    assert [i.id for i in selftest.select(matrix, IFACE_612, None)] == [
        "anon", "shmem", "anon-s2", "shmem-s4", "file-khugepaged", "file-madvise"]
    assert [i.id for i in selftest.select(matrix, IFACE_61, None)] == ["anon"]
    ctx_only = Interface("vm", frozenset({"ctx-mem"}))
    assert [i.id for i in selftest.select(matrix, ctx_only, None)] == [
        "anon", "shmem", "file-khugepaged", "file-madvise"]


def test_select_narrowed_keeps_matrix_order(matrix: list[Invocation]) -> None:
    chosen = selftest.select(matrix, IFACE_612, ["shmem-s4", "anon"])
    assert [i.id for i in chosen] == ["anon", "shmem-s4"]
    assert chosen[1].args == ("-s", "4", "all:shmem")


def test_select_unknown_id(matrix: list[Invocation]) -> None:
    with pytest.raises(UserError) as info:
        selftest.select(matrix, IFACE_612, ["anon", "shmme"])
    assert "['shmme']" in info.value.message and "'file-madvise'" in info.value.message


def test_select_logs_skipped(matrix: list[Invocation], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="orchestrator.suites.selftest.runner")
    selftest.select(matrix, IFACE_61, ["anon", "shmem-s4"])
    assert "selftest shmem-s4 skipped: this tree's selftest lacks ['ctx-mem', 'order']" in \
        caplog.text


# ---------------------------------------------------------------- the matrix file

def test_load_shipped_matrix(matrix: list[Invocation]) -> None:
    races = matrix[0].races
    assert [r.id for r in races] == ["collapse-before-sanity-check",
                                     "pageout-misses-other-cpu-batch"]
    assert all(i.races == races for i in matrix)  # select() keeps those a tree's selftest has
    matrix = [replace(i, races=()) for i in matrix]
    assert matrix == [
        Invocation("anon", ()),
        Invocation("shmem", ("all:shmem",), ("ctx-mem",)),
        Invocation("anon-s2", ("-s", "2"), ("order",)),
        Invocation("shmem-s4", ("-s", "4", "all:shmem"), ("ctx-mem", "order")),
        Invocation("file-khugepaged", ("khugepaged:file", "{filedir}"), ("ctx-mem",)),
        Invocation("file-madvise", ("madvise:file", "{filedir}"), ("ctx-mem",)),
        Invocation("file-xfs", ("all:file", "{xfsdir}"), ("ctx-mem", "xfs")),
    ]
    assert len({i.id for i in matrix}) == len(matrix)


@pytest.mark.parametrize("text", [
    "[[invocation]]\nargs = []\n",  # no id
    "[[test]]\nid = 'x'\n",  # no invocation table
    "[[invocation]\nid = 'x'\n",  # not TOML
])
def test_load_matrix_errors_name_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=rf"selftest matrix {path}"):
        selftest.load_matrix(path)


def test_load_matrix_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"selftest matrix .*missing.toml"):
        selftest.load_matrix(tmp_path / "missing.toml")


# ---------------------------------------------------------------- 7.2: all:file on XFS

# 7.2.13's run_vmtests.sh, the thp lines and the XFS loop mount around them
RUN_VMTESTS_72 = RUN_VMTESTS_615 + """\
# Try to create XFS if not provided
if [ -z "${SPLIT_HUGE_PAGE_TEST_XFS_PATH}" ]; then
    if test_selected "thp"; then
\tif grep xfs /proc/filesystems &>/dev/null; then
\t    XFS_IMG=$(mktemp /tmp/xfs_img_XXXXXX)
\t    SPLIT_HUGE_PAGE_TEST_XFS_PATH=$(mktemp -d /tmp/xfs_dir_XXXXXX)
\t    mount -o loop ${XFS_IMG} ${SPLIT_HUGE_PAGE_TEST_XFS_PATH}
\tfi
    fi
fi
if [ -n "${SPLIT_HUGE_PAGE_TEST_XFS_PATH}" ]; then
CATEGORY="thp" run_test ./khugepaged all:file ${SPLIT_HUGE_PAGE_TEST_XFS_PATH}
elif test_selected thp; then
\techo "[SKIP] ./khugepaged all:file" | tap_prefix
fi
"""

CONFIG_XFS = "CONFIG_BLOCK=y\nCONFIG_BLK_DEV_LOOP=y\nCONFIG_XFS_FS=y\n"


def test_runner_args_72_maps_the_xfs_path(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "7.2", "mm", KHUGEPAGED_612, RUN_VMTESTS_72)
    assert selftest.runner_args(tree, IFACE_612)[-1] == ("all:file", "{xfsdir}")


def test_xfs_feature_comes_from_the_kernel_config(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "7.2", "mm", KHUGEPAGED_612, RUN_VMTESTS_72)
    assert "xfs" in selftest.detect_interface(tree, CONFIG_XFS).features
    assert "xfs" not in selftest.detect_interface(tree, "CONFIG_XFS_FS=y\n").features
    assert "xfs" not in selftest.detect_interface(tree, CONFIG_XFS.replace("=y", "=m")).features
    assert "xfs" not in selftest.detect_interface(tree).features


def test_default_ids_72(tmp_path: Path, matrix: list[Invocation]) -> None:
    tree = make_tree(tmp_path / "7.2", "mm", KHUGEPAGED_612, RUN_VMTESTS_72)
    iface = selftest.detect_interface(tree, CONFIG_XFS)
    ids = selftest.default_ids(matrix, tree, iface)
    assert ids == ["anon", "shmem", "anon-s2", "shmem-s4", "file-xfs"]
    # a kernel without XFS (6.12's fragments) skips the file case instead of failing
    assert [i.id for i in selftest.select(matrix, IFACE_612, ids)] == ids[:-1]


def test_guest_argv_places_the_directories() -> None:
    inv = Invocation("file-xfs", ("all:file", "{xfsdir}"))
    assert selftest.guest_argv(inv) == ["./khugepaged", "all:file", selftest.GUEST_XFSDIR]
    inv = Invocation("file-madvise", ("madvise:file", "{filedir}"))
    assert selftest.guest_argv(inv) == ["./khugepaged", "madvise:file", selftest.GUEST_FILEDIR]


class _Shell:
    """Records commands; every command answers with `answer`."""

    def __init__(self, answer: int = 0) -> None:
        self.commands: list[str] = []
        self.put_calls: list[str] = []
        self.answer = answer

    def run(self, cmd: str, timeout: float = 60.0) -> CommandResult:
        self.commands.append(cmd)
        return CommandResult(self.answer, "", "mount: /tmp/thpvm-xfs: unknown filesystem type")

    def put(self, local: Path, remote: str, mode: int = 0o755) -> None:
        self.put_calls.append(remote)

    def get(self, remote: str, local: Path) -> None:
        raise NotImplementedError


def test_prepare_guest_mounts_xfs_only_when_an_invocation_needs_it(tmp_path: Path) -> None:
    shell = _Shell()
    selftest.prepare_guest(shell, tmp_path / "khugepaged", [Invocation("anon", ())])
    assert len(shell.commands) == 1 and "mkfs.xfs" not in shell.commands[0]
    shell = _Shell()
    both = [Invocation("anon", ()), Invocation("file-xfs", ("all:file", "{xfsdir}"))]
    selftest.prepare_guest(shell, tmp_path / "khugepaged", both)
    mount = shell.commands[-1]
    assert f"truncate -s {selftest.XFS_IMAGE_BYTES}" in mount and "mkfs.xfs -q" in mount
    assert f"mount -o loop {selftest.GUEST_XFS_IMAGE} {selftest.GUEST_XFSDIR}" in mount
    assert mount.startswith(f"if ! mountpoint -q {selftest.GUEST_XFSDIR}")  # idempotent


def test_failed_xfs_mount_is_a_guest_error(tmp_path: Path) -> None:
    from orchestrator.errors import GuestError

    with pytest.raises(GuestError, match="could not") as info:
        selftest.mount_xfs(_Shell(answer=32))
    assert "unknown filesystem type" in info.value.detail
