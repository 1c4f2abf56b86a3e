"""mTHP collapse in khugepaged (7.2; docs/khugepaged-model.md "mTHP collapse").

Mirrors, in 7.2.13 mm/khugepaged.c:
  collapse_max_ptes_none()    l.365  per-order none/zero limit (0/511 rule, warn once)
  collapse_max_ptes_shared()  l.404  0 below the PMD order
  collapse_max_ptes_swap()    l.432  0 below the PMD order
  max_order_from_offset()     l.1456 alignment caps the next order
  mthp_collapse()             l.1483 the descent from the PMD order to order 2
  collapse_huge_page(order)   l.1271 below the PMD order: alloc_charge_folio (l.1232),
                              __collapse_huge_page_swapin (l.1141, bails on a swap PTE),
                              __collapse_huge_page_isolate (l.661), map the new folio by PTEs
The PMD order itself goes through collapse.collapse_huge_page().
"""

from __future__ import annotations

import logging

import numpy as np

from orchestrator.model.collapse import alloc_charge_folio, collapse_huge_page
from orchestrator.model.machine import PMD_BIT, PMD_ORDER, Machine
from orchestrator.model.mm import (
    HPAGE_PMD_NR,
    PMD_TABLE,
    PMD_THP,
    PTE_PRESENT,
    PTE_SWAP,
    PTE_ZERO,
    STATE_MASK,
    WRITE,
    YOUNG,
    Mm,
)
from orchestrator.model.results import Scan

log = logging.getLogger(__name__)

MIN_MTHP_ORDER = 2  # KHUGEPAGED_MIN_MTHP_ORDER
MAX_PTES_LIMIT = HPAGE_PMD_NR - 1  # KHUGEPAGED_MAX_PTES_LIMIT
WARN_MAX_PTES_NONE = ("mTHP collapse does not support max_ptes_none values other than 0 or "
                      "511, defaulting to 0.")

#: mthp_collapse(): results after which a lower order is tried at the same offset
FALLBACK = frozenset({
    Scan.ALLOC_HUGE_PAGE_FAIL, Scan.LACK_REFERENCED_PAGE, Scan.EXCEED_NONE_PTE,
    Scan.EXCEED_SWAP_PTE, Scan.EXCEED_SHARED_PTE, Scan.PAGE_LOCK, Scan.PAGE_COUNT,
    Scan.PAGE_NULL, Scan.DEL_PAGE_LRU, Scan.PTE_NON_PRESENT, Scan.PTE_UFFD_WP,
    Scan.PAGE_LAZYFREE,
})
#: ... and after which the offset advances past the candidate
NEXT_OFFSET = frozenset({Scan.SUCCEED, Scan.PTE_MAPPED_HUGEPAGE})


def max_ptes_none(m: Machine, order: int, is_khugepaged: bool = True) -> int:
    """collapse_max_ptes_none(cc, vma, order) (l.365): MADV_COLLAPSE 512; the PMD
    order the sysfs value; below it 511 -> (1<<order)-1, 0 -> 0, else 0 with a
    one-time kernel warning."""
    if not is_khugepaged:
        return HPAGE_PMD_NR
    v = int(m.sysfs["max_ptes_none"])
    if order == PMD_ORDER:
        return v
    if v == MAX_PTES_LIMIT:
        return (1 << order) - 1
    if v and WARN_MAX_PTES_NONE not in m.warnings:
        m.warnings.append(WARN_MAX_PTES_NONE)  # pr_warn_once()
    return 0


def max_ptes_shared(m: Machine, order: int, is_khugepaged: bool = True) -> int:
    """collapse_max_ptes_shared(cc, order) (l.404)."""
    if not is_khugepaged:
        return HPAGE_PMD_NR
    return int(m.sysfs["max_ptes_shared"]) if order == PMD_ORDER else 0


def max_ptes_swap(m: Machine, order: int, is_khugepaged: bool = True) -> int:
    """collapse_max_ptes_swap(cc, order) (l.432)."""
    if not is_khugepaged:
        return HPAGE_PMD_NR
    return int(m.sysfs["max_ptes_swap"]) if order == PMD_ORDER else 0


def max_order_from_offset(offset: int) -> int:
    """max_order_from_offset() (l.1456): the highest naturally aligned order at `offset`."""
    if offset == 0:
        return PMD_ORDER
    return min((offset & -offset).bit_length() - 1, PMD_ORDER)


def mthp_collapse(m: Machine, mm: Mm, row: int, addr: int, unmapped: int,
                  enabled_orders: int) -> Scan:
    """mthp_collapse() (l.1483) for the PMD at page `addr` (row `row`): walk the
    offsets 0..511 from the PMD order down, collapse where enough PTEs are
    occupied (the scan's bitmap: present, non-zero-page PTEs), fall back to a
    lower order or advance as the kernel does. SUCCEED if anything collapsed."""
    if enabled_orders == PMD_BIT:  # one candidate: the whole bitmap's weight
        occupied = int(mm.tables.n_present[row]) + unmapped
        if occupied < HPAGE_PMD_NR - max_ptes_none(m, PMD_ORDER):
            return Scan.FAIL
        ret = collapse_huge_page(m, mm, row, addr, unmapped, is_khugepaged=True)
        return Scan.FAIL if ret is Scan.PTE_MAPPED_HUGEPAGE else ret
    bitmap = (mm.tables.pte[row] & STATE_MASK) == PTE_PRESENT  # cc->mthp_present_ptes
    prefix = np.concatenate([[0], np.cumsum(bitmap)])
    last, collapsed, alloc_failed = Scan.FAIL, 0, False
    offset, order = 0, PMD_ORDER
    while offset < HPAGE_PMD_NR:
        nr = 1 << order
        go_lower = True
        if enabled_orders >> order & 1:
            occupied = int(prefix[offset + nr] - prefix[offset])
            if order == PMD_ORDER:
                occupied += unmapped
            if occupied >= nr - max_ptes_none(m, order):
                ret = _collapse_order(m, mm, row, addr, offset, order, unmapped)
                if ret in NEXT_OFFSET:
                    collapsed += nr if ret is Scan.SUCCEED else 0
                    go_lower = False
                elif ret in FALLBACK:
                    alloc_failed |= ret is Scan.ALLOC_HUGE_PAGE_FAIL
                    last = ret
                else:  # PMD_MAPPED and everything else: stop
                    last = ret
                    break
        if go_lower and order > MIN_MTHP_ORDER and enabled_orders & ((1 << order) - 1):
            order -= 1
            continue
        offset += nr
        order = max_order_from_offset(offset)
    if collapsed:
        return Scan.SUCCEED
    return Scan.ALLOC_HUGE_PAGE_FAIL if alloc_failed else last


def _collapse_order(m: Machine, mm: Mm, row: int, addr: int, offset: int, order: int,
                    unmapped: int) -> Scan:
    if order == PMD_ORDER:
        return collapse_huge_page(m, mm, row, addr, unmapped, is_khugepaged=True)
    result = collapse_small(m, mm, row, addr, offset, order, unmapped)
    m.log_collapse(mm, addr + offset, order, result, "khugepaged")
    return result


def collapse_small(m: Machine, mm: Mm, row: int, addr: int, offset: int, order: int,
                   unmapped: int) -> Scan:
    """collapse_huge_page(mm, addr + offset pages, ..., order) for order < PMD_ORDER."""
    result = alloc_charge_folio(m, order)
    if result is not Scan.SUCCEED:
        return result
    result = _revalidate(m, mm, addr, order)
    if result is not Scan.SUCCEED:
        return result
    kind = mm.tables.kind[row]
    if kind != PMD_TABLE:  # find_pmd_or_thp_or_none()
        return Scan.PMD_MAPPED if kind == PMD_THP else Scan.NO_PTE_TABLE
    lo, hi = offset, offset + (1 << order)
    state = mm.tables.pte[row, lo:hi] & STATE_MASK
    if unmapped and (state == PTE_SWAP).any():  # __collapse_huge_page_swapin(): mTHP bails
        m.count_mthp(order, "collapse_exceed_swap_pte")
        return Scan.EXCEED_SWAP_PTE
    result = isolate_small(m, mm, row, lo, hi, order)
    if result is Scan.SUCCEED:
        _install(m, mm, row, addr, lo, hi)
    return result


def _revalidate(m: Machine, mm: Mm, addr: int, order: int) -> Scan:
    """hugepage_vma_revalidate(mm, pmd address, true, &vma, cc, order) (l.1046):
    the PMD range in the VMA, `order` still allowed, an anon_vma."""
    vma = mm.find_vma(addr)
    if vma is None:
        return Scan.VMA_NULL
    if not (vma.start <= addr and addr + HPAGE_PMD_NR <= vma.end):
        return Scan.ADDRESS_RANGE
    if not m.allowable_orders(mm, vma, 1 << order, enforce_sysfs=True):
        return Scan.VMA_CHECK
    return Scan.SUCCEED if vma.anon_vma else Scan.PAGE_ANON


def _first(mask: np.ndarray) -> int:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else 1 << 30


def isolate_small(m: Machine, mm: Mm, row: int, lo: int, hi: int, order: int) -> Scan:
    """__collapse_huge_page_isolate(..., order) (l.661) over PTEs [lo, hi): per PTE
    none/zero over the order's limit, non-present, shared over 0, a folio of this
    order or larger (PTE_MAPPED_HUGEPAGE); at the end, nothing young."""
    t, st = mm.tables, m.store
    pte, ids = t.pte[row, lo:hi], t.page[row, lo:hi]
    state = pte & STATE_MASK
    none, present = state <= PTE_ZERO, state == PTE_PRESENT
    shared = np.zeros(len(pte), np.bool_)
    large = np.zeros(len(pte), np.bool_)
    if present.any():
        shared[present] = st.shared(ids[present], m.profile.shared_test)
        large[present] = st.nr[st.head[ids[present]]] >= (1 << order)
    f_none = _first(none & (np.cumsum(none) > max_ptes_none(m, order)))
    f_swap = _first(state == PTE_SWAP)
    f_shared = _first(shared & (np.cumsum(shared) > max_ptes_shared(m, order)))
    f_large = _first(large & ~shared)
    k = min(f_none, f_swap, f_shared, f_large)
    if k == f_none and k < len(pte):
        m.count_mthp(order, "collapse_exceed_none_pte")
        return Scan.EXCEED_NONE_PTE
    if k == f_swap and k < len(pte):
        return Scan.PTE_NON_PRESENT
    if k == f_shared and k < len(pte):
        m.count_mthp(order, "collapse_exceed_shared_pte")
        return Scan.EXCEED_SHARED_PTE
    if k < len(pte):
        return Scan.PTE_MAPPED_HUGEPAGE
    if not (present & ((pte & YOUNG) != 0)).any():
        return Scan.LACK_REFERENCED_PAGE
    return Scan.SUCCEED


def _install(m: Machine, mm: Mm, row: int, addr: int, lo: int, hi: int) -> None:
    """__collapse_huge_page_copy() + map_anon_folio_pte_nopf(): the old pages are
    unmapped, the new folio is mapped by PTEs, young (x86 vm_page_prot has
    _PAGE_ACCESSED), writable (and dirty) iff VM_WRITE."""
    t, st = mm.tables, m.store
    present = lo + np.flatnonzero((t.pte[row, lo:hi] & STATE_MASK) == PTE_PRESENT)
    st.map_ptes(t.page[row, present], -1)
    head = st.alloc_folio(hi - lo)
    ids = np.arange(head, head + hi - lo, dtype=np.int32)
    st.map_ptes(ids, +1)
    vma = mm.vma_at(addr + lo)
    t.page[row, lo:hi] = ids
    t.pte[row, lo:hi] = PTE_PRESENT | YOUNG | (WRITE if vma is not None and vma.writable else 0)
    m.mark_dirty(row)
