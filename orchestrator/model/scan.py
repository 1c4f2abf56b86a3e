"""The anonymous PMD scan: hpage_collapse_scan_pmd() (<= 7.0) / collapse_scan_pmd()
(7.1+; 7.2.13 mm/khugepaged.c l.1587), vectorised.

`scan_rows` evaluates a run of PMDs at once and returns, per PMD, the result
the kernel's scan would reach *before* calling collapse_huge_page (SUCCEED
means "would try to collapse"), with the running counts at the moment the PTE
loop stopped (the fields of the mm_khugepaged_scan_pmd trace event). The
caller (khugepaged.py / madvise_collapse.py) takes it from there.

Per-PTE checks in kernel order (6.12, spec 4.2), for each PTE of the table:
  1. swap/non-present entry: ++unmapped; khugepaged and unmapped > max_ptes_swap
     -> EXCEED_SWAP_PTE (count_vm_event THP_SCAN_EXCEED_SWAP_PTE)
  2. none or zero page: ++none_or_zero; khugepaged and > max_ptes_none -> EXCEED_NONE_PTE
  3. present: writable |= pte_write; shared page -> ++shared; khugepaged and
     > max_ptes_shared -> EXCEED_SHARED_PTE; khugepaged: referenced += young
End: no writable PTE -> PAGE_RO (<= 6.12); khugepaged and (referenced == 0 or
(unmapped and referenced < HPAGE_PMD_NR/2)) -> LACK_REFERENCED_PAGE; else SUCCEED.
A PTE is exactly one of swap/none/present, so the 6.19+ "none first" order
reaches the same first failure; 7.0+ has no PAGE_RO. 7.1+ charges the scan
budget per PTE examined (`ScanBatch.examined`: up to and including the PTE
the loop stopped at; 1 for a PMD without a PTE table). 7.2 scans with
max_ptes_none = 511 when an order below the PMD is enabled, so that the
bitmap of present PTEs is complete for mthp_collapse() (l.1619-1624).
uffd-wp, NUMA, LRU, lock and refcount checks never fail in the model (no uffd,
one node, LRU drained, no GUP pins).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from orchestrator.model.machine import PMD_ORDER, Machine, scan_code
from orchestrator.model.mm import (
    HPAGE_PMD_NR,
    PMD_EMPTY,
    PMD_TABLE,
    PTE_PRESENT,
    PTE_SWAP,
    PTE_ZERO,
    PUD_PAGES,
    STATE_MASK,
    WRITE,
    YOUNG,
    Mm,
)
from orchestrator.model.results import Scan

log = logging.getLogger(__name__)

C_SUCCEED = scan_code(Scan.SUCCEED)
C_PMD_MAPPED = scan_code(Scan.PMD_MAPPED)
C_PMD_NULL = scan_code(Scan.PMD_NULL)
C_PMD_NONE = scan_code(Scan.PMD_NONE)
C_NO_PTE_TABLE = scan_code(Scan.NO_PTE_TABLE)
C_EXCEED_NONE = scan_code(Scan.EXCEED_NONE_PTE)
C_EXCEED_SWAP = scan_code(Scan.EXCEED_SWAP_PTE)
C_EXCEED_SHARED = scan_code(Scan.EXCEED_SHARED_PTE)
C_PAGE_RO = scan_code(Scan.PAGE_RO)
C_LACK_REF = scan_code(Scan.LACK_REFERENCED_PAGE)

EXCEED_COUNTER = {
    C_EXCEED_NONE: "thp_scan_exceed_none_pte",
    C_EXCEED_SWAP: "thp_scan_exceed_swap_pte",
    C_EXCEED_SHARED: "thp_scan_exceed_share_pte",
}
EXCEED_STAT = {
    C_EXCEED_NONE: "collapse_exceed_none_pte",
    C_EXCEED_SWAP: "collapse_exceed_swap_pte",
    C_EXCEED_SHARED: "collapse_exceed_shared_pte",
}
BIG = 1 << 20  # "no limit" (MADV_COLLAPSE)
MAX_PTES_LIMIT = HPAGE_PMD_NR - 1  # KHUGEPAGED_MAX_PTES_LIMIT


@dataclass
class ScanBatch:
    """Results for rows [r0, r1): result code per PMD plus the trace counts."""

    codes: np.ndarray
    none_or_zero: np.ndarray
    unmapped: np.ndarray
    shared: np.ndarray
    referenced: np.ndarray
    writable: np.ndarray
    examined: np.ndarray  # PTEs looked at (cc->progress units, 7.1+)

    def counts(self) -> dict[str, np.ndarray]:
        """The count columns, for the decision log."""
        return {"none_or_zero": self.none_or_zero, "unmapped": self.unmapped,
                "shared": self.shared, "referenced": self.referenced, "writable": self.writable}

    def __len__(self) -> int:
        return len(self.codes)


def limits(m: Machine, is_khugepaged: bool, fill_bitmap: bool = False) -> tuple[int, int, int]:
    """(max_ptes_none, max_ptes_swap, max_ptes_shared) as the scan applies them:
    collapse_max_ptes_*(cc, HPAGE_PMD_ORDER) (7.2.13 l.365-445); `fill_bitmap`:
    orders below the PMD are enabled, so none/zero PTEs are limited to 511 only."""
    if not is_khugepaged:
        return BIG, BIG, BIG
    s = m.sysfs
    none = MAX_PTES_LIMIT if fill_bitmap else int(s["max_ptes_none"])
    return none, int(s["max_ptes_swap"]), int(s["max_ptes_shared"])


def empty_pmd_code(m: Machine, mm: Mm, row: int) -> int:
    """find_pmd_or_thp_or_none() for an empty PMD: mm_find_pmd() finds no PMD
    table (no PUD entry) -> PMD_NULL; PMD table present, entry none -> PMD_NONE."""
    if m.profile.empty_pmd_codes == "no_pte_table":
        return C_NO_PTE_TABLE
    pud = int(m.blocks.blocks[row]) * HPAGE_PMD_NR // PUD_PAGES
    return C_PMD_NONE if pud in mm.tables.puds else C_PMD_NULL


def scan_rows(m: Machine, mm: Mm, r0: int, r1: int, is_khugepaged: bool,
              fill_bitmap: bool = False) -> ScanBatch:
    """hpage_collapse_scan_pmd() up to the collapse decision, for PMD rows [r0, r1)."""
    t = mm.tables
    n = r1 - r0
    rows = np.arange(r0, r1)
    kinds = t.kind[r0:r1]
    codes = np.full(n, C_PMD_MAPPED, np.int8)  # PMD_THP and the huge zero page
    for i in np.flatnonzero(kinds == PMD_EMPTY):
        codes[i] = empty_pmd_code(m, mm, r0 + int(i))
    zeros = np.zeros(n, np.int32)
    batch = ScanBatch(codes, zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy(),
                      np.zeros(n, np.bool_), np.ones(n, np.int32))
    tab = np.flatnonzero(kinds == PMD_TABLE)
    if len(tab) == 0:
        return batch
    batch.examined[tab] = HPAGE_PMD_NR
    t.refresh(m.store, m.profile.shared_test, rows[tab])
    max_none, max_swap, max_shared = limits(m, is_khugepaged, fill_bitmap)
    trow = rows[tab]
    nn, ns, nsh = t.n_none[trow], t.n_swap[trow], t.n_shared[trow]
    ref = t.n_young[trow] if is_khugepaged else np.zeros(len(tab), np.int16)
    wr = t.any_write[trow]
    code = np.full(len(tab), C_SUCCEED, np.int8)
    if m.profile.writable_required:
        code[~wr] = C_PAGE_RO
    if is_khugepaged:
        lack = (ref == 0) | ((ns > 0) & (ref < HPAGE_PMD_NR // 2))
        code[lack & (code == C_SUCCEED)] = C_LACK_REF
    batch.codes[tab] = code
    batch.none_or_zero[tab], batch.unmapped[tab], batch.shared[tab] = nn, ns, nsh
    batch.referenced[tab], batch.writable[tab] = ref, wr
    over = np.flatnonzero((nn > max_none) | (ns > max_swap) | (nsh > max_shared))
    for j in over:
        _scan_row_exact(m, mm, int(trow[j]), int(tab[j]), batch, is_khugepaged,
                        (max_none, max_swap, max_shared))
    return batch


def _first(mask: np.ndarray) -> int:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else HPAGE_PMD_NR


def _scan_row_exact(m: Machine, mm: Mm, row: int, i: int, batch: ScanBatch,
                    is_khugepaged: bool, lim: tuple[int, int, int]) -> None:
    """The PTE loop of one table that hits a limit: find the first failing PTE
    and the running counts there (row summaries only give totals)."""
    pte = mm.tables.pte[row]
    state = pte & STATE_MASK
    present = state == PTE_PRESENT
    shared = np.zeros(HPAGE_PMD_NR, np.bool_)
    shared[present] = m.store.shared(mm.tables.page[row][present], m.profile.shared_test)
    swap, none = state == PTE_SWAP, state <= PTE_ZERO
    c_swap, c_none, c_sh = np.cumsum(swap), np.cumsum(none), np.cumsum(shared)
    f_swap = _first(swap & (c_swap > lim[1]))
    f_none = _first(none & (c_none > lim[0]))
    f_sh = _first(shared & (c_sh > lim[2]))
    k = min(f_swap, f_none, f_sh)
    code = C_EXCEED_SWAP if k == f_swap else C_EXCEED_NONE if k == f_none else C_EXCEED_SHARED
    young = present & ((pte & YOUNG) != 0)
    batch.codes[i] = code
    batch.examined[i] = k + 1
    batch.unmapped[i], batch.none_or_zero[i], batch.shared[i] = c_swap[k], c_none[k], c_sh[k]
    # referenced++ happens after the shared check, so the failing PTE never counts
    batch.referenced[i] = int(young[:k].sum()) if is_khugepaged else 0
    # pte_write() is tested before the shared check, so a shared failure counts it
    batch.writable[i] = bool((present[:k + 1] & ((pte[:k + 1] & WRITE) != 0)).any())


def count_exceed(m: Machine, codes: np.ndarray) -> None:
    """count_vm_event(THP_SCAN_EXCEED_*_PTE) for every PMD that hit a limit, and
    (7.2) count_mthp_stat(HPAGE_PMD_ORDER, MTHP_STAT_COLLAPSE_EXCEED_*)."""
    for code, name in EXCEED_COUNTER.items():
        k = int(np.count_nonzero(codes == code))
        if k:
            m.count(name, k)
            m.count_mthp(PMD_ORDER, EXCEED_STAT[code], k)


def isolate_check(m: Machine, mm: Mm, row: int, is_khugepaged: bool) -> Scan:
    """__collapse_huge_page_isolate(): the stricter second pass after swap-in.

    none/zero over the limit -> EXCEED_NONE_PTE (counted again); a leftover
    non-present PTE -> PTE_NON_PRESENT; shared over the limit ->
    EXCEED_SHARED_PTE (counted again); no writable PTE -> PAGE_RO (<= 6.12);
    khugepaged and nothing referenced -> LACK_REFERENCED_PAGE (no 256 rule here).
    """
    t = mm.tables
    t.refresh(m.store, m.profile.shared_test, np.array([row]))  # after swap-in, if any
    max_none, _, max_shared = limits(m, is_khugepaged)
    if t.n_none[row] > max_none:
        m.count("thp_scan_exceed_none_pte")
        m.count_mthp(PMD_ORDER, "collapse_exceed_none_pte")
        return Scan.EXCEED_NONE_PTE
    if t.n_swap[row]:
        return Scan.PTE_NON_PRESENT
    if t.n_shared[row] > max_shared:
        m.count("thp_scan_exceed_share_pte")
        m.count_mthp(PMD_ORDER, "collapse_exceed_shared_pte")
        return Scan.EXCEED_SHARED_PTE
    if m.profile.writable_required and not t.any_write[row]:
        return Scan.PAGE_RO
    if is_khugepaged and t.n_young[row] == 0:
        return Scan.LACK_REFERENCED_PAGE
    return Scan.SUCCEED
