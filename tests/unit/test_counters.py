"""Tests of orchestrator.suites.counters: parsers, snapshots, deltas, the sampler, counters.json."""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import proc
from orchestrator.errors import InfraError
from orchestrator.machine.guest import CommandResult
from orchestrator.suites import counters as c

# /proc/vmstat names of Debian 6.12.117 (mm/vmstat.c vmstat_text, x86-64 zones DMA, DMA32,
# Normal, Movable; "nr_unstable" is the deprecated line vmstat_show appends).
VMSTAT_612_NAMES = """
nr_free_pages nr_zone_inactive_anon nr_zone_active_anon nr_zone_inactive_file
nr_zone_active_file nr_zone_unevictable nr_zone_write_pending nr_mlock nr_bounce nr_zspages
nr_free_cma nr_unaccepted numa_hit numa_miss numa_foreign numa_interleave numa_local numa_other
nr_inactive_anon nr_active_anon nr_inactive_file nr_active_file nr_unevictable
nr_slab_reclaimable nr_slab_unreclaimable nr_isolated_anon nr_isolated_file workingset_nodes
workingset_refault_anon workingset_refault_file workingset_activate_anon
workingset_activate_file workingset_restore_anon workingset_restore_file workingset_nodereclaim
nr_anon_pages nr_mapped nr_file_pages nr_dirty nr_writeback nr_writeback_temp nr_shmem
nr_shmem_hugepages nr_shmem_pmdmapped nr_file_hugepages nr_file_pmdmapped
nr_anon_transparent_hugepages nr_vmscan_write nr_vmscan_immediate_reclaim nr_dirtied nr_written
nr_throttled_written nr_kernel_misc_reclaimable nr_foll_pin_acquired nr_foll_pin_released
nr_kernel_stack nr_shadow_call_stack nr_page_table_pages nr_sec_page_table_pages nr_iommu_pages
nr_swapcached pgpromote_success pgpromote_candidate pgdemote_kswapd pgdemote_direct
pgdemote_khugepaged nr_dirty_threshold nr_dirty_background_threshold nr_memmap_pages
nr_memmap_boot_pages pgpgin pgpgout pswpin pswpout pgalloc_dma pgalloc_dma32 pgalloc_normal
pgalloc_movable allocstall_dma allocstall_dma32 allocstall_normal allocstall_movable pgskip_dma
pgskip_dma32 pgskip_normal pgskip_movable pgfree pgactivate pgdeactivate pglazyfree pgfault
pgmajfault pglazyfreed pgrefill pgreuse pgsteal_kswapd pgsteal_direct pgsteal_khugepaged
pgscan_kswapd pgscan_direct pgscan_khugepaged pgscan_direct_throttle pgscan_anon pgscan_file
pgsteal_anon pgsteal_file zone_reclaim_success zone_reclaim_failed pginodesteal slabs_scanned
kswapd_inodesteal kswapd_low_wmark_hit_quickly kswapd_high_wmark_hit_quickly pageoutrun
pgrotated drop_pagecache drop_slab oom_kill numa_pte_updates numa_huge_pte_updates
numa_hint_faults numa_hint_faults_local numa_pages_migrated pgmigrate_success pgmigrate_fail
thp_migration_success thp_migration_fail thp_migration_split compact_migrate_scanned
compact_free_scanned compact_isolated compact_stall compact_fail compact_success
compact_daemon_wake compact_daemon_migrate_scanned compact_daemon_free_scanned
htlb_buddy_alloc_success htlb_buddy_alloc_fail cma_alloc_success cma_alloc_fail
unevictable_pgs_culled unevictable_pgs_scanned unevictable_pgs_rescued unevictable_pgs_mlocked
unevictable_pgs_munlocked unevictable_pgs_cleared unevictable_pgs_stranded thp_fault_alloc
thp_fault_fallback thp_fault_fallback_charge thp_collapse_alloc thp_collapse_alloc_failed
thp_file_alloc thp_file_fallback thp_file_fallback_charge thp_file_mapped thp_split_page
thp_split_page_failed thp_deferred_split_page thp_underused_split_page thp_split_pmd
thp_scan_exceed_none_pte thp_scan_exceed_swap_pte thp_scan_exceed_share_pte thp_split_pud
thp_zero_page_alloc thp_zero_page_alloc_failed thp_swpout thp_swpout_fallback balloon_inflate
balloon_deflate balloon_migrate nr_tlb_remote_flush nr_tlb_remote_flush_received
nr_tlb_local_flush_all nr_tlb_local_flush_one swap_ra swap_ra_hit swpin_zero swpout_zero
ksm_swpin_copy cow_ksm zswpin zswpout zswpwb direct_map_level2_splits direct_map_level3_splits
vma_lock_success vma_lock_abort vma_lock_retry vma_lock_miss kstack_1k kstack_2k kstack_4k
kstack_8k kstack_16k kstack_32k kstack_64k kstack_rest nr_unstable
""".split()
THP_VALUES = {"thp_fault_alloc": 14, "thp_collapse_alloc": 9, "thp_split_pmd": 3,
              "thp_scan_exceed_none_pte": 2, "nr_anon_transparent_hugepages": 5,
              "pswpout": 129, "pgfault": 812345, "nr_unstable": 0}
VMSTAT_612 = "".join(f"{n} {THP_VALUES.get(n, i * 7 % 1000)}\n"
                     for i, n in enumerate(VMSTAT_612_NAMES))

STATS_612 = ["anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge", "swpout",
             "swpout_fallback", "shmem_alloc", "shmem_fallback", "shmem_fallback_charge", "split",
             "split_failed", "split_deferred", "nr_anon", "nr_anon_partially_mapped"]


def sysfs_612(full_scans: int = 7, collapsed: int = 9, prefix: str = "") -> str:
    """A 6.12 transparent_hugepage dump as `grep -r . . | sed` prints it (x86-64)."""
    lines = [
        "enabled=always [madvise] never", "defrag=always defer defer+madvise [madvise] never",
        "use_zero_page=1", "hpage_pmd_size=2097152", "shrink_underused=1",
        "shmem_enabled=always within_size advise [never] deny force",
        "khugepaged/defrag=1", "khugepaged/max_ptes_shared=256", "khugepaged/max_ptes_swap=64",
        "khugepaged/max_ptes_none=511", "khugepaged/pages_to_scan=4096",
        "khugepaged/scan_sleep_millisecs=10000", "khugepaged/alloc_sleep_millisecs=60000",
        f"khugepaged/full_scans={full_scans}", f"khugepaged/pages_collapsed={collapsed}",
        "hugepages-8kB/shmem_enabled=always inherit within_size advise [never]",
    ]
    for kb in (16, 32, 64, 128, 256, 512, 1024, 2048):
        inherit = kb == 2048
        lines.append(f"hugepages-{kb}kB/enabled=always "
                     + ("[inherit] madvise never" if inherit else "inherit madvise [never]"))
        lines.append(f"hugepages-{kb}kB/shmem_enabled=always "
                     + ("[inherit]" if inherit else "inherit") + " within_size advise "
                     + ("never" if inherit else "[never]"))
        lines += [f"hugepages-{kb}kB/stats/{s}={3 if kb == 2048 else 0}" for s in STATS_612]
    return "".join(f"{prefix}{line}\n" for line in lines)


def record(uptime: float = 123.45, vmstat: str = VMSTAT_612, sysfs: str | None = None) -> str:
    return (f"{c.MARK_SAMPLE} {uptime}\n{c.MARK_VMSTAT}\n{vmstat}{c.MARK_SYSFS}\n"
            f"{sysfs if sysfs is not None else sysfs_612()}{c.MARK_END}\n")


# ------------------------------------------------------------------ parsers


def test_parse_vmstat_612() -> None:
    counters = c.parse_vmstat(VMSTAT_612)
    assert len(counters) == len(VMSTAT_612_NAMES)
    assert counters["thp_collapse_alloc"] == 9 and counters["pgfault"] == 812345
    assert counters["nr_unstable"] == 0 and list(counters)[-1] == "nr_unstable"


def test_parse_vmstat_tolerates_unknown_names_and_blank_lines() -> None:
    assert c.parse_vmstat("\nthp_future_counter 4\n\nthp_fault_alloc 1\n") == {
        "thp_future_counter": 4, "thp_fault_alloc": 1}


@pytest.mark.parametrize("text,fragment", [
    ("thp_fault_alloc 1\nthp_collapse_alloc\n", "vmstat line 2: 'thp_collapse_alloc'"),
    ("thp_fault_alloc one\n", "vmstat line 1"),
    ("thp fault 1\n", "expected 'name value'"),
    ("thp_fault_alloc 1\nthp_fault_alloc 2\n", "'thp_fault_alloc' appears twice"),
    ("bash: grep: command not found\n", "vmstat line 1"),
])
def test_parse_vmstat_rejects_malformed_lines(text: str, fragment: str) -> None:
    with pytest.raises(c.CounterFormatError) as err:
        c.parse_vmstat(text)
    assert fragment in str(err.value)
    assert isinstance(err.value, InfraError)  # exit 125: bisect skips, never judges


@pytest.mark.parametrize("raw,value", [
    ("always [madvise] never", "madvise"), ("always inherit madvise [never]", "never"),
    ("always defer defer+madvise [defer+madvise] never", "defer+madvise"),
    ("511\n", 511), ("2097152", 2097152), ("-1", -1), ("", ""), ("weird text", "weird text"),
])
def test_parse_sysfs_value(raw: str, value: str | int) -> None:
    assert c.parse_sysfs_value(raw) == value


def test_parse_sysfs_dump_612_and_split() -> None:
    dump = c.parse_sysfs_dump(sysfs_612())
    assert dump["enabled"] == "madvise" and dump["shmem_enabled"] == "never"
    assert dump["hugepages-2048kB/enabled"] == "inherit"
    assert dump["hugepages-8kB/shmem_enabled"] == "never"
    khugepaged, settings, stats = c.split_sysfs(dump)
    assert khugepaged["pages_collapsed"] == 9 and khugepaged["max_ptes_none"] == 511
    assert settings["hpage_pmd_size"] == 2097152 and "khugepaged/defrag" not in settings
    assert stats["hugepages-2048kB/stats/anon_fault_alloc"] == 3
    assert len(stats) == 8 * len(STATS_612)


def test_parse_sysfs_dump_accepts_absolute_paths_and_joins_multiline_files() -> None:
    dump = c.parse_sysfs_dump(sysfs_612(prefix=c.THP_SYSFS + "/") + "x/y=first\nx/y=second\n")
    assert dump["khugepaged/full_scans"] == 7
    assert dump["x/y"] == "first\nsecond"


@pytest.mark.parametrize("text", ["enabled\n", "=3\n", "../etc/passwd=1\n", "a b=1\n"])
def test_parse_sysfs_dump_rejects_malformed_lines(text: str) -> None:
    with pytest.raises(c.CounterFormatError, match="sysfs line 1"):
        c.parse_sysfs_dump(text)


def test_split_sysfs_requires_numeric_counters() -> None:
    with pytest.raises(c.CounterFormatError, match="khugepaged/full_scans"):
        c.split_sysfs({"khugepaged/full_scans": "lots"})


def test_parse_snapshot_and_counters() -> None:
    snap = c.parse_snapshot(record())
    assert snap.taken_at == 123.45
    assert snap.thp_settings["enabled"] == "madvise"
    counters = snap.counters()
    assert counters["pages_collapsed"] == 9 and counters["full_scans"] == 7
    assert "max_ptes_none" not in counters and "enabled" not in counters
    assert counters["hugepages-2048kB/stats/anon_fault_alloc"] == 3
    assert counters["thp_fault_alloc"] == 14
    assert set(c.KEY_COUNTERS) <= set(counters)


@pytest.mark.parametrize("text,fragment", [
    ("", "got 0"), (record() + record(), "got 2"),
    (record().replace(c.MARK_END + "\n", ""), "0 complete"),
    ("motd line\n" + record(), "outside a record"),
    (record(uptime=float("nan")), "bad uptime"),
    (record().replace(c.MARK_VMSTAT + "\n", ""), "outside a section"),
])
def test_parse_snapshot_rejects_bad_output(text: str, fragment: str) -> None:
    with pytest.raises(c.CounterFormatError, match=fragment):
        c.parse_snapshot(text)


def test_snapshot_json_round_trip() -> None:
    snap = c.parse_snapshot(record())
    assert c.Snapshot.from_json(json.loads(json.dumps(snap.to_json()))) == snap


# ------------------------------------------------------------------- deltas


def test_delta_counts_counters_only() -> None:
    before = c.parse_snapshot(record(sysfs=sysfs_612(full_scans=7, collapsed=9)))
    vm_after = VMSTAT_612.replace("thp_collapse_alloc 9", "thp_collapse_alloc 12").replace(
        "nr_anon_transparent_hugepages 5", "nr_anon_transparent_hugepages 2")
    after = c.parse_snapshot(record(200.0, vm_after, sysfs_612(full_scans=10, collapsed=12)))
    d = c.delta(before, after)
    assert d["thp_collapse_alloc"] == 3 and d["pages_collapsed"] == 3 and d["full_scans"] == 3
    assert d["nr_anon_transparent_hugepages"] == -3  # a gauge may go down
    assert "max_ptes_none" not in d and "enabled" not in d
    assert list(d) == sorted(d)


def test_delta_of_maps_skips_one_sided_names() -> None:
    assert c.delta({"a": 1, "b": 2}, {"b": 5, "c": 9}) == {"b": 3}


# ------------------------------------------------------------------- series


def series_text(n: int) -> str:
    return "".join(record(10.0 + i, f"thp_collapse_alloc {i}\n",
                          f"khugepaged/full_scans={i}\nkhugepaged/pages_collapsed={2 * i}\n")
                   for i in range(n))


def test_parse_series_drops_only_the_cut_tail() -> None:
    text = series_text(3)
    cut = text[: text.rindex(c.MARK_END) - 3]
    rows = c.parse_series(cut)
    assert [r.taken_at for r in rows] == [10.0, 11.0]
    assert c.series_values(rows, "pages_collapsed") == [(10.0, 0), (11.0, 2)]
    assert c.parse_series(text)[-1].khugepaged == {"full_scans": 2, "pages_collapsed": 4}


def test_parse_series_rejects_a_corrupt_complete_record() -> None:
    text = series_text(2).replace("thp_collapse_alloc 1", "thp_collapse_alloc ?")
    with pytest.raises(c.CounterFormatError, match="series record at line"):
        c.parse_series(text)


def test_parse_series_drops_a_record_interrupted_by_the_next() -> None:
    first, second = record(1.0), record(2.0)
    text = first[: first.index(c.MARK_SYSFS)] + second
    assert [r.taken_at for r in c.parse_series(text)] == [2.0]


# ------------------------------------------------------------- guest commands


class LocalShell:
    """The host's own sh as a GuestShell (the commands only read /proc and sysfs)."""

    def run(self, cmd: str, timeout: float = 60.0) -> CommandResult:
        res = proc.run(["sh", "-c", cmd], check=False, timeout=timeout)
        return CommandResult(res.returncode, res.output, "")

    def put(self, local: Path, remote: str, mode: int = 0o755) -> None:
        raise NotImplementedError

    def get(self, remote: str, local: Path) -> None:
        raise NotImplementedError


needs_host_thp = pytest.mark.skipif(
    not (os.path.isdir(c.THP_SYSFS + "/khugepaged") and shutil.which("awk")
         and shutil.which("setsid")),
    reason="host lacks THP sysfs, awk or setsid")


@needs_host_thp
def test_snapshot_command_runs_on_a_real_kernel() -> None:
    snap = c.snapshot(LocalShell())
    assert snap.taken_at > 0
    assert {"thp_fault_alloc", "thp_collapse_alloc", "pswpin"} <= set(snap.vmstat)
    assert not any(k.startswith(("pgfault", "nr_free")) for k in snap.vmstat)
    assert {"full_scans", "pages_collapsed", "max_ptes_none"} <= set(snap.khugepaged)
    assert snap.thp_settings["enabled"] in ("always", "madvise", "never")
    assert snap.thp_settings["hpage_pmd_size"] == 2097152


@needs_host_thp
def test_sampler_runs_and_stops_cleanly(tmp_path: Path) -> None:
    shell = LocalShell()
    sampler = c.start_sampler(shell, path=str(tmp_path / "series"), interval=0.05)
    assert sampler.pid > 1 and (tmp_path / "series.pid").exists()
    time.sleep(0.3)
    start = time.monotonic()
    rows = c.stop_sampler(shell, sampler)
    assert time.monotonic() - start < 1.5  # the loop noticed the stop file
    assert len(rows) >= 2
    assert [r.taken_at for r in rows] == sorted(r.taken_at for r in rows)
    assert set(rows[0].khugepaged) == {"full_scans", "pages_collapsed"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


class ScriptedShell:
    """Returns canned results and records the commands."""

    def __init__(self, *results: CommandResult) -> None:
        self.results = list(results)
        self.commands: list[str] = []

    def run(self, cmd: str, timeout: float = 60.0) -> CommandResult:
        self.commands.append(cmd)
        return self.results.pop(0)

    def put(self, local: Path, remote: str, mode: int = 0o755) -> None:
        raise NotImplementedError

    def get(self, remote: str, local: Path) -> None:
        raise NotImplementedError


def test_snapshot_is_one_guest_command() -> None:
    shell = ScriptedShell(CommandResult(0, record(), ""))
    assert c.snapshot(shell).khugepaged["full_scans"] == 7
    assert len(shell.commands) == 1
    assert "/proc/vmstat" in shell.commands[0] and c.THP_SYSFS in shell.commands[0]


def test_snapshot_failure_is_infrastructure() -> None:
    with pytest.raises(c.CounterFormatError, match="exited 127"):
        c.snapshot(ScriptedShell(CommandResult(127, "", "sh: awk: not found")))


def test_start_sampler_requires_a_pid() -> None:
    with pytest.raises(c.CounterFormatError, match="could not start"):
        c.start_sampler(ScriptedShell(CommandResult(0, "", "")))


def test_sampler_commands_quote_paths_and_check_interval() -> None:
    cmd = c.sampler_start_command("/tmp/my series", 0.5)
    assert "'/tmp/my series'" in cmd and "sleep 0.5" in cmd and "setsid" in cmd
    stop = c.sampler_stop_command(c.Sampler("/tmp/my series", 0.5, 42))
    assert stop.endswith("cat '/tmp/my series'") and "42" in stop
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            c.sampler_start_command("/tmp/x", bad)


def test_stop_sampler_parses_rows() -> None:
    shell = ScriptedShell(CommandResult(0, "4242\n", ""), CommandResult(0, series_text(4), ""))
    sampler = c.start_sampler(shell, path="/tmp/s", interval=0.25)
    assert sampler == c.Sampler("/tmp/s", 0.25, 4242)
    assert len(c.stop_sampler(shell, sampler)) == 4


# ------------------------------------------------------------ counters.json


def test_counters_json_round_trip(tmp_path: Path) -> None:
    before, after = c.parse_snapshot(record(1.0)), c.parse_snapshot(record(2.0))
    rows = c.parse_series(series_text(3))
    path = tmp_path / "counters.json"
    c.write_counters_json(path, {"before": before, "after": after},
                          {"selftest ./khugepaged": c.delta(before, after)}, {"workload": rows})
    data = json.loads(path.read_text())
    assert data["format"] == c.COUNTERS_FORMAT and data["key_counters"][0] == "pages_collapsed"
    snaps, deltas, series = c.load_counters_json(path)
    assert snaps == {"before": before, "after": after}
    assert deltas["selftest ./khugepaged"]["thp_collapse_alloc"] == 0
    assert series == {"workload": rows}


def test_load_counters_json_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"format": "other"}')
    with pytest.raises(c.CounterFormatError):
        c.load_counters_json(path)


# --------------------------------------------------------------- properties

_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)


@given(st.dictionaries(_NAMES, st.integers(-(2**63), 2**64)))
def test_vmstat_round_trip(counters: dict[str, int]) -> None:
    text = "".join(f"{k} {v}\n" for k, v in counters.items())
    assert c.parse_vmstat(text) == counters


@given(st.text(max_size=300))
def test_vmstat_garbage_raises_only_counter_errors(text: str) -> None:
    try:
        result = c.parse_vmstat(text)
    except c.CounterFormatError:
        return
    assert all(isinstance(v, int) for v in result.values())


@given(st.text(max_size=300))
def test_sysfs_garbage_raises_only_counter_errors(text: str) -> None:
    try:
        dump = c.parse_sysfs_dump(text)
        c.split_sysfs(dump)
    except c.CounterFormatError:
        pass


_RECORD_ALPHABET = st.sampled_from(
    [c.MARK_SAMPLE + " 1.5\n", c.MARK_VMSTAT + "\n", c.MARK_SYSFS + "\n", c.MARK_END + "\n",
     "thp_fault_alloc 3\n", "khugepaged/full_scans=2\n", "enabled=[never]\n", "x\n", "\n",
     " 7", "=", "@@"])


@settings(max_examples=200)
@given(st.lists(_RECORD_ALPHABET, max_size=40).map("".join))
def test_series_garbage_raises_only_counter_errors(text: str) -> None:
    try:
        rows = c.parse_series(text)
    except c.CounterFormatError:
        return
    assert all(isinstance(r, c.Snapshot) for r in rows)


@settings(max_examples=100)
@given(n=st.integers(1, 5), data=st.data())
def test_any_cut_of_a_series_yields_its_complete_prefix(n: int, data: st.DataObject) -> None:
    text = series_text(n)
    cut = data.draw(st.integers(0, len(text)))
    rows = c.parse_series(text[:cut])
    full = c.parse_series(text)
    assert rows == full[: len(rows)]
    assert len(rows) >= text[:cut].count(c.MARK_END + "\n")


# ------------------------------------------------------------ per-size (mTHP) statistics

def test_per_size_and_orders() -> None:
    delta = {"thp_collapse_alloc": 1, "hugepages-2048kB/stats/collapse_alloc": 1,
             "hugepages-64kB/stats/collapse_alloc": 3,
             "hugepages-64kB/stats/collapse_exceed_none_pte": 2,
             "hugepages-16kB/enabled": 9}  # not a stat: ignored
    assert c.per_size(delta) == {64: {"collapse_alloc": 3, "collapse_exceed_none_pte": 2},
                                 2048: {"collapse_alloc": 1}}
    assert [c.size_order(kb) for kb in (16, 64, 2048)] == [2, 4, 9]
    assert c.mthp_summary(delta)["hugepages-64kB"] == {
        "order": 4, "delta": {"collapse_alloc": 3, "collapse_exceed_none_pte": 2}}
    for bad in (0, 12, 6):
        with pytest.raises(ValueError):
            c.size_order(bad)


def test_mthp_stats_are_counters_with_deltas() -> None:
    sysfs = "khugepaged/full_scans=1\nhugepages-64kB/stats/collapse_alloc={}\n"
    before = c.parse_snapshot(record(1.0, sysfs=sysfs.format(2)))
    after = c.parse_snapshot(record(2.0, sysfs=sysfs.format(5)))
    assert before.mthp_stats == {"hugepages-64kB/stats/collapse_alloc": 2}
    assert c.delta(before, after)["hugepages-64kB/stats/collapse_alloc"] == 3


def test_sampler_lists_the_size_stat_files_once() -> None:
    cmd = c.sampler_start_command("/tmp/s", 0.25, mthp_stats=("collapse_alloc",))
    assert cmd.count("hugepages-*/stats/*") == 1 and "collapse_alloc)" in cmd
    assert "$F" in cmd  # the sample reads them


@needs_host_thp
@pytest.mark.skipif(not glob.glob(c.THP_SYSFS + "/hugepages-*kB/stats/collapse_alloc"),
                    reason="host kernel has no per-size collapse statistics")
def test_sampler_series_has_per_size_stats_on_a_real_kernel(tmp_path: Path) -> None:
    shell = LocalShell()
    sampler = c.start_sampler(shell, path=str(tmp_path / "series"), interval=0.05)
    time.sleep(0.3)
    rows = c.stop_sampler(shell, sampler)
    sizes = c.per_size(rows[0].mthp_stats)
    assert 2048 in sizes and set(sizes[2048]) <= set(c.SERIES_MTHP_STATS)
    assert "collapse_alloc" in sizes[2048]
    snap = c.snapshot(shell)
    assert "split" in c.per_size(snap.mthp_stats)[2048]  # a snapshot keeps every stat
