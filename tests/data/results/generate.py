"""Generate the synthetic result.json fixtures of this directory.

Run from the repository root: `python tests/data/results/generate.py`.
Case names, steps and their order are those of the Debian 6.12.117
`tools/testing/selftests/mm/khugepaged.c` run as `./khugepaged all:anon`;
workloads follow scenarios S1, S3 and S9 of the model spec. Numbers are
plausible, not recorded.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

HERE = Path(__file__).parent

K, M = "khugepaged", "madvise"
# (test, {context: [step messages]}) in 6.12.117 execution order for anon memory.
ANON_TESTS: list[tuple[str, dict[str, list[str]]]] = [
    ("collapse_full", {c: ["Collapse multiple fully populated PTE table"] for c in (K, M)}),
    ("collapse_empty", {c: ["Do not collapse empty PTE table"] for c in (K, M)}),
    ("collapse_single_pte_entry",
     {c: ["Collapse PTE table with single PTE entry present"] for c in (K, M)}),
    ("collapse_max_ptes_none", {
        K: ["Maybe collapse with max_ptes_none exceeded", "Collapse with max_ptes_none PTEs empty"],
        M: ["Maybe collapse with max_ptes_none exceeded"]}),
    ("collapse_single_pte_entry_compound", {c: [
        "Allocate huge page", "Split huge page leaving single PTE mapping compound page",
        "Collapse PTE table with single PTE mapping compound page"] for c in (K, M)}),
    ("collapse_full_of_compound", {c: [
        "Allocate huge page",
        "Split huge page leaving single PTE page table full of compound pages",
        "Collapse PTE table full of compound pages"] for c in (K, M)}),
    ("collapse_compound_extreme", {c: [
        "Construct PTE page table full of different PTE-mapped compound pages 512/512",
        "Collapse PTE table full of different compound pages"] for c in (K, M)}),
    ("collapse_swapin_single_pte", {c: [
        "Swapout one page", "Collapse with swapping in single PTE entry"] for c in (K, M)}),
    ("collapse_max_ptes_swap", {
        K: ["Swapout 65 of 512 pages", "Maybe collapse with max_ptes_swap exceeded",
            "Allocate huge page", "Swapout 64 of 512 pages",
            "Collapse with max_ptes_swap pages swapped out"],
        M: ["Swapout 65 of 512 pages", "Maybe collapse with max_ptes_swap exceeded"]}),
    ("collapse_fork", {c: [
        "Allocate small page", "Share small page over fork()",
        "Collapse PTE table with single page shared with parent process",
        "Check if parent still has small page"] for c in (K, M)}),
    ("collapse_fork_compound", {c: [
        "Allocate huge page", "Share huge page over fork()", "Split huge page PMD in child process",
        "Collapse PTE table full of compound pages in child",
        "Check if parent still has huge page"] for c in (K, M)}),
    ("collapse_max_ptes_shared", {
        K: ["Allocate huge page", "Share huge page over fork()", "Trigger CoW on page 255 of 512",
            "Maybe collapse with max_ptes_shared exceeded", "Trigger CoW on page 256 of 512",
            "Collapse with max_ptes_shared PTEs shared", "Check if parent still has huge page"],
        M: ["Allocate huge page", "Share huge page over fork()", "Trigger CoW on page 255 of 512",
            "Maybe collapse with max_ptes_shared exceeded",
            "Check if parent still has huge page"]}),
    ("madvise_collapse_existing_thps", {M: ["Allocate huge page",
                                            "Collapse fully populated PTE table"]}),
]


def anon_cases(contexts: tuple[str, ...] = (K, M), order: int | None = None) -> list[dict]:
    """All-ok cases of `./khugepaged [-s order] <ctx>:anon`, alloc_at_fault first."""
    cases = [_case("alloc_at_fault", None, None, order,
                   ["Allocate huge page on fault", "Split huge PMD on MADV_DONTNEED"])]
    for test, by_ctx in ANON_TESTS:
        for ctx in contexts:
            if ctx in by_ctx:
                cases.append(_case(test, ctx, "anon", order, by_ctx[ctx]))
    return cases


def _case(name: str, ctx: str | None, mem: str | None, order: int | None,
          steps: list[str]) -> dict:
    slow = 3.1 if ctx == K else 0.05
    return {"name": name, "context": ctx, "mem_type": mem, "order": order, "status": "pass",
            "duration": round(slow * len(steps) / 2 + 0.02, 2),
            "steps": [{"message": s, "outcome": "ok", "detail": ""} for s in steps]}


def file_cases_on_tmpfs() -> list[dict]:
    """`./khugepaged khugepaged:file <tmpfs dir>`: tmpfs cases print 'tmpfs... Skip'."""
    wanted = ["collapse_full", "collapse_single_pte_entry", "collapse_max_ptes_none",
              "collapse_single_pte_entry_compound", "collapse_full_of_compound"]
    cases = [_case("alloc_at_fault", None, None, None,
                   ["Allocate huge page on fault", "Split huge PMD on MADV_DONTNEED"])]
    for test, by_ctx in ANON_TESTS:
        if test in wanted:
            cases.append(_case(test, K, "file", None, by_ctx[K][-1:]))
    for case in cases:
        if case["name"] in ("collapse_max_ptes_none", "collapse_single_pte_entry_compound"):
            case.update(status="skip", duration=0.01,
                        steps=[{"message": "tmpfs", "outcome": "skip", "detail": "Skip"}])
    return cases


SELFTEST_DELTAS = {
    "thp_fault_alloc": 14, "thp_fault_fallback": 0, "thp_fault_fallback_charge": 0,
    "thp_collapse_alloc": 22, "thp_collapse_alloc_failed": 0, "pages_collapsed": 12,
    "full_scans": 58, "thp_split_pmd": 9, "thp_split_page": 2, "thp_deferred_split_page": 6,
    "thp_scan_exceed_none_pte": 2, "thp_scan_exceed_swap_pte": 2,
    "thp_scan_exceed_share_pte": 2, "thp_zero_page_alloc": 0,
    "nr_anon_transparent_hugepages": 0,
}


def summary(invocations: list[dict]) -> dict:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for inv in invocations:
        for case in inv["cases"]:
            key = {"pass": "passed", "skip": "skipped"}.get(case["status"], "failed")
            counts[key] += 1
    return counts


def metadata(revision: str, release: str) -> dict:
    return {
        "tree": "/home/dev/src/linux", "tree_kind": "git", "revision": revision,
        "kernel_release": release, "config_hash": "5d41402abc4b2a76",
        "kernel_key": "a1b2c3d4e5f60718", "image_hash": "9f86d081884c7d65",
        "qemu_version": "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)",
        "accel": "kvm", "accel_reason": "/dev/kvm is usable", "host": "buildbox",
        "thpvm_version": "0.1.0", "started": "2025-06-02T09:14:03+00:00",
        "finished": "2025-06-02T09:19:41+00:00",
        "durations": {"build": 241.7, "image": 1.3, "boot": 9.8, "selftest": 71.4,
                      "workloads": 13.6},
    }


def s1_workload() -> dict:
    return {
        "name": "s1_full_pmd",
        "description": "one fully written 2 MiB region, MADV_HUGEPAGE, wait for 2 full scans",
        "verdict": "match", "explanation": "all checkpoints fit alternative 'default'",
        "chosen_alternative": "default", "duration": 0.9,
        "checkpoints": [{
            "label": "after 2 full scans", "t": 0.8,
            "observed": {"counters": {"pages_collapsed": 1, "thp_collapse_alloc": 1,
                                      "thp_collapse_alloc_failed": 0, "full_scans": 2,
                                      "thp_fault_alloc": 0},
                         "regions": {"P": {"AnonHugePages": 2048, "RssAnon": 2048}}},
            "predicted": [{"name": "default",
                           "counters": {"pages_collapsed": 1, "thp_collapse_alloc": 1,
                                        "thp_collapse_alloc_failed": 0,
                                        "full_scans": {"min": 2, "max": None},
                                        "thp_fault_alloc": 0},
                           "regions": {"P": {"AnonHugePages": 2048, "RssAnon": 2048}}}],
        }],
    }


def s3_workload(collapsed_early: bool = False) -> dict:
    first = 1 if collapsed_early else 0
    checkpoints = []
    for label, t, obs, pred in [
        ("255 pages written, 2 passes", 0.6,
         {"pages_collapsed": first, "thp_collapse_alloc": first, "thp_scan_exceed_none_pte": 2,
          "full_scans": 2},
         {"pages_collapsed": 0, "thp_collapse_alloc": 0,
          "thp_scan_exceed_none_pte": {"min": 1, "max": 2}, "full_scans": {"min": 2, "max": None}}),
        ("page 255 written, 2 more passes", 1.3,
         {"pages_collapsed": 1, "thp_collapse_alloc": 1, "thp_scan_exceed_none_pte": 2,
          "full_scans": 4},
         {"pages_collapsed": 1, "thp_collapse_alloc": 1,
          "thp_scan_exceed_none_pte": {"min": 1, "max": 2}, "full_scans": {"min": 4, "max": None}}),
    ]:
        huge = 2048 if obs["pages_collapsed"] else 0
        checkpoints.append({
            "label": label, "t": t,
            "observed": {"counters": obs, "regions": {"P": {"AnonHugePages": huge}}},
            "predicted": [{"name": "default", "counters": pred,
                           "regions": {"P": {"AnonHugePages": 2048 if t > 1 else 0}}}],
        })
    return {
        "name": "s3_too_many_none",
        "description": "max_ptes_none=256, 255 pages written, then page 255",
        "verdict": "mismatch" if collapsed_early else "match",
        "explanation": ("checkpoint '255 pages written, 2 passes': pages_collapsed observed 1, "
                        "model 0 (257 none PTEs > max_ptes_none=256 should block the collapse)"
                        if collapsed_early else "all checkpoints fit alternative 'default'"),
        "chosen_alternative": None if collapsed_early else "default", "duration": 1.4,
        "checkpoints": checkpoints,
    }


def s9_workload() -> dict:
    """Eight PMDs, pages_to_scan=512: one collapse per 1 s wakeup; first wakeup lost."""
    checkpoints = []
    for i in range(11):
        t = 0.5 + i
        observed = {"pages_collapsed": min(i, 8), "thp_collapse_alloc": min(i, 8),
                    "full_scans": 1 if i >= 9 else 0}
        lost = observed
        scanned = {"pages_collapsed": min(i + 1, 8), "thp_collapse_alloc": min(i + 1, 8),
                   "full_scans": 1 if i >= 8 else 0}
        checkpoints.append({
            "label": f"wakeup {i + 1}", "t": t,
            "observed": {"counters": observed,
                         "regions": {"P": {"AnonHugePages": 2048 * min(i, 8)}}},
            "predicted": [
                {"name": "first-wakeup-scans", "counters": scanned,
                 "regions": {"P": {"AnonHugePages": 2048 * min(i + 1, 8)}}},
                {"name": "first-wakeup-lost", "counters": dict(lost),
                 "regions": {"P": {"AnonHugePages": 2048 * min(i, 8)}}},
            ],
        })
    return {
        "name": "s9_budget_wakeups",
        "description": "8 fully written PMDs, pages_to_scan=512, scan_sleep_millisecs=1000",
        "verdict": "match",
        "explanation": "all checkpoints fit alternative 'first-wakeup-lost' "
                       "(the first pass lost the mmap_lock trylock)",
        "chosen_alternative": "first-wakeup-lost", "duration": 11.2,
        "checkpoints": checkpoints,
    }


def run_counters(deltas: dict) -> dict:
    before = {"thp_fault_alloc": 3, "thp_collapse_alloc": 0, "pages_collapsed": 0,
              "full_scans": 4, "thp_split_pmd": 1, "nr_anon_transparent_hugepages": 1}
    before = {k: before.get(k, 0) for k in deltas}
    after = {k: before[k] + v for k, v in deltas.items()}
    return {"before": before, "after": after, "delta": dict(deltas)}


ARTIFACTS = {"serial_log": "serial.log", "dmesg": "dmesg.txt", "config": "config",
             "counters": "counters.json", "model": "model.json"}


def passing() -> dict:
    inv1 = {"argv": ["./khugepaged", "all:anon"], "exit_code": 0, "status": "pass",
            "duration": 58.2, "log": "selftest-1.log", "cases": anon_cases(),
            "counter_deltas": dict(SELFTEST_DELTAS)}
    inv2 = {"argv": ["./khugepaged", "-s", "4", "khugepaged:anon"], "exit_code": 0,
            "status": "pass", "duration": 13.2, "log": "selftest-2.log",
            "cases": anon_cases((K,), order=4),
            "counter_deltas": {"thp_fault_alloc": 2, "thp_collapse_alloc": 11,
                               "pages_collapsed": 11, "full_scans": 31, "thp_split_pmd": 4,
                               "thp_scan_exceed_none_pte": 1, "thp_scan_exceed_swap_pte": 1,
                               "thp_scan_exceed_share_pte": 1}}
    inv3 = {"argv": ["./khugepaged", "khugepaged:file", "/mnt/thp-tmpfs"], "exit_code": 0,
            "status": "pass", "duration": 9.7, "log": "selftest-3.log",
            "cases": file_cases_on_tmpfs(),
            "counter_deltas": {"thp_fault_alloc": 3, "thp_collapse_alloc": 2,
                               "pages_collapsed": 2, "full_scans": 8, "thp_split_pmd": 1,
                               "thp_file_alloc": 5, "thp_file_mapped": 5}}
    invocations = [inv1, inv2, inv3]
    workloads = [s1_workload(), s3_workload(), s9_workload()]
    deltas = dict(SELFTEST_DELTAS, pages_collapsed=35, thp_collapse_alloc=35, full_scans=97)
    return {
        "schema_version": 1, "run_id": "20250602-091403-run-0", "verdict": "pass",
        "exit_code": 0, "reason": "43 selftest cases passed, 2 skipped, 3 workloads match",
        "metadata": metadata("3f1c2a9b7e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b", "6.12.117"),
        "selftest": {"invocations": invocations, "summary": summary(invocations)},
        "workloads": workloads, "counters": run_counters(deltas),
        "console": {"events": [READY_EVENT]}, "artifacts": dict(ARTIFACTS),
    }


READY_EVENT = {"kind": "ready", "at": 3.41, "lines": ["thpvm: guest ready"]}


def case_fail() -> dict:
    result = copy.deepcopy(passing())
    result.update(run_id="20250602-093012-run-0", verdict="fail", exit_code=1,
                  reason="1 selftest case failed, 1 workload mismatched")
    result["metadata"].update(revision="8e2d1c0b9a8f7e6d5c4b3a29181706f5e4d3c2b1",
                              kernel_release="6.12.117-00001-g8e2d1c0b9a8f",
                              started="2025-06-02T09:30:12+00:00",
                              finished="2025-06-02T09:31:55+00:00")
    result["metadata"]["durations"]["build"] = 38.5
    inv = result["selftest"]["invocations"][0]
    inv["exit_code"] = 1
    inv["status"] = "fail"
    inv["counter_deltas"].update(pages_collapsed=13, thp_collapse_alloc=23,
                                 thp_scan_exceed_share_pte=1)
    case = next(c for c in inv["cases"]
                if c["name"] == "collapse_max_ptes_shared" and c["context"] == K)
    case["status"] = "fail"
    case["steps"][3] = {"message": "Maybe collapse with max_ptes_shared exceeded",
                        "outcome": "fail", "detail": "Fail"}
    result["selftest"]["summary"] = summary(result["selftest"]["invocations"])
    result["workloads"][1] = s3_workload(collapsed_early=True)
    result["console"]["events"] = [READY_EVENT, {
        "kind": "warning", "stage": "selftest", "line": 812, "at": 41.2,
        "lines": WARNING_LINES}]
    return result


WARNING_LINES = [
    "[   41.207315] ------------[ cut here ]------------",
    "[   41.207320] WARNING: CPU: 1 PID: 38 at mm/khugepaged.c:1297 "
    "hpage_collapse_scan_pmd+0x5b4/0x6a0",
    "[   41.207391] CPU: 1 UID: 0 PID: 38 Comm: khugepaged Not tainted "
    "6.12.117-00001-g8e2d1c0b9a8f #1",
    "[   41.207402] Call Trace:",
    "[   41.207404]  <TASK>",
    "[   41.207410]  khugepaged_scan_mm_slot.constprop.0+0x2f1/0x460",
    "[   41.207417]  khugepaged+0xe0/0x220",
    "[   41.207430]  kthread+0xd2/0x100",
    "[   41.207437]  ret_from_fork+0x34/0x50",
    "[   41.207444]  </TASK>",
    "[   41.207446] ---[ end trace 0000000000000000 ]---",
]

OOPS_LINES = [
    "[   52.733104] BUG: kernel NULL pointer dereference, address: 0000000000000008",
    "[   52.733118] #PF: supervisor read access in kernel mode",
    "[   52.733121] #PF: error_code(0x0000) - not-present page",
    "[   52.733127] Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI",
    "[   52.733133] CPU: 0 UID: 0 PID: 38 Comm: khugepaged Not tainted 6.12.117-dirty #2",
    "[   52.733140] RIP: 0010:collapse_huge_page+0x3a7/0x8e0",
    "[   52.733190] Call Trace:",
    "[   52.733192]  <TASK>",
    "[   52.733201]  hpage_collapse_scan_pmd+0x61c/0x6a0",
    "[   52.733207]  khugepaged_scan_mm_slot.constprop.0+0x2f1/0x460",
    "[   52.733212]  khugepaged+0xe0/0x220",
    "[   52.733224]  kthread+0xd2/0x100",
    "[   52.733230]  ret_from_fork+0x34/0x50",
    "[   52.733236]  </TASK>",
    "[   52.733301] ---[ end trace 0000000000000000 ]---",
    "[   52.733310] Kernel panic - not syncing: Fatal exception",
]


def crash() -> dict:
    result = copy.deepcopy(passing())
    result.update(run_id="20250602-101500-run-0", verdict="fail", exit_code=1,
                  reason="kernel oops during selftest "
                         "collapse_compound_extreme(khugepaged:anon)")
    result["metadata"].update(revision="3f1c2a9b7e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b-dirty",
                              kernel_release="6.12.117-dirty",
                              started="2025-06-02T10:15:00+0000",
                              finished="2025-06-02T10:16:31+0000")
    result["metadata"]["durations"] = {"build": 44.0, "image": 1.2, "boot": 9.9,
                                       "selftest": 35.4}
    cases = anon_cases()
    cut = next(i for i, c in enumerate(cases) if c["name"] == "collapse_compound_extreme")
    cases = cases[: cut + 1]
    cases[-1]["status"] = "crash"
    cases[-1]["steps"][1] = {"message": "Collapse PTE table full of different compound pages",
                             "outcome": "incomplete", "detail": "...."}
    inv = {"argv": ["./khugepaged", "all:anon"], "exit_code": None, "status": "crash",
           "duration": 35.4, "log": "selftest-1.log", "cases": cases, "counter_deltas": {}}
    result["selftest"] = {"invocations": [inv], "summary": summary([inv])}
    result["workloads"] = []
    before = run_counters(SELFTEST_DELTAS)["before"]
    result["counters"] = {"before": before, "after": {}, "delta": {}}
    result["console"]["events"] = [
        {"kind": "oops", "stage": "selftest", "line": 903, "lines": OOPS_LINES[:-1]},
        {"kind": "panic", "stage": "selftest", "line": 918, "lines": OOPS_LINES[-1:]},
    ]
    result["artifacts"] = {"serial_log": "serial.log", "config": "config",
                           "counters": "counters.json"}
    return result


def could_not_test() -> dict:
    meta = metadata("8e2d1c0b9a8f7e6d5c4b3a29181706f5e4d3c2b1", "")
    meta.update(kernel_release=None, kernel_key=None, image_hash=None, qemu_version=None,
                accel=None, accel_reason=None, started="2025-06-02T11:02:44+00:00",
                finished="2025-06-02T11:04:51+00:00", durations={"build": 127.3})
    return {
        "schema_version": 1, "run_id": "20250602-110244-run-0", "verdict": "could-not-test",
        "exit_code": 125,
        "reason": "kernel build failed: mm/khugepaged.c:1187:17: error: "
                  "'cc' undeclared (first use in this function)",
        "detail": "  CC      mm/khugepaged.o\n"
                  "mm/khugepaged.c: In function 'hpage_collapse_scan_pmd':\n"
                  "mm/khugepaged.c:1187:17: error: 'cc' undeclared (first use in this function)\n"
                  " 1187 |                 cc->node_load[node]++;\n"
                  "      |                 ^~\n"
                  "make[4]: *** [scripts/Makefile.build:229: mm/khugepaged.o] Error 1\n"
                  "make[3]: *** [scripts/Makefile.build:478: mm] Error 2",
        "metadata": meta, "workloads": [],
        "counters": {"before": {}, "after": {}, "delta": {}},
        "console": {"events": []},
        "artifacts": {"config": "config", "build_log": "build.log"},
    }


def main() -> None:
    for name, make in [("pass", passing), ("case-fail", case_fail), ("crash", crash),
                       ("could-not-test", could_not_test)]:
        path = HERE / f"{name}.json"
        path.write_text(json.dumps(make(), indent=2, sort_keys=True) + "\n")
        print(path)


if __name__ == "__main__":
    main()
