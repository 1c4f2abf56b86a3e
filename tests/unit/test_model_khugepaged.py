"""khugepaged_scan_mm_slot / khugepaged_do_scan accounting, registration, start/stop."""

from __future__ import annotations

import numpy as np
from model_helpers import machine, pmd, run_scan

from orchestrator.model.machine import Faults
from orchestrator.model.memory import madvise_flags, touch
from orchestrator.model.results import Scan


def populate(m, mm, start, pmds, hugepage=True):  # type: ignore[no-untyped-def]
    touch(m, mm, np.arange(start, pmd(start, pmds)), write=True)
    if hugepage:
        madvise_flags(m, mm, start, pmd(start, pmds), True)


def test_progress_counts_mm_visit_skipped_vma_and_512_per_pmd() -> None:
    m, k, mm, r = machine({"plain": 1, "a": 2}, max_ptes_none=0)
    populate(m, mm, r["plain"], 1, hugepage=False)  # ineligible VMA: +1
    touch(m, mm, np.arange(r["a"], r["a"] + 10), write=True)  # 502 none: exceeds 0
    touch(m, mm, np.arange(pmd(r["a"], 1), pmd(r["a"], 1) + 10), write=True)
    madvise_flags(m, mm, r["a"], pmd(r["a"], 2), True)
    assert k.mm_list == [mm]
    progress, result = k.scan_mm_slot(1 << 30)
    assert progress == 1 + 1 + 2 * 512
    assert result is Scan.EXCEED_NONE_PTE
    assert m.counters["full_scans"] == 1 and m.counters["thp_scan_exceed_none_pte"] == 2
    assert k.scan_mm is None


def test_budget_is_tested_only_after_a_pmd() -> None:
    m, k, mm, r = machine({"a": 2}, max_ptes_none=0)
    touch(m, mm, np.array([r["a"], pmd(r["a"], 1)]), write=True)
    madvise_flags(m, mm, r["a"], pmd(r["a"], 2), True)
    progress, _ = k.scan_mm_slot(1)  # one PMD is examined even though 1 <= progress
    assert progress == 513
    assert k.scan_mm is mm and k.scan_address == pmd(r["a"], 1)
    progress, _ = k.scan_mm_slot(512)  # budget used exactly at the last PMD
    assert progress == 513 and m.counters["full_scans"] == 0  # mm not finished
    progress, _ = k.scan_mm_slot(512)  # next call: +1, no VMA left: pass ends
    assert progress == 1 and m.counters["full_scans"] == 1


def test_collapse_attempt_ends_the_call_and_reentry_costs_one() -> None:
    m, k, mm, r = machine({"a": 2})
    populate(m, mm, r["a"], 2)
    assert k.scan_mm_slot(4096) == (513, Scan.SUCCEED)
    assert m.counters["pages_collapsed"] == 1 and m.counters["full_scans"] == 0
    assert k.scan_mm_slot(4096 - 513) == (513, Scan.SUCCEED)
    assert k.scan_mm_slot(4096) == (1, Scan.FAIL)
    assert m.counters["full_scans"] == 1


def test_trylock_failure_skips_the_mm_without_progress_but_counts_the_pass() -> None:
    m, k, mm, r = machine({"a": 1})
    populate(m, mm, r["a"], 1)
    mm.trylock_failures = 1
    assert k.scan_mm_slot(4096) == (0, Scan.FAIL)
    assert m.counters["full_scans"] == 1 and m.counters["pages_collapsed"] == 0


def test_do_scan_from_head_makes_at_most_one_pass() -> None:
    m, k, mm, r = machine({"a": 1})
    populate(m, mm, r["a"], 1)
    run_scan(k)
    assert m.counters["full_scans"] == 1 and m.counters["pages_collapsed"] == 1


def test_do_scan_starting_mid_pass_can_end_two_passes() -> None:
    m, k, mm, r = machine({"a": 2}, max_ptes_none=0)
    touch(m, mm, np.array([r["a"], pmd(r["a"], 1)]), write=True)
    madvise_flags(m, mm, r["a"], pmd(r["a"], 2), True)
    k.scan_mm_slot(1)  # cursor now in the middle of the pass
    run_scan(k)  # tail of pass 1, then all of pass 2 (budget 4096 suffices)
    assert m.counters["full_scans"] == 2
    # PMD0 (first call), PMD1 (tail of pass 1), PMD0 and PMD1 again (pass 2)
    assert m.counters["thp_scan_exceed_none_pte"] == 1 + 1 + 2


def test_second_allocation_failure_ends_the_wakeup() -> None:
    m, k, mm, r = machine({"a": 3}, faults=Faults(alloc_fail=True))
    populate(m, mm, r["a"], 3)
    gen = k.do_scan()
    assert next(gen)[0] == "alloc"  # first failure: khugepaged_alloc_sleep()
    assert list(gen) == []  # second failure: the wakeup ends
    assert m.counters["thp_collapse_alloc_failed"] == 2
    assert m.counters["full_scans"] == 0 and k.scan_address == pmd(r["a"], 2)


def test_round_robin_in_registration_order() -> None:
    from orchestrator.model.memory import fork

    m, k, mm, r = machine({"a": 1}, max_ptes_none=0)
    touch(m, mm, np.array([r["a"]]), write=True)
    madvise_flags(m, mm, r["a"], pmd(r["a"], 1), True)
    child = fork(m, mm, "child")
    assert k.mm_list == [mm, child] and child.registered  # khugepaged_fork()
    run_scan(k)
    assert [d["proc"] for d in m.log.records()] == ["parent", "child"]
    assert m.counters["full_scans"] == 1


def test_registration_needs_an_anon_vma_and_happens_once() -> None:
    m, k, mm, r = machine({"a": 1})
    touch(m, mm, np.array([r["a"]]), write=False)  # zero page: no anon_vma
    madvise_flags(m, mm, r["a"], pmd(r["a"], 1), True)
    assert not mm.registered
    touch(m, mm, np.array([r["a"] + 1]), write=True)  # 4 KiB fault: no registration
    assert not mm.registered
    madvise_flags(m, mm, r["a"], pmd(r["a"], 1), True)  # flags unchanged: no-op
    assert not mm.registered
    madvise_flags(m, mm, r["a"], pmd(r["a"], 1), False)
    madvise_flags(m, mm, r["a"], pmd(r["a"], 1), True)
    assert mm.registered and k.mm_list == [mm]


def test_6_1_registers_on_every_madv_hugepage() -> None:
    m, k, mm, r = machine({"a": 1}, version="6.1")
    touch(m, mm, np.array([r["a"]]), write=False)
    madvise_flags(m, mm, r["a"], pmd(r["a"], 1), True)
    touch(m, mm, np.array([r["a"] + 1]), write=True)
    madvise_flags(m, mm, r["a"], pmd(r["a"], 1), True)
    assert mm.registered


def test_enabled_never_stops_the_thread_and_the_list_survives() -> None:
    m, k, mm, r = machine({"a": 1})
    populate(m, mm, r["a"], 1)
    m.sysfs["enabled"] = "never"
    k.start_stop()
    assert not k.running and k.mm_list == [mm]
    m.sysfs["enabled"] = "madvise"
    k.start_stop()
    assert k.runnable()  # a new thread scans as soon as it runs
    k.wake_up()
    assert m.counters["full_scans"] == 1 and m.counters["pages_collapsed"] == 1


def test_sleep_knob_write_wakes_a_sleeping_thread() -> None:
    m, k, mm, r = machine({"a": 1}, scan_sleep_millisecs=10000)
    populate(m, mm, r["a"], 1)
    k.wake_up()  # first registration wakeup: one pass, then a 10 s sleep
    assert m.counters["full_scans"] == 1 and k.next_event_ms() == 10000
    assert not k.runnable()
    k.sleep_expire = 0  # scan_sleep_millisecs_store()
    assert k.runnable()
    k.wake_up()
    assert m.counters["full_scans"] == 2 and m.now_ms == 0
