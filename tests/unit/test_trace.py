"""trace.py: tracefs line parsing (recorded shapes + garbage) and PMD placement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.spec import parse_spec
from orchestrator.suites.workloads.observation import parse_driver_output
from orchestrator.suites.workloads.trace import (
    COLLAPSE,
    SCAN_PMD,
    STATUS_NAMES,
    locate_scans,
    parse_line,
    parse_trace,
)

HEADER = """# tracer: nop
#
# entries-in-buffer/entries-written: 6/6   #P:2
#
#                                _-----=> irqs-off/BH-disabled
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| / _-=> migrate-disable
#                              |||| /     delay
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
"""


def scan(task: str, pid: int, t: str, mm: str, pfn: str, status: str, *, ref: int = 0,
         none: int = 0, unmapped: int = 0, writable: int = 1) -> str:
    return (f"{task:>16}-{pid:<7} [001] .....  {t}: {SCAN_PMD}: mm={mm}, scan_pfn={pfn}, "
            f"writable={writable}, referenced={ref}, none_or_zero={none}, status={status}, "
            f"unmapped={unmapped}")


def test_parse_scan_pmd_line() -> None:
    ev = parse_line(scan("khugepaged", 35, "152.123456", "00000000a1b2c3d4", "0x11a200",
                         "exceed_none_pte", ref=3, none=257))
    assert ev is not None
    assert (ev.task, ev.pid, ev.cpu, ev.time_ns) == ("khugepaged", 35, 1, 152_123_456_000)
    assert ev.name == SCAN_PMD and ev.mm == "00000000a1b2c3d4" and ev.scan_pfn == 0x11A200
    assert ev.status == "EXCEED_NONE_PTE"
    assert ev.fields["none_or_zero"] == 257 and ev.fields["referenced"] == 3


def test_no_pfn_and_odd_task_names() -> None:
    ev = parse_line(scan("kworker/u8:1-ev", 9, "1.5", "0000000011112222", "0xffffffffffffffff",
                         "pmd_none"))
    assert ev is not None and ev.task == "kworker/u8:1-ev" and ev.pid == 9
    assert ev.scan_pfn is None and ev.status == "PMD_NONE" and ev.time_ns == 1_500_000_000


def test_tgid_column_and_collapse_event() -> None:
    line = (" khugepaged-35 (   35) [000] d..1. 10.000001: mm_collapse_huge_page: "
            "mm=000000001234abcd, isolated=1, status=succeeded")
    ev = parse_line(line)
    assert ev is not None and ev.name == COLLAPSE and ev.status == "SUCCEED"
    assert ev.fields["isolated"] == 1 and ev.time_ns == 10_000_001_000


def test_every_6_12_status_text_maps_to_a_scan_name() -> None:
    from orchestrator.model.results import Scan  # the model's enum names must line up

    names = {s.name for s in Scan}
    assert set(STATUS_NAMES.values()) <= names
    assert all(Scan[name].value == text for text, name in STATUS_NAMES.items())


def test_parse_trace_file() -> None:
    text = HEADER + "\n".join([
        scan("khugepaged", 35, "1.000001", "m1", "0x100", "succeeded", ref=512),
        "CPU:1 [LOST 17 EVENTS]",
        "##### CPU 1 buffer started ####",
        "     thpwork-99 [000] .....  2.000000: mm_collapse_huge_page_isolate: scan_pfn=0x5, "
        "none_or_zero=0, referenced=0, writable=1, status=succeeded",
        "     thpwork-99 [000] .....  2.000001: sched_switch: prev_comm=x",
        "garbage that is not a trace line",
        scan("khugepaged", 35, "3.0", "m1", "0xzz", "succeeded"),
    ]) + "\n"
    tr = parse_trace(text)
    assert [e.name for e in tr.events] == [SCAN_PMD, "mm_collapse_huge_page_isolate"]
    assert tr.lost_events == 17
    assert len(tr.unparsed) == 2  # the garbage and the bad pfn ("#####" banners are comments)
    assert tr.events[1].scan_pfn == 5


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_garbage_never_crashes(text: str) -> None:
    tr = parse_trace(text)
    assert len(tr.events) + len(tr.unparsed) <= text.count("\n") + 1


@given(st.lists(st.sampled_from(["khugepaged-35  [001] .....  1.0: mm_khugepaged_scan_pmd: ",
                                 "mm=", "scan_pfn=0x", "status=", "ab", ", ", "=", "12",
                                 "unmapped=-3", "\n", "CPU:1 [LOST x EVENTS]"]), max_size=30))
def test_near_miss_lines_never_crash(parts: list[str]) -> None:
    parse_trace("".join(parts))


# --------------------------------------------------------------------------- placement

SPEC = parse_spec("""
format = 1
name = "place"
[[regions]]
name = "a"
pmds = 3
[[steps]]
op = "touch"
region = "a"
[[steps]]
op = "madvise"
region = "a"
advice = "hugepage"
[[steps]]
op = "wait_scans"
count = 1
label = "w"
[[steps]]
op = "madvise"
region = "a"
advice = "collapse"
""", "place.toml")

BASE = 1 << 40
PMD = 2 << 20


def _driver_output() -> str:
    vma = [BASE, BASE + 3 * PMD, 6144, 0, 0, 1, "rd wr mr mw me ac hg"]
    region = {"region": 0, "start": BASE, "vmas": [vma], "pmd_method": "pagemap_scan",
              "huge_pmds": [], "zero_pmds": []}
    cp = {"counters": {"full_scans": 1}, "procs": [{"proc": "parent", "pid": 500,
                                                     "regions": [region]}]}
    ev = [
        {"event": "start", "pid": 500, "time_ns": 1_000_000_000},
        {"event": "beacon", "proc": "parent", "pid": 500, "ret": -1, "errno": 22,
         "time_ns": 1_100_000_000},
        {"event": "region", "region": 0, "start": BASE, "pages": 1536},
        {"event": "checkpoint", "step": -1, "time_ns": 1_200_000_000, **cp},
        # pmd 0: pages 0..511 at pfn 1000.., pmd 1: pfn 5000.., pmd 2 not present
        {"event": "pfns", "step": 2, "time_ns": 2_000_000_000, "proc": "parent", "region": 0,
         "runs": [[0, 1000, 512], [512, 5000, 512]]},
        {"event": "wait", "step": 2, "start": 1, "target": 2, "reached": 2, "timed_out": False,
         "time_ns": 4_000_000_000},
        {"event": "checkpoint", "step": 2, "time_ns": 4_000_000_001, **cp},
        {"event": "pfns", "step": 3, "time_ns": 5_000_000_000, "proc": "parent", "region": 0,
         "runs": [[0, 7000, 512]]},
        {"event": "step", "step": 3, "proc": "parent", "op": "madvise", "region": 0,
         "calls": [[0, 1535, -1, 22]], "time_ns": 6_000_000_000},
        {"event": "end"},
    ]
    return "\n".join(json.dumps(e) for e in ev)


def test_locate_scans() -> None:
    obs = parse_driver_output(_driver_output(), SPEC)
    trace = parse_trace(HEADER + "\n".join([
        # the beacon: MADV_COLLAPSE from the driver's pid names its mm "mmP"
        scan("thpwork", 500, "1.050000", "mmP", "0xffffffffffffffff", "pmd_none"),
        # khugepaged pass: pmd 0 by pfn (last page 1511), pmd 1 by pfn, pmd 2 by order
        scan("khugepaged", 35, "3.000000", "mmP", hex(1511), "succeeded", ref=512),
        scan("khugepaged", 35, "3.000100", "mmP", hex(5000 + 300), "exceed_none_pte"),
        scan("khugepaged", 35, "3.000200", "mmP", "0xffffffffffffffff", "pmd_none"),
        # another process's mm: dropped
        scan("khugepaged", 35, "3.000300", "mmX", hex(123456), "succeeded", ref=512),
        # MADV_COLLAPSE of the whole region: three blocks in order
        scan("thpwork", 500, "5.500000", "mmP", "0xffffffffffffffff", "page_pmd_mapped"),
        scan("thpwork", 500, "5.500100", "mmP", hex(5002), "succeeded"),
        scan("thpwork", 500, "5.500200", "mmP", "0xffffffffffffffff", "pmd_none"),
    ]))
    placed = locate_scans(trace, obs)
    got = [(p.source, p.proc, p.region, p.pmd, p.located_by, p.status) for p in placed]
    assert got == [
        ("beacon", "parent", None, None, "beacon", "PMD_NONE"),
        ("khugepaged", "parent", "a", 0, "pfn", "SUCCEED"),
        ("khugepaged", "parent", "a", 1, "pfn", "EXCEED_NONE_PTE"),
        ("khugepaged", "parent", "a", 2, "order", "PMD_NONE"),
        ("madvise", "parent", "a", 0, "madvise", "PMD_MAPPED"),
        ("madvise", "parent", "a", 1, "madvise", "SUCCEED"),
        ("madvise", "parent", "a", 2, "madvise", "PMD_NONE"),
    ]
    assert placed[2].address == BASE + PMD


def test_order_chain_dropped_when_pfn_disagrees() -> None:
    obs = parse_driver_output(_driver_output(), SPEC)
    trace = parse_trace("\n".join([
        scan("thpwork", 500, "1.050000", "mmP", "0xffffffffffffffff", "pmd_none"),
        scan("khugepaged", 35, "3.000000", "mmP", hex(1000), "succeeded"),  # pmd 0
        scan("khugepaged", 35, "3.000100", "mmP", "0xffffffffffffffff", "pmd_none"),  # guess 1
        scan("khugepaged", 35, "3.000200", "mmP", hex(5001), "succeeded"),  # pfn says pmd 1
    ]))
    placed = locate_scans(trace, obs)
    assert [(p.pmd, p.located_by) for p in placed] == [
        (None, "beacon"), (0, "pfn"), (None, "none"), (1, "pfn")]


def test_single_candidate_without_pfn() -> None:
    spec = parse_spec("""
format = 1
name = "one"
[[regions]]
name = "a"
pmds = 1
[[steps]]
op = "checkpoint"
""", "one.toml")
    vma = [BASE, BASE + PMD, 1788, 260, 0, 1, "rd wr hg"]
    cp = {"event": "checkpoint", "step": 0, "time_ns": 9, "counters": {},
          "procs": [{"proc": "parent", "pid": 7, "regions": [
              {"region": 0, "start": BASE, "vmas": [vma], "pmd_method": "pagemap_scan",
               "huge_pmds": [], "zero_pmds": []}]}]}
    out = "\n".join(json.dumps(e) for e in [
        {"event": "start", "pid": 7}, {"event": "beacon", "proc": "parent", "pid": 7,
                                       "time_ns": 2_000}, {"event": "region", "region": 0,
                                                           "start": BASE, "pages": 512}, cp])
    obs = parse_driver_output(out, spec)
    trace = parse_trace("\n".join([
        scan("thpwork", 7, "0.000001", "mmQ", "0xffffffffffffffff", "pmd_none"),
        scan("khugepaged", 35, "0.000005", "mmQ", "0xffffffffffffffff", "exceed_swap_pte",
             unmapped=65),
    ]))
    placed = locate_scans(trace, obs)
    assert [(p.pmd, p.located_by, p.status) for p in placed] == [
        (None, "beacon", "PMD_NONE"), (0, "only", "EXCEED_SWAP_PTE")]


def test_printed_time_is_rounded_to_the_microsecond() -> None:
    """tracefs prints ns2usecs(ts), which rounds to the nearest microsecond."""
    ev = parse_line(scan("khugepaged", 35, "8.527244", "mmP", "0x1", "pmd_none"))
    assert ev is not None and ev.precision_ns == 1000
    assert (ev.earliest_ns, ev.time_ns, ev.latest_ns) == (8_527_243_500, 8_527_244_000,
                                                          8_527_244_499)
    ns = parse_line(scan("khugepaged", 35, "8.527243925", "mmP", "0x1", "pmd_none"))
    assert ns is not None and ns.earliest_ns == ns.latest_ns == 8_527_243_925


def test_beacon_printed_after_the_drivers_own_timestamp() -> None:
    """A real 6.12.117 run: the beacon event prints 8.527244 s, the driver's beacon
    record says 8.527243925 s; the rounded time still names the mm and the beacon
    itself is not taken for a MADV_COLLAPSE scan."""
    out = json.loads("[" + _driver_output().replace("\n", ",") + "]")
    for ev in out:
        if ev["event"] == "beacon":
            ev["time_ns"] = 1_050_000_000 - 75
    obs = parse_driver_output("\n".join(json.dumps(e) for e in out), SPEC)
    trace = parse_trace("\n".join([
        scan("thpwork", 500, "1.050000", "mmP", "0xffffffffffffffff", "pmd_none"),
        scan("khugepaged", 35, "3.000200", "mmP", "0xffffffffffffffff", "pmd_none"),
    ]))
    placed = locate_scans(trace, obs)
    assert [(p.source, p.proc) for p in placed] == [("beacon", "parent"),
                                                    ("khugepaged", "parent")]


# ------------------------------------------------------------ 7.1+ formats from tracefs

FORMATS_72 = (Path(__file__).resolve().parent.parent / "data" / "trace"
              / "synthetic-7.2-formats.txt")


def test_parse_format_dump_reads_keys_fields_and_symbols() -> None:
    from orchestrator.suites.workloads import trace as t

    fmt = t.parse_format_dump(FORMATS_72.read_text())
    assert set(fmt.events) == {t.COLLAPSE, t.SCAN, t.SCAN_PMD}
    scan = fmt.events[t.SCAN]
    assert scan.keys == {"mm": "p", "progress": "u", "full_scan_finished": "d"}
    assert scan.fields == {"mm": "struct mm_struct *", "progress": "unsigned int",
                           "full_scan_finished": "bool"}
    pmd = fmt.events[t.SCAN_PMD]
    assert pmd.keys["scan_pfn"] == "x" and "writable" not in pmd.keys  # gone in 7.1
    assert fmt.has(t.COLLAPSE, "order") and not fmt.has(t.ISOLATE)
    assert fmt.statuses()["no_pte_table"] == "NO_PTE_TABLE"
    assert fmt.statuses()["page_lazyfree"] == "PAGE_LAZYFREE"


def test_72_trace_lines_are_typed_by_the_kernel_format() -> None:
    from orchestrator.suites.workloads import trace as t

    fmt = t.parse_format_dump(FORMATS_72.read_text())
    text = "\n".join([
        "  khugepaged-35  [001] .....  10.000001: mm_khugepaged_scan_pmd: mm=000000001a2b3c4d, "
        "scan_pfn=0xffffffffffffffff, referenced=0, none_or_zero=0, status=no_pte_table, "
        "unmapped=0",
        "  khugepaged-35  [001] .....  10.000002: mm_collapse_huge_page: mm=000000001a2b3c4d, "
        "isolated=1, status=succeeded, order=4",
        "  khugepaged-35  [001] .....  10.000003: mm_khugepaged_scan: mm=000000001a2b3c4d, "
        "progress=513, full_scan_finished=1",
        "  khugepaged-35  [001] .....  10.000004: mm_khugepaged_scan_pmd: mm=000000001a2b3c4d, "
        "scan_pfn=0x1000, referenced=0, none_or_zero=0, status=page_lazyfree, unmapped=0",
    ])
    trace = t.parse_trace(text, t.EVENTS, fmt)
    assert trace.unparsed == []
    first, collapse, _, lazy = trace.events
    assert first.scan_pfn is None and first.status == "NO_PTE_TABLE"
    assert collapse.fields["order"] == 4 and collapse.status == "SUCCEED"
    assert lazy.status == "PAGE_LAZYFREE"
    assert trace.scan_progress() == [t.ScanProgress(10_000_003_000, "000000001a2b3c4d", 513, True)]


def test_a_field_or_status_the_kernel_does_not_print_is_not_understood() -> None:
    from orchestrator.suites.workloads import trace as t

    fmt = t.parse_format_dump(FORMATS_72.read_text())
    old = ("  khugepaged-35  [001] .....  1.000000: mm_khugepaged_scan_pmd: mm=00000000a1b2c3d4, "
           "scan_pfn=0x11a200, writable=1, referenced=512, none_or_zero=0, status=succeeded, "
           "unmapped=0")
    assert t.parse_trace(old).events[0].fields["writable"] == 1  # no formats: 6.12 shapes
    trace = t.parse_trace(old, t.EVENTS, fmt)
    assert not trace.events and "no field 'writable'" in trace.unparsed[0]
    bad = old.replace("writable=1, ", "").replace("succeeded", "pmd_null")
    unparsed = t.parse_trace(bad, t.EVENTS, fmt).unparsed
    assert "'pmd_null' is not in the kernel's table" in unparsed[0]


@pytest.mark.parametrize("text", ["", "name: x\n", "print fmt: \"a=%d\", REC->a\n", "\x00garbage"])
def test_bad_format_files(text: str) -> None:
    from orchestrator.suites.workloads import trace as t

    with pytest.raises(ValueError):
        t.parse_format_file(text)
    assert t.parse_format_dump(t.FORMAT_MARK + "x\n" + text).events == {}


def test_format_dump_command_runs_on_a_directory(tmp_path: Path) -> None:
    import subprocess

    from orchestrator.suites.workloads import trace as t

    for chunk in FORMATS_72.read_text().split(t.FORMAT_MARK)[1:]:
        name, _, body = chunk.partition("\n")
        (tmp_path / name).mkdir()
        (tmp_path / name / "format").write_text(body)
    (tmp_path / "enable").write_text("0\n")  # a file beside the event directories
    out = subprocess.run(["sh", "-c", t.format_dump_command(str(tmp_path))], check=True,
                         capture_output=True, text=True).stdout
    assert set(t.parse_format_dump(out).events) == {t.COLLAPSE, t.SCAN, t.SCAN_PMD}
    empty = subprocess.run(["sh", "-c", t.format_dump_command(str(tmp_path / "none"))],
                           check=True, capture_output=True, text=True).stdout
    assert empty == ""


def test_the_boot_line_enables_every_event_the_driver_records() -> None:
    """The driver (thpwork.c) enables its events only if they are off; the default machine
    profile's kernel command line turns all of them on at boot, so no tracepoint is
    patched into a running guest (tests/data/findings/README.md, "Oops: int3")."""
    import re

    from orchestrator.machine.qemu import load_machine_profile
    from orchestrator.suites.workloads import trace as t
    src = (Path(t.__file__).parent / "thpwork.c").read_text()
    (array,) = re.findall(r"trace_events\[\] = \{(.*?)\};", src, re.S)
    driver = set(re.findall(r'"(mm_\w+)"', array))
    assert driver == set(t.EVENTS)
    (value,) = [w.partition("=")[2] for w in load_machine_profile().cmdline.split()
                if w.startswith("trace_event=")]
    assert {item.partition(":") for item in value.split(",")} == \
        {("huge_memory", ":", e) for e in driver}
