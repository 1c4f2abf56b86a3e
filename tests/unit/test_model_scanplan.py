"""The model's fast paths against their reference paths (docs/khugepaged-model.md "Speed").

- Scan plans (model/scanplan.py): khugepaged keeps scan results across wakeups;
  `Khugepaged.reuse_plans = False` scans every PMD afresh when the cursor reaches
  it. Random layouts, settings and mutations between wakeups (sysfs knobs are
  written directly: do_scan() is driven by hand), every profile:
  counters, decision and collapse logs, page tables, pages and cursor must be equal.
- collapse.unmap_pages(): a slice for a contiguous range of ids, else a gather.
- collapse.install_huge_pmds(): all-present rows from the row summaries, else a mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.model.collapse import install_huge_pmds, unmap_pages
from orchestrator.model.khugepaged import Khugepaged
from orchestrator.model.machine import Faults, Machine
from orchestrator.model.madvise_collapse import madvise_collapse
from orchestrator.model.memory import (
    fork,
    madvise_dontneed,
    madvise_flags,
    madvise_pageout,
    mprotect,
    touch,
)
from orchestrator.model.mm import HPAGE_PMD_NR, Mm
from orchestrator.model.pages import PageStore
from tests.unit.model_helpers import machine, run_scan

VERSIONS = ("6.1", "6.12", "7.1", "7.2")
PMDS = 6  # region size: enough for plans to span several wakeups and VMAs

span = st.tuples(st.integers(0, PMDS * HPAGE_PMD_NR - 1), st.integers(1, 3 * HPAGE_PMD_NR))
ops = st.one_of(
    st.tuples(st.just("scan"), st.integers(1, 4)),
    st.tuples(st.just("touch"), span, st.booleans(), st.sampled_from([1, 1, 2, 7, 64])),
    st.tuples(st.just("child_touch"), span, st.booleans(), st.sampled_from([1, 3])),
    st.tuples(st.just("pageout"), span),
    st.tuples(st.just("dontneed"), span),
    st.tuples(st.just("hugepage"), span, st.booleans()),
    st.tuples(st.just("mprotect"), span, st.booleans()),
    st.tuples(st.just("collapse"), span),
    st.tuples(st.just("fork")),
    st.tuples(st.just("limit"), st.sampled_from(["max_ptes_none", "max_ptes_swap",
                                                  "max_ptes_shared"]),
              st.sampled_from([0, 1, 64, 255, 256, 511])),
    st.tuples(st.just("limit"), st.just("hugepages-64kB/enabled"),
              st.sampled_from(["never", "madvise", "always"])),
)
knobs = st.fixed_dictionaries({
    "max_ptes_none": st.sampled_from([0, 8, 255, 511]),
    "max_ptes_swap": st.sampled_from([0, 4, 64]),
    "max_ptes_shared": st.sampled_from([0, 16, 256]),
    "pages_to_scan": st.sampled_from([1, 8, 100, 512, 1500, 4096, 8 * 4096]),
    "hugepages-64kB/enabled": st.sampled_from(["never", "madvise", "always"]),
    "hugepages-16kB/enabled": st.sampled_from(["never", "never", "madvise"]),
})
faults = st.sampled_from([Faults(), Faults(), Faults(alloc_fail=frozenset({1, 4})),
                          Faults(charge_fail=frozenset({0}))])


def _apply(m: Machine, k: Khugepaged, mms: list[Mm], base: int, op: tuple[Any, ...]) -> None:
    """One mutation (or khugepaged wakeups) on the machine."""
    kind, *args = op
    mm = mms[0]
    if kind == "scan":
        for _ in range(args[0]):
            run_scan(k)
        return
    if kind == "fork":
        if len(mms) == 1:
            mms.append(fork(m, mm, "child"))
        return
    if kind == "limit":
        m.sysfs[args[0]] = args[1]
        return
    lo, hi = base + args[0][0], base + min(args[0][0] + args[0][1], PMDS * HPAGE_PMD_NR)
    if kind in ("touch", "child_touch"):
        target = mms[-1] if kind == "child_touch" else mm
        touch(m, target, np.arange(lo, hi, args[2]), write=args[1])
    elif kind == "pageout":
        madvise_pageout(m, mm, lo, hi)
    elif kind == "dontneed":
        madvise_dontneed(m, mm, lo, hi)
    elif kind == "hugepage":
        madvise_flags(m, mm, lo, hi, args[1])
    elif kind == "mprotect":
        mprotect(m, mm, lo, hi, args[1])
    elif kind == "collapse":
        madvise_collapse(m, mm, lo, hi)


def _snapshot(m: Machine, k: Khugepaged, mms: list[Mm]) -> Any:
    tables = [(x.name, x.tables.kind.tolist(), x.tables.pte.tobytes(), x.tables.page.tobytes(),
               x.tables.folio.tolist(), x.tables.pmd_bits.tolist()) for x in mms]
    st_ = m.store
    pages = (st_.n, st_.mapcount[:st_.n].tobytes(), st_.head[:st_.n].tobytes(),
             st_.entire[:st_.n].tobytes())
    return (dict(m.counters), m.log.records(), list(m.collapse_log), tables, pages,
            k.scan_address, k.scan_mm.name if k.scan_mm else None, list(m.warnings))


def _run(version: str, settings_: dict[str, Any], flt: Faults, script: list[Any],
         reuse: bool) -> list[Any]:
    m, k, mm, start = machine({"a": PMDS}, version=version, faults=flt, **settings_)
    k.reuse_plans = reuse
    base = start["a"]
    touch(m, mm, np.arange(base, base + PMDS * HPAGE_PMD_NR, 3), write=True)
    madvise_flags(m, mm, base, base + PMDS * HPAGE_PMD_NR, True)
    mms = [mm]
    snaps = []
    for op in script:
        _apply(m, k, mms, base, op)
        snaps.append(_snapshot(m, k, mms))
    return snaps


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(knobs, faults, st.lists(ops, min_size=1, max_size=14))
def test_scan_plans_equal_fresh_scans(version: str, knobs: dict[str, Any], faults: Faults,
                                      script: list[Any]) -> None:
    """Scan plans kept across wakeups predict exactly what scanning each PMD when the
    cursor reaches it predicts, whatever happens between wakeups."""
    script = [*script, ("scan", 3)]
    assert _run(version, knobs, faults, script, True) == _run(version, knobs, faults, script,
                                                               False)


def test_scan_plans_are_reused_and_grow() -> None:
    """The fast path is taken: a pass over 64 written PMDs with the default budget
    builds a handful of growing plans, not one per wakeup."""
    m, k, mm, start = machine({"a": 64}, version="7.2")
    a = start["a"]
    touch(m, mm, np.arange(a, a + 64 * HPAGE_PMD_NR), write=True)
    mm.tables.pte[:] &= ~np.uint8(4)  # old PTEs: nothing collapses
    m.mark_dirty(slice(None))
    madvise_flags(m, mm, a, a + 64 * HPAGE_PMD_NR, True)
    sizes = []
    while m.counters["full_scans"] < 1:
        run_scan(k)
        assert k.plan is not None
        if not sizes or sizes[-1] != (k.plan.b0, k.plan.n):
            sizes.append((k.plan.b0, k.plan.n))
    # the fourth ends at the VMA's end; the wakeup that ended the pass began the next one
    assert [n for _, n in sizes[:4]] == [8, 16, 32, 8] and len(sizes) <= 5


@settings(deadline=None)  # a loaded host stalls single examples
@given(st.integers(0, 1000), st.integers(1, 600), st.booleans(), st.randoms())
def test_unmap_pages_fast_path_equals_gather(first: int, n: int, contiguous: bool,
                                             rnd: Any) -> None:
    """A slice over a contiguous id range decrements exactly the pages a gather does."""
    ids = np.arange(first, first + n, dtype=np.int32)
    if not contiguous and n > 1:
        ids = np.array(rnd.sample(range(first, first + 2 * n), n), np.int32)
    rnd.shuffle(ids)
    fast, ref = PageStore(), PageStore()
    for s in (fast, ref):
        s.alloc(first + 2 * n + 1)
        s.mapcount[:] = 2
    unmap_pages(fast, ids)
    ref.mapcount[ids] -= 1
    assert np.array_equal(fast.mapcount, ref.mapcount)


@pytest.mark.parametrize("stride", [1, 2])
def test_install_huge_pmds_summary_fast_path_equals_mask(stride: int) -> None:
    """install_huge_pmds() with fresh summaries (fast path when every PTE is present)
    leaves the same tables and pages as with stale ones (the mask)."""
    def run(fresh: bool) -> Any:
        m, _, mm, start = machine({"a": 4}, version="7.2")
        a = start["a"]
        touch(m, mm, np.arange(a, a + 4 * HPAGE_PMD_NR, stride), write=True)
        r0 = m.blocks.row_of[a // HPAGE_PMD_NR]
        if fresh:
            mm.tables.refresh(m.store, m.profile.shared_test)
        install_huge_pmds(m, mm, r0, r0 + 4, True)
        return _snapshot(m, m.khugepaged, [mm])

    assert run(True) == run(False)
