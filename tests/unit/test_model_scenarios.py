"""The deterministic scenarios S0-S13 of KHUGEPAGED_MODEL_SPEC.md section 11, as
workload specs, with their expected deltas (per version where they differ).

Harness H: enabled=madvise, use_zero_page=0, scan_sleep 10 ms, alloc_sleep 10 ms,
pages_to_scan 4096, max_ptes_none 511, swap 64, shared 256; the region is
written first, then MADV_HUGEPAGE, then the deltas are read once full_scans
advanced by 2. The first pass may skip P (mmap_lock contention), so per-pass
expectations are stated per pass that actually scanned P.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.model import Faults, Outcome, Prediction, predict
from orchestrator.spec import parse_spec

H = """
format = 1
name = "{name}"
[settings]
enabled = "{enabled}"
use_zero_page = 0
scan_sleep_millisecs = {sleep}
alloc_sleep_millisecs = 10
pages_to_scan = {pages_to_scan}
max_ptes_none = {none}
max_ptes_swap = 64
max_ptes_shared = 256
"""


def spec(name: str, body: str, *, enabled: str = "madvise", none: int = 511,
         sleep: int = 10, pages_to_scan: int = 4096, regions: str = "") -> Any:
    regions = regions or '[[regions]]\nname = "a"\npmds = 1\n'
    text = H.format(name=name, enabled=enabled, none=none, sleep=sleep,
                    pages_to_scan=pages_to_scan) + regions + body
    return parse_spec(text, f"<{name}>")


def steps(*items: str) -> str:
    return "".join(f"[[steps]]\n{s.strip()}\n" for s in items)


TOUCH_ALL = 'op = "touch"\nregion = "a"\npages = "all"'
MADV_HUGE = 'op = "madvise"\nregion = "a"\nadvice = "hugepage"'
WAIT2 = 'op = "wait_scans"\ncount = 2\nlabel = "end"'


def counters(o: Outcome) -> dict[str, int]:
    return dict(o.observation.counters)


def region(o: Outcome, proc: str = "parent", name: str = "a") -> Any:
    for p, n, st in o.observation.regions:
        if (p, n) == (proc, name):
            return st
    raise KeyError((proc, name))


def scanned_passes(o: Outcome, reason: str) -> int:
    """Passes that walked P's VMAs: full_scans, minus a lock-contended first pass."""
    return counters(o)["full_scans"] - ("trylock failed" in reason)


def check_each(pred: Prediction, label: str,
               expect: Callable[[int], dict[str, int]]) -> list[int]:
    """Every outcome of checkpoint `label` matches `expect(scanned passes)` for
    every schedule that produces it; returns the scanned-pass counts seen."""
    cp = next(c for c in pred.checkpoints if c.label == label)
    assert cp.outcomes
    seen = []
    for o in cp.outcomes:
        for reason in o.reasons:
            n = scanned_passes(o, reason)
            seen.append(n)
            for k, v in expect(n).items():
                assert counters(o)[k] == v, (k, reason, counters(o))
    return sorted(set(seen))


ZERO_EXCEED = {"thp_scan_exceed_none_pte": 0, "thp_scan_exceed_swap_pte": 0,
               "thp_scan_exceed_share_pte": 0}


def test_s0_fault_thp_not_khugepaged() -> None:
    p = predict(spec("s0", steps('op = "touch"\nregion = "a"\npages = "0"', WAIT2),
                     enabled="always"))
    check_each(p, "end", lambda n: {"thp_fault_alloc": 1, "thp_collapse_alloc": 0,
                                    "pages_collapsed": 0})
    for o in p.checkpoints[0].outcomes:
        assert region(o).anon_huge_kb == 2048
        assert counters(o)["full_scans"] >= 2  # registered by the fault
    decisions = p.schedules[0].decisions
    assert decisions and all(d["result"] == "PMD_MAPPED" for d in decisions)


def test_s1_full_pmd() -> None:
    p = predict(spec("s1", steps(TOUCH_ALL, MADV_HUGE, WAIT2)))
    seen = check_each(p, "end", lambda n: {"pages_collapsed": 1, "thp_collapse_alloc": 1,
                                           "thp_collapse_alloc_failed": 0,
                                           "thp_fault_alloc": 0, **ZERO_EXCEED})
    assert seen == [1, 2, 3]
    for o in p.checkpoints[0].outcomes:
        st = region(o)
        assert (st.anon_huge_kb, st.rss_kb, st.huge_pmds) == (2048, 2048, (0,))
    first = p.schedules[0].decisions
    assert [d["result"] for d in first] == ["SUCCEED", "PMD_MAPPED", "PMD_MAPPED"]


def test_s1_first_wakeup_lost_to_lock_contention_is_an_alternative() -> None:
    p = predict(spec("s1", steps(TOUCH_ALL, MADV_HUGE, WAIT2)))
    reasons = [r for o in p.checkpoints[0].outcomes for r in o.reasons]
    assert any("trylock failed" in r for r in reasons)
    assert any("trylock failed" not in r for r in reasons)
    fs = sorted(counters(o)["full_scans"] for o in p.checkpoints[0].outcomes)
    assert fs == [2, 3]


def test_s2_single_page() -> None:
    p = predict(spec("s2", steps('op = "touch"\nregion = "a"\npages = "0"', MADV_HUGE, WAIT2)))
    check_each(p, "end", lambda n: {"pages_collapsed": 1, "thp_collapse_alloc": 1})
    for o in p.checkpoints[0].outcomes:
        assert (region(o).rss_kb, region(o).anon_huge_kb) == (2048, 2048)


def test_s2_before_madvise_rss_is_one_page() -> None:
    p = predict(spec("s2", steps('op = "touch"\nregion = "a"\npages = "0"',
                                 'op = "checkpoint"\nlabel = "before"', MADV_HUGE, WAIT2)))
    (o,) = p.checkpoints[0].outcomes
    assert region(o).rss_kb == 4 and region(o).anon_huge_kb == 0


def test_s3_too_many_none_then_s3b() -> None:
    body = steps('op = "touch"\nregion = "a"\npages = "0-254"', MADV_HUGE, WAIT2,
                 'op = "touch"\nregion = "a"\npages = "255"',
                 'op = "wait_scans"\ncount = 1\nlabel = "s3b"')
    p = predict(spec("s3", body, none=256))
    seen = check_each(p, "end", lambda n: {"pages_collapsed": 0, "thp_collapse_alloc": 0,
                                           "thp_scan_exceed_none_pte": n})
    assert seen == [1, 2, 3]
    for o in p.checkpoints[0].outcomes:
        assert region(o).anon_huge_kb == 0
    # S3b: the next pass collapses and the exceed counter stops growing
    check_each(p, "s3b", lambda n: {"pages_collapsed": 1, "thp_collapse_alloc": 1,
                                    "thp_scan_exceed_none_pte": n - 1})
    for o in p.checkpoints[1].outcomes:
        assert region(o).anon_huge_kb == 2048


def test_s3_decision_log_counts() -> None:
    p = predict(spec("s3", steps('op = "touch"\nregion = "a"\npages = "0-254"', MADV_HUGE,
                                 WAIT2), none=256))
    d = p.schedules[0].decisions[0]
    # the loop stops at the 257th none PTE: pages 0..254 present, 255..511 none
    assert d["result"] == "EXCEED_NONE_PTE"
    assert (d["none_or_zero"], d["referenced"], d["writable"], d["unmapped"]) == (257, 255, 1, 0)


def test_s4_max_ptes_none_zero() -> None:
    body = steps('op = "touch"\nregion = "a"\npages = "0-510"', MADV_HUGE, WAIT2,
                 'op = "touch"\nregion = "a"\npages = "511"',
                 'op = "wait_scans"\ncount = 1\nlabel = "filled"')
    p = predict(spec("s4", body, none=0))
    check_each(p, "end", lambda n: {"pages_collapsed": 0, "thp_collapse_alloc": 0,
                                    "thp_scan_exceed_none_pte": n})
    for o in p.checkpoints[1].outcomes:
        assert (counters(o)["pages_collapsed"], counters(o)["thp_collapse_alloc"]) == (1, 1)


def test_s5_nohugepage_neighbour() -> None:
    regions = '[[regions]]\nname = "a"\npmds = 1\n[[regions]]\nname = "b"\npmds = 1\n'
    body = steps(TOUCH_ALL, 'op = "touch"\nregion = "b"', MADV_HUGE,
                 'op = "madvise"\nregion = "b"\nadvice = "nohugepage"', WAIT2)
    p = predict(spec("s5", body, regions=regions))
    check_each(p, "end", lambda n: {"pages_collapsed": 1, "thp_collapse_alloc": 1,
                                    **ZERO_EXCEED})
    for o in p.checkpoints[0].outcomes:
        assert region(o, name="b").anon_huge_kb == 0
        assert region(o, name="a").anon_huge_kb == 2048
    # B never reaches the PMD scan: it is skipped at VMA level
    assert all(d["region"] == "a" for d in p.schedules[0].decisions)


def test_s6_thp_never_then_madv_collapse() -> None:
    body = steps(TOUCH_ALL, MADV_HUGE, 'op = "sleep"\nms = 3000',
                 'op = "checkpoint"\nlabel = "after-3s"',
                 'op = "madvise"\nregion = "a"\nadvice = "collapse"\nexpect = "ok"',
                 'op = "checkpoint"\nlabel = "after-collapse"')
    p = predict(spec("s6", body, enabled="never"))
    (o,) = p.checkpoints[0].outcomes
    assert all(v == 0 for v in counters(o).values())
    (o,) = p.checkpoints[1].outcomes
    c = counters(o)
    assert (c["thp_collapse_alloc"], c["pages_collapsed"], c["full_scans"]) == (1, 0, 0)
    assert region(o).anon_huge_kb == 2048
    assert dict(o.observation.results)[4] == "ok"


@pytest.mark.parametrize(("paged_out", "collapses"), [(65, False), (64, True)])
def test_s7_swap_limit(paged_out: int, collapses: bool) -> None:
    body = steps(TOUCH_ALL, MADV_HUGE.replace("hugepage", "pageout") +
                 f'\npages = "0-{paged_out - 1}"', 'op = "checkpoint"\nlabel = "paged"',
                 MADV_HUGE, WAIT2)
    p = predict(spec("s7", body))
    (o,) = p.checkpoints[0].outcomes
    assert region(o).swap_kb == 4 * paged_out
    if collapses:
        check_each(p, "end", lambda n: {"pages_collapsed": 1, "thp_collapse_alloc": 1,
                                        "thp_scan_exceed_swap_pte": 0})
        for o in p.checkpoints[1].outcomes:
            assert (region(o).swap_kb, region(o).anon_huge_kb) == (0, 2048)
    else:
        check_each(p, "end", lambda n: {"pages_collapsed": 0, "thp_collapse_alloc": 0,
                                        "thp_scan_exceed_swap_pte": n})
        for o in p.checkpoints[1].outcomes:
            assert region(o).swap_kb == 260


@pytest.mark.parametrize("version", ["6.1", "6.12", "7.1"])
@pytest.mark.parametrize(("k", "collapses"), [(255, False), (256, True)])
def test_s8_shared_after_fork(k: int, collapses: bool, version: str) -> None:
    body = steps(TOUCH_ALL, 'op = "fork"',
                 f'op = "touch"\nproc = "child"\nregion = "a"\npages = "0-{k - 1}"',
                 'op = "madvise"\nproc = "child"\nregion = "a"\nadvice = "hugepage"', WAIT2)
    p = predict(spec("s8", body), version)
    if collapses:
        check_each(p, "end", lambda n: {"pages_collapsed": 1, "thp_collapse_alloc": 1,
                                        "thp_scan_exceed_share_pte": 0})
    else:
        seen = check_each(p, "end", lambda n: {"pages_collapsed": 0,
                                               "thp_scan_exceed_share_pte": n})
        assert seen == [1, 2, 3]
    for o in p.checkpoints[0].outcomes:
        assert region(o, "child").anon_huge_kb == (2048 if collapses else 0)
        assert (region(o, "parent").anon_huge_kb, region(o, "parent").rss_kb) == (0, 2048)


def test_s9_one_pmd_per_wakeup() -> None:
    regions = '[[regions]]\nname = "a"\npmds = 8\n'
    body = steps(TOUCH_ALL, MADV_HUGE, 'op = "wait_scans"\ncount = 1\nlabel = "end"')
    p = predict(spec("s9", body, sleep=1000, pages_to_scan=512, regions=regions))
    outcomes = p.checkpoints[0].outcomes
    done = [o for o in outcomes if counters(o)["pages_collapsed"] == 8]
    assert done and all(counters(o)["thp_collapse_alloc"] == 8 for o in done)
    uncontended = next(o for o in done if all("trylock failed" not in r for r in o.reasons))
    assert uncontended.time_ms == 8000 and counters(uncontended)["full_scans"] == 1
    # the time series: one collapse per wakeup, at 0, 1 s, ... 7 s
    d = p.schedules[0].decisions
    collapses = [(x["time_ms"], x["pmd"]) for x in d if x["result"] == "SUCCEED"]
    assert collapses == [(1000 * i, i) for i in range(8)]
    # the 9th wakeup ends the pass and examines the already-huge PMD0 of the next
    assert [(x["time_ms"], x["pmd"], x["result"]) for x in d[8:]] == [(8000, 0, "PMD_MAPPED")]
    # a lost first wakeup: the wait may end on the skipped pass, before any collapse
    assert any(counters(o)["pages_collapsed"] == 0 for o in outcomes)


def test_s9b_default_budget() -> None:
    regions = '[[regions]]\nname = "a"\npmds = 16\n'
    body = steps(TOUCH_ALL, MADV_HUGE, 'op = "wait_scans"\ncount = 1\nlabel = "end"')
    p = predict(spec("s9b", body, sleep=1000, regions=regions))
    d = p.schedules[0].decisions
    per_wakeup: dict[int, list[str]] = {}
    for x in d:
        per_wakeup.setdefault(x["time_ms"], []).append(x["result"])
    assert per_wakeup[0] == ["SUCCEED"] * 8
    assert per_wakeup[1000] == ["SUCCEED"] * 8
    assert per_wakeup[2000] == ["PMD_MAPPED"] * 8  # tail, full_scans +1, 8 huge PMDs


def test_s10_memcg_charge_failure() -> None:
    p = predict(spec("s10", steps(TOUCH_ALL, MADV_HUGE, WAIT2)),
                faults=Faults(charge_fail=True))
    check_each(p, "end", lambda n: {"thp_collapse_alloc": n, "thp_collapse_alloc_failed": 0,
                                    "pages_collapsed": 0})
    for o in p.checkpoints[0].outcomes:
        assert region(o).anon_huge_kb == 0
    assert {d["result"] for d in p.schedules[0].decisions} == {"CGROUP_CHARGE_FAIL"}


def test_alloc_failure_sleeps_alloc_sleep_millisecs() -> None:
    regions = '[[regions]]\nname = "a"\npmds = 2\n'
    p = predict(spec("alloc", steps(TOUCH_ALL, MADV_HUGE, WAIT2.replace("2", "1")),
                     sleep=1000, regions=regions), faults=Faults(alloc_fail=frozenset({0})))
    d = p.schedules[0].decisions
    assert [(x["time_ms"], x["pmd"], x["result"]) for x in d] == [
        (0, 0, "ALLOC_HUGE_PAGE_FAIL"), (12, 1, "SUCCEED")]  # alloc_sleep 10 ms -> 3 jiffies
    outcomes = p.checkpoints[0].outcomes
    scanned = [o for o in outcomes if counters(o)["pages_collapsed"]]
    assert scanned and all(counters(o)["thp_collapse_alloc_failed"] == 1 for o in scanned)
    assert all(counters(o)["thp_collapse_alloc"] == 1 for o in scanned)


@pytest.mark.parametrize(("setup", "expect", "alloc"), [
    ('op = "touch"\nregion = "a"\npages = "0"', "ok", 1),
    ('op = "checkpoint"\nlabel = "untouched"', "EINVAL", 0),
    ('op = "madvise"\nregion = "a"\nadvice = "nohugepage"', "EINVAL", 0),
])
def test_s11_madv_collapse_ignores_limits(setup: str, expect: str, alloc: int) -> None:
    body = steps(setup, 'op = "madvise"\nregion = "a"\nadvice = "collapse"',
                 'op = "checkpoint"\nlabel = "end"')
    p = predict(spec("s11", body, enabled="never", none=0))
    (o,) = p.checkpoints[-1].outcomes
    assert dict(o.observation.results)[1] == expect
    c = counters(o)
    assert (c["thp_collapse_alloc"], c["pages_collapsed"], c["full_scans"]) == (alloc, 0, 0)
    assert region(o).anon_huge_kb == 2048 * alloc


def test_s11_already_thp_is_ok_without_allocation() -> None:
    body = steps('op = "touch"\nregion = "a"\npages = "0"',
                 'op = "madvise"\nregion = "a"\nadvice = "collapse"',
                 'op = "madvise"\nregion = "a"\nadvice = "collapse"',
                 'op = "checkpoint"\nlabel = "end"')
    (o,) = predict(spec("s11b", body, enabled="never", none=0)).checkpoints[0].outcomes
    assert dict(o.observation.results) == {1: "ok", 2: "ok"}
    assert counters(o)["thp_collapse_alloc"] == 1


@pytest.mark.parametrize(("none", "collapses"), [(511, True), (510, False)])
def test_s12_zero_page_ptes_count_as_none(none: int, collapses: bool) -> None:
    body = steps('op = "touch"\nregion = "a"\npages = "0"',
                 'op = "touch"\nregion = "a"\npages = "1-511"\naccess = "read"',
                 'op = "checkpoint"\nlabel = "before"', MADV_HUGE, WAIT2)
    p = predict(spec("s12", body, none=none))
    (o,) = p.checkpoints[0].outcomes
    assert region(o).rss_kb == 4  # zero-page PTEs are not in Rss
    if collapses:
        check_each(p, "end", lambda n: {"pages_collapsed": 1, "thp_collapse_alloc": 1})
        for o in p.checkpoints[1].outcomes:
            assert region(o).rss_kb == 2048
    else:
        check_each(p, "end", lambda n: {"pages_collapsed": 0, "thp_scan_exceed_none_pte": n})


def test_s12_read_only_touching_never_registers() -> None:
    body = steps('op = "touch"\nregion = "a"\naccess = "read"', MADV_HUGE,
                 'op = "sleep"\nms = 1000', 'op = "checkpoint"\nlabel = "end"')
    (o,) = predict(spec("s12r", body)).checkpoints[0].outcomes
    assert all(v == 0 for v in counters(o).values())


@pytest.mark.parametrize(("version", "collapses"), [("6.1", False), ("6.12", False),
                                                    ("7.1", True)])
def test_s13_write_protected_range(version: str, collapses: bool) -> None:
    body = steps(TOUCH_ALL, 'op = "mprotect"\nregion = "a"\nprot = "r"', MADV_HUGE, WAIT2)
    p = predict(spec("s13", body), version)
    if collapses:
        check_each(p, "end", lambda n: {"pages_collapsed": 1, "thp_collapse_alloc": 1})
    else:
        check_each(p, "end", lambda n: {"pages_collapsed": 0, "thp_collapse_alloc": 0,
                                        **ZERO_EXCEED})
        assert {d["result"] for d in p.schedules[0].decisions} == {"PAGE_RO"}


@pytest.mark.parametrize(("version", "huge"), [("6.12", (0,)), ("7.1", (0, 2))])
def test_madv_collapse_empty_pmd_between_populated_ones(version: str,
                                                        huge: tuple[int, ...]) -> None:
    """6.12: an empty PMD under an existing PMD table is PMD_NONE, which ends
    MADV_COLLAPSE's walk; 7.0's NO_PTE_TABLE is in the continue set, so the
    block after it is still collapsed. Both return EINVAL (not every block)."""
    regions = '[[regions]]\nname = "a"\npmds = 3\n'
    body = steps('op = "touch"\nregion = "a"\npages = "0-511,1024-1535"',
                 'op = "madvise"\nregion = "a"\nadvice = "collapse"',
                 'op = "checkpoint"\nlabel = "end"')
    p = predict(spec("mc", body, regions=regions), version)
    (o,) = p.checkpoints[0].outcomes
    assert dict(o.observation.results)[1] == "EINVAL"
    assert region(o).huge_pmds == huge
    codes = [d["result"] for d in p.schedules[0].decisions]
    assert codes[1] == ("PMD_NONE" if version == "6.12" else "NO_PTE_TABLE")
