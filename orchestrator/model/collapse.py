"""collapse_huge_page() for anonymous memory at the PMD order (mm/khugepaged.c;
docs/khugepaged-model.md "Collapse"). Orders below the PMD (7.2): mthp.py.

Steps and the counters each touches:
  1. alloc_charge_folio(): allocation fails -> thp_collapse_alloc_failed,
     ALLOC_HUGE_PAGE_FAIL; else thp_collapse_alloc (before the memcg charge);
     charge fails -> CGROUP_CHARGE_FAIL.
  2. hugepage_vma_revalidate() + find_pmd_or_thp_or_none().
  3. __collapse_huge_page_swapin() when the scan saw swap entries.
  4./5. mmap write lock, revalidate again, detach the PTE table.
  6. __collapse_huge_page_isolate() (scan.isolate_check).
  7./8. copy into the new folio and install a huge PMD (writable iff VM_WRITE).
The simulation is atomic with respect to other processes, so revalidation only
fails if the scan itself was inconsistent; it is kept for fidelity.
"""

from __future__ import annotations

import logging

import numpy as np

from orchestrator.model.machine import PMD_ORDER, Machine, suitable_pmd
from orchestrator.model.mm import (
    HPAGE_PMD_NR,
    PMD_TABLE,
    PMD_THP,
    PTE_PRESENT,
    PTE_SWAP,
    STATE_MASK,
    WRITE,
    YOUNG,
    Mm,
)
from orchestrator.model.pages import NO_PAGE, PageStore
from orchestrator.model.results import Scan
from orchestrator.model.scan import isolate_check

log = logging.getLogger(__name__)


def alloc_charge_folio(m: Machine, order: int = PMD_ORDER) -> Scan:
    """alloc_charge_folio() (7.2.13 l.1232): the allocation and its memcg charge.
    vmstat THP_COLLAPSE_ALLOC[_FAILED] only for the PMD order; 7.2 also counts
    MTHP_STAT_COLLAPSE_ALLOC[_FAILED] for every order."""
    attempt = m.alloc_attempts
    m.alloc_attempts += 1
    if m.faults.alloc_fails(attempt):
        if order == PMD_ORDER:
            m.count("thp_collapse_alloc_failed")
        m.count_mthp(order, "collapse_alloc_failed")
        return Scan.ALLOC_HUGE_PAGE_FAIL
    if order == PMD_ORDER:
        m.count("thp_collapse_alloc")
    m.count_mthp(order, "collapse_alloc")
    if m.faults.charge_fails(attempt):
        return Scan.CGROUP_CHARGE_FAIL
    return Scan.SUCCEED


def hugepage_vma_revalidate(m: Machine, mm: Mm, addr: int, is_khugepaged: bool,
                            expect_anon: bool = True) -> Scan:
    """hugepage_vma_revalidate(): the VMA still covers the PMD and is still eligible."""
    vma = mm.find_vma(addr)
    if vma is None:
        return Scan.VMA_NULL
    if not suitable_pmd(vma, addr):
        return Scan.ADDRESS_RANGE
    if not m.vma_allowable(mm, vma, enforce_sysfs=is_khugepaged):
        return Scan.VMA_CHECK
    if expect_anon and not vma.anon_vma:
        return Scan.PAGE_ANON
    return Scan.SUCCEED


def swapin(m: Machine, mm: Mm, row: int, addr: int) -> Scan:
    """__collapse_huge_page_swapin(): do_swap_page() on every swap PTE. The
    pages come back young, exclusive, and writable iff the VMA is writable."""
    t = mm.tables
    state = t.pte[row] & STATE_MASK
    idx = np.flatnonzero(state == PTE_SWAP)
    vma = mm.vma_at(addr)
    bits = PTE_PRESENT | YOUNG | (WRITE if vma is not None and vma.writable else 0)
    t.pte[row, idx] = bits
    m.store.map_ptes(t.page[row, idx], +1)
    m.mark_dirty(row)
    return Scan.SUCCEED


def install_huge_pmd(m: Machine, mm: Mm, row: int, addr: int) -> None:
    """__collapse_huge_page_copy() + set_pmd_at(): the old pages are unmapped,
    the new folio is PMD-mapped, dirty and young, writable iff VM_WRITE."""
    t = mm.tables
    present = (t.pte[row] & STATE_MASK) == PTE_PRESENT
    m.store.map_ptes(t.page[row][present], -1)
    head = m.store.alloc_folio(HPAGE_PMD_NR)
    m.store.entire[head] = 1
    vma = mm.vma_at(addr)
    t.kind[row] = PMD_THP
    t.folio[row] = head
    t.pmd_bits[row] = YOUNG | (WRITE if vma is not None and vma.writable else 0)
    t.pte[row] = 0
    t.page[row] = NO_PAGE
    m.mark_dirty(row)


def collapse_huge_page(m: Machine, mm: Mm, row: int, addr: int, unmapped: int,
                       is_khugepaged: bool) -> Scan:
    """collapse_huge_page(mm, address, referenced, unmapped, cc[, HPAGE_PMD_ORDER]);
    returns its result, logged as the mm_collapse_huge_page trace event would."""
    result = _collapse_pmd(m, mm, row, addr, unmapped, is_khugepaged)
    m.log_collapse(mm, addr, PMD_ORDER, result,
                   "khugepaged" if is_khugepaged else "madvise_collapse")
    return result


def _collapse_pmd(m: Machine, mm: Mm, row: int, addr: int, unmapped: int,
                  is_khugepaged: bool) -> Scan:
    result = alloc_charge_folio(m)
    if result is not Scan.SUCCEED:
        return result
    result = hugepage_vma_revalidate(m, mm, addr, is_khugepaged)
    if result is not Scan.SUCCEED:
        return result
    if mm.tables.kind[row] != PMD_TABLE:  # find_pmd_or_thp_or_none()
        return Scan.PMD_MAPPED
    if unmapped:
        result = swapin(m, mm, row, addr)
        if result is not Scan.SUCCEED:
            return result
    # mmap_write_lock(); revalidate again; check_pmd_still_valid(): unchanged here
    result = isolate_check(m, mm, row, is_khugepaged)
    if result is not Scan.SUCCEED:
        return result
    install_huge_pmd(m, mm, row, addr)
    return Scan.SUCCEED


def install_huge_pmds(m: Machine, mm: Mm, r0: int, r1: int, writable: bool) -> None:
    """install_huge_pmd() for rows [r0, r1) at once: the same end state as collapsing
    them one after another (each old page unmapped, a new PMD-mapped folio each)."""
    t, st = mm.tables, m.store
    k = r1 - r0
    pte, page = t.pte[r0:r1], t.page[r0:r1]
    if not t.dirty[r0:r1].any() and int(t.n_present[r0:r1].sum()) == k * HPAGE_PMD_NR:
        unmap_pages(st, page.ravel())  # fast path: the (fresh) row summaries say all present
    else:
        unmap_pages(st, page[(pte & STATE_MASK) == PTE_PRESENT])
    heads = st.alloc_folios(k, HPAGE_PMD_NR)
    st.entire[heads] = 1
    t.kind[r0:r1], t.folio[r0:r1] = PMD_THP, heads
    t.pmd_bits[r0:r1] = YOUNG | (WRITE if writable else 0)
    pte[:] = 0
    page[:] = NO_PAGE
    m.mark_dirty(slice(r0, r1))


def unmap_pages(st: PageStore, ids: np.ndarray) -> None:
    """map_ptes(ids, -1) for distinct page ids. Fast path: distinct ids whose
    minimum and maximum are len(ids) - 1 apart are exactly that range of ids (pages
    touched in one go are allocated consecutively), so a slice does it."""
    if len(ids) == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo + 1 == len(ids):
        st.mapcount[lo:hi + 1] -= 1
    else:
        st.mapcount[ids] -= 1


def batch_collapsible(m: Machine, mm: Mm) -> bool:
    """May consecutive khugepaged collapses be done at once (khugepaged.py)? Only
    when nothing can differ from collapsing them one by one: no injected
    allocation or charge failure, no pending trylock failure."""
    f = m.faults
    return (f.alloc_fail in (False, frozenset()) and f.charge_fail in (False, frozenset())
            and not mm.trylock_failures)
