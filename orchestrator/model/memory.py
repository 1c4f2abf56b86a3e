"""What the workload's syscalls and page faults do to VMAs and page tables.

Mirrors, for private anonymous memory: the fault path (mm/memory.c
handle_mm_fault -> create_huge_pmd / do_anonymous_page / do_wp_page /
do_swap_page; mm/huge_memory.c do_huge_pmd_anonymous_page), madvise
(mm/madvise.c: MADV_HUGEPAGE/NOHUGEPAGE via madvise_update_vma, MADV_DONTNEED,
MADV_PAGEOUT), mprotect (mm/mprotect.c), munmap and fork (kernel/fork.c
dup_mmap + mm/memory.c copy_page_range). Only the effects khugepaged can see
are kept. Page addresses are page numbers; every function takes the range
[start, end) of one call.
"""

from __future__ import annotations

import logging

import numpy as np

from orchestrator.model.machine import (
    ALL_ANON,
    PMD_BIT,
    Machine,
    orders_of,
    suitable_order,
    suitable_pmd,
)
from orchestrator.model.mm import (
    HPAGE_PMD_NR,
    PMD_EMPTY,
    PMD_HUGE_ZERO,
    PMD_TABLE,
    PMD_THP,
    PTE_NONE,
    PTE_PRESENT,
    PTE_SWAP,
    PTE_ZERO,
    PUD_PAGES,
    STATE_MASK,
    WRITE,
    YOUNG,
    Mm,
    PageTables,
    Vma,
)
from orchestrator.model.pages import NO_PAGE

log = logging.getLogger(__name__)


def _row(m: Machine, addr: int) -> int:
    return m.blocks.row_of[addr // HPAGE_PMD_NR]


def _add_pud(m: Machine, mm: Mm, row: int) -> None:
    mm.tables.puds.add(int(m.blocks.blocks[row]) * HPAGE_PMD_NR // PUD_PAGES)


def anon_prepare(m: Machine, vma: Vma) -> None:
    """anon_vma_prepare() / vmf_anon_prepare(): the first anon page of a VMA."""
    if not vma.anon_vma:
        vma.anon_vma = m.next_anon_vma
        m.next_anon_vma += 1


def _pieces(mm: Mm, start: int, end: int) -> list[tuple[Vma, int, int]]:
    """(vma, lo, hi) for every part of [start, end) covered by a VMA."""
    out = []
    for v in mm.vmas:
        lo, hi = max(start, v.start), min(end, v.end)
        if lo < hi:
            out.append((v, lo, hi))
    return out


def _blocks(lo: int, hi: int) -> list[tuple[int, int, int]]:
    """(block address, first col, end col) for the pages [lo, hi)."""
    out = []
    a = lo
    while a < hi:
        base = a // HPAGE_PMD_NR * HPAGE_PMD_NR
        e = min(hi, base + HPAGE_PMD_NR)
        out.append((base, a - base, e - base))
        a = e
    return out


# ------------------------------------------------------------------ split


def split_huge_pmd(m: Machine, mm: Mm, row: int, vma: Vma) -> None:
    """__split_huge_pmd_locked(): THP_SPLIT_PMD; a huge zero PMD becomes 512
    zero-page PTEs, a THP becomes 512 PTEs mapping its subpages (the folio
    stays large and PTE-mapped) with the PMD's write/young bits."""
    t = mm.tables
    m.count("thp_split_pmd")
    if t.kind[row] == PMD_HUGE_ZERO:
        t.pte[row] = PTE_ZERO
        t.page[row] = NO_PAGE
    else:
        head = int(t.folio[row])
        ids = np.arange(head, head + HPAGE_PMD_NR, dtype=np.int32)
        t.pte[row] = PTE_PRESENT | (t.pmd_bits[row] & (YOUNG | WRITE))
        t.page[row] = ids
        m.store.entire[head] -= 1
        m.store.map_ptes(ids, +1)
        t.folio[row] = NO_PAGE
    t.kind[row] = PMD_TABLE
    t.pmd_bits[row] = 0
    m.mark_dirty(row)


def _split_folio(m: Machine, mm: Mm, row: int) -> None:
    """split_folio() of a PTE-mapped THP: its pages become order-0 folios."""
    ids = mm.tables.page[row]
    ids = ids[ids >= 0]
    st = m.store
    heads = np.unique(st.head[ids])
    for h in heads[st.nr[heads] > 1]:
        n = int(st.nr[h])
        st.head[h:h + n] = np.arange(h, h + n)
        st.nr[h:h + n] = 1
    m.mark_dirty(row)


# ------------------------------------------------------------------ faults


def touch(m: Machine, mm: Mm, pages: np.ndarray, write: bool) -> None:
    """One access per page, in ascending order (handle_mm_fault() where needed)."""
    pages = np.sort(pages)
    for v in list(mm.vmas):
        sel = pages[(pages >= v.start) & (pages < v.end)]
        if len(sel) == 0:
            continue
        blocks = sel // HPAGE_PMD_NR
        for b in np.unique(blocks):
            cols = (sel[blocks == b] - b * HPAGE_PMD_NR).astype(np.int64)
            _touch_block(m, mm, v, int(b) * HPAGE_PMD_NR, cols, write)


def _fault_thp_allowed(m: Machine, mm: Mm, vma: Vma, addr: int) -> bool:
    """__handle_mm_fault(): pmd_none && thp_vma_allowable_order(TVA_IN_PF |
    TVA_ENFORCE_SYSFS), then do_huge_pmd_anonymous_page()'s aligned-block check."""
    return (m.pmd_enabled() and m.vma_allowable(mm, vma, enforce_sysfs=True, in_pf=True)
            and suitable_pmd(vma, addr))


def _touch_block(m: Machine, mm: Mm, vma: Vma, base: int, cols: np.ndarray,
                 write: bool) -> None:
    t = mm.tables
    row = _row(m, base)
    if t.kind[row] == PMD_EMPTY:
        if _fault_thp_allowed(m, mm, vma, base):
            _huge_pmd_anonymous_fault(m, mm, vma, row, write)
            return
        t.kind[row] = PMD_TABLE
        _add_pud(m, mm, row)
    if t.kind[row] in (PMD_THP, PMD_HUGE_ZERO):
        if not write:
            if t.kind[row] == PMD_THP:
                t.pmd_bits[row] |= YOUNG
            return
        if t.kind[row] == PMD_THP and _huge_wp_reuse(m, mm, vma, row):
            return
        split_huge_pmd(m, mm, row, vma)  # do_huge_pmd_wp_page() fallback
    _touch_ptes(m, mm, vma, row, cols, write)
    m.mark_dirty(row)


def _huge_pmd_anonymous_fault(m: Machine, mm: Mm, vma: Vma, row: int, write: bool) -> None:
    """do_huge_pmd_anonymous_page(): anon_vma, khugepaged_enter_vma(), then the
    huge zero page (read, use_zero_page) or a fault THP (thp_fault_alloc)."""
    t = mm.tables
    anon_prepare(m, vma)
    m.khugepaged.enter_vma(mm, vma)
    _add_pud(m, mm, row)
    if not write and int(m.sysfs["use_zero_page"]):
        t.kind[row] = PMD_HUGE_ZERO
        return
    head = m.store.alloc_folio(HPAGE_PMD_NR)
    m.store.entire[head] = 1
    t.kind[row], t.folio[row] = PMD_THP, head
    t.pmd_bits[row] = YOUNG | (WRITE if vma.writable else 0)
    m.count("thp_fault_alloc")
    m.mark_dirty(row)


def _huge_wp_reuse(m: Machine, mm: Mm, vma: Vma, row: int) -> bool:
    """do_huge_pmd_wp_page(): an exclusive THP is reused (made writable)."""
    t = mm.tables
    head = int(t.folio[row])
    if t.pmd_bits[row] & WRITE:
        t.pmd_bits[row] |= YOUNG
        return True
    if m.store.folio_mapcount(head) == 1:
        t.pmd_bits[row] |= YOUNG | WRITE
        return True
    return False


def _touch_ptes(m: Machine, mm: Mm, vma: Vma, row: int, cols: np.ndarray, write: bool) -> None:
    """do_anonymous_page() / do_wp_page() / do_swap_page() on each selected PTE."""
    t, st = mm.tables, m.store
    state = t.pte[row, cols] & STATE_MASK
    wbit = WRITE if vma.writable else 0
    swap = cols[state == PTE_SWAP]
    if len(swap):  # do_swap_page(): exclusive pages come back writable
        ids = t.page[row, swap]
        excl = st.exclusive[ids]
        t.pte[row, swap] = PTE_PRESENT | YOUNG | np.where(excl, wbit, 0).astype(np.uint8)
        st.map_ptes(ids, +1)
    present = cols[state == PTE_PRESENT]
    t.pte[row, present] |= YOUNG  # the hardware accessed bit
    if not write:
        none = cols[state == PTE_NONE]
        t.pte[row, none] = PTE_ZERO  # read fault: the shared zero page, no anon_vma
        return
    # write: none or zero page -> a new page (do_anonymous_page / wp_page_copy)
    fresh = cols[state <= PTE_ZERO]
    fresh = _mthp_faults(m, mm, vma, row, fresh)
    ro = present[(t.pte[row, present] & WRITE) == 0]
    if len(ro):  # do_wp_page(): reuse if only we map it, else copy
        ids = t.page[row, ro]
        single = st.mapcount[ids] == 1
        reuse = ro[single & (st.nr[st.head[ids]] == 1)]
        t.pte[row, reuse] |= WRITE
        st.exclusive[t.page[row, reuse]] = True
        copy = ro[~np.isin(ro, reuse)]
        st.map_ptes(t.page[row, copy], -1)
        fresh = np.concatenate([fresh, copy])
    swapped_ro = swap[(t.pte[row, swap] & WRITE) == 0]
    if len(swapped_ro):  # a write to a non-exclusive swapped-in page copies it
        st.map_ptes(t.page[row, swapped_ro], -1)
        fresh = np.concatenate([fresh, swapped_ro])
    if len(fresh):
        anon_prepare(m, vma)
        ids = st.alloc(len(fresh))
        st.map_ptes(ids, +1)
        t.page[row, fresh] = ids
        t.pte[row, fresh] = PTE_PRESENT | YOUNG | WRITE


def _mthp_faults(m: Machine, mm: Mm, vma: Vma, row: int, fresh: np.ndarray) -> np.ndarray:
    """do_anonymous_page() -> alloc_anon_folio() (6.8+; 7.2.13 mm/memory.c): a write
    fault on a none PTE maps the highest enabled order below the PMD whose aligned
    range fits the VMA and is all pte_none, as one large folio. Returns the PTEs
    still to fault as order-0 pages."""
    if m.profile.pmd_enabled_rule == "global" or not len(fresh):
        return fresh
    orders = m.allowable_orders(mm, vma, ALL_ANON & ~PMD_BIT, enforce_sysfs=True, in_pf=True)
    if not orders:
        return fresh
    t, st = mm.tables, m.store
    base = int(m.blocks.blocks[row]) * HPAGE_PMD_NR
    rest = []
    for c in fresh.tolist():
        state = t.pte[row, c] & STATE_MASK
        if state == PTE_ZERO:
            rest.append(c)  # do_wp_page() copies the zero page to an order-0 page
            continue
        if state != PTE_NONE:
            continue  # mapped by a large folio of an earlier fault in this step
        for o in sorted(orders_of(orders), reverse=True):
            n = 1 << o
            lo = c // n * n
            if suitable_order(vma, base + c, o) and not (t.pte[row, lo:lo + n] & STATE_MASK).any():
                anon_prepare(m, vma)
                head = st.alloc_folio(n)
                ids = np.arange(head, head + n, dtype=np.int32)
                st.map_ptes(ids, +1)
                t.page[row, lo:lo + n] = ids
                t.pte[row, lo:lo + n] = PTE_PRESENT | YOUNG | WRITE
                break
        else:
            rest.append(c)
    return np.array(rest, np.int64)


# ------------------------------------------------------------------ zap / pageout


def _zap(m: Machine, mm: Mm, vma: Vma, lo: int, hi: int, reclaim_pt: bool = False) -> None:
    """zap_page_range_single() over [lo, hi) of one VMA (MADV_DONTNEED, munmap).

    `reclaim_pt` (MADV_DONTNEED's `zap_details.reclaim_pt`, 6.14+ CONFIG_PT_RECLAIM):
    zap_pte_range() (7.2.13 mm/memory.c l.1902) frees the PTE table when the zap covered
    its whole PMD (pte_table_reclaim_possible(): end - start >= PMD_SIZE) and left every
    PTE none (zap_empty_pte_table()); the PMD is then empty (pmd_none)."""
    t = mm.tables
    for base, c0, c1 in _blocks(lo, hi):
        row = _row(m, base)
        if t.kind[row] in (PMD_THP, PMD_HUGE_ZERO):
            if c0 == 0 and c1 == HPAGE_PMD_NR:  # zap_huge_pmd()
                if t.kind[row] == PMD_THP:
                    m.store.entire[int(t.folio[row])] -= 1
                t.kind[row], t.folio[row], t.pmd_bits[row] = PMD_EMPTY, NO_PAGE, 0
                m.mark_dirty(row)
                continue
            split_huge_pmd(m, mm, row, vma)
        if t.kind[row] != PMD_TABLE:
            continue
        cols = np.arange(c0, c1)
        present = cols[(t.pte[row, cols] & STATE_MASK) == PTE_PRESENT]
        m.store.map_ptes(t.page[row, present], -1)
        t.pte[row, cols] = PTE_NONE
        t.page[row, cols] = NO_PAGE
        if reclaim_pt and c0 == 0 and c1 == HPAGE_PMD_NR:
            t.kind[row], t.pmd_bits[row] = PMD_EMPTY, 0
        m.mark_dirty(row)


def _pageout(m: Machine, mm: Mm, vma: Vma, lo: int, hi: int) -> None:
    """madvise_cold_or_pageout_pte_range() + reclaim_pages(): exclusive pages
    are swapped out (their PTEs become swap entries); shared ones are skipped.
    A THP is split first (modelled: PMD split, then 4 KiB pages)."""
    t, st = mm.tables, m.store
    for base, c0, c1 in _blocks(lo, hi):
        row = _row(m, base)
        if t.kind[row] == PMD_THP:
            if st.folio_mapcount(int(t.folio[row])) > 1:
                continue
            split_huge_pmd(m, mm, row, vma)
            _split_folio(m, mm, row)
        if t.kind[row] != PMD_TABLE:
            continue
        cols = np.arange(c0, c1)
        cols = cols[(t.pte[row, cols] & STATE_MASK) == PTE_PRESENT]
        ids = t.page[row, cols]
        ok = (st.mapcount[ids] == 1) & (st.nr[st.head[ids]] == 1)
        cols, ids = cols[ok], ids[ok]
        st.map_ptes(ids, -1)
        t.pte[row, cols] = PTE_SWAP
        m.mark_dirty(row)


# ------------------------------------------------------------------ madvise / mprotect


def madvise_flags(m: Machine, mm: Mm, start: int, end: int, hugepage: bool) -> bool:
    """MADV_HUGEPAGE / MADV_NOHUGEPAGE (hugepage_madvise + madvise_update_vma).
    Returns False if part of the range was unmapped (ENOMEM)."""
    covered = 0
    pieces = _pieces(mm, start, end)
    for v, lo, hi in pieces:
        covered += hi - lo
        new = (True, False) if hugepage else (False, True)
        if m.profile.madv_hugepage_registration == "hugepage_madvise" and hugepage:
            # 6.1: khugepaged_enter_vma(vma, new flags) on the original VMA, every call
            m.khugepaged.enter_vma(mm, Vma(v.start, v.end, True, False, v.anon_vma,
                                           v.writable, v.region))
        if (v.hugepage, v.nohugepage) == new:
            continue  # madvise_update_vma(): flags unchanged -> nothing, no registration
        touched = [x for x in mm.vmas_in(lo, hi)]
        for x in touched:
            x.hugepage, x.nohugepage = new
        for x, merged in mm.merge(touched):
            if m.profile.madv_hugepage_registration == "madvise_update_vma" and (
                    merged or x.hugepage):
                m.khugepaged.enter_vma(mm, x)
    return covered == end - start


def madvise_dontneed(m: Machine, mm: Mm, start: int, end: int) -> bool:
    """MADV_DONTNEED (madvise_dontneed_single_vma()): zap the range. Page tables stay,
    except, where the profile says so (6.14+), a PTE table emptied over its whole PMD."""
    pieces = _pieces(mm, start, end)
    for v, lo, hi in pieces:
        _zap(m, mm, v, lo, hi, reclaim_pt=m.profile.dontneed_frees_pte_table)
    return sum(hi - lo for _, lo, hi in pieces) == end - start


def madvise_pageout(m: Machine, mm: Mm, start: int, end: int) -> bool:
    """MADV_PAGEOUT on anonymous memory (needs swap)."""
    pieces = _pieces(mm, start, end)
    for v, lo, hi in pieces:
        _pageout(m, mm, v, lo, hi)
    return sum(hi - lo for _, lo, hi in pieces) == end - start


def mprotect(m: Machine, mm: Mm, start: int, end: int, writable: bool) -> bool:
    """mprotect(PROT_READ[|PROT_WRITE]): change_protection() + vma_modify_flags().
    Making a range writable upgrades exclusive anon PTEs at once
    (MM_CP_TRY_CHANGE_WRITABLE); others take a write fault later."""
    pieces = _pieces(mm, start, end)
    if sum(hi - lo for _, lo, hi in pieces) != end - start:
        return False  # ENOMEM before any change
    touched = mm.vmas_in(start, end)
    t, st = mm.tables, m.store
    for v in touched:
        v.writable = writable
        for base, c0, c1 in _blocks(v.start, v.end):
            row = _row(m, base)
            if t.kind[row] == PMD_THP:
                if c0 != 0 or c1 != HPAGE_PMD_NR:
                    split_huge_pmd(m, mm, row, v)
                else:
                    excl = st.folio_mapcount(int(t.folio[row])) == 1
                    t.pmd_bits[row] = (t.pmd_bits[row] & ~np.uint8(WRITE)) | (
                        WRITE if writable and excl else 0)
                    continue
            if t.kind[row] != PMD_TABLE:
                continue
            cols = np.arange(c0, c1)
            cols = cols[(t.pte[row, cols] & STATE_MASK) == PTE_PRESENT]
            if writable:
                ok = st.exclusive[t.page[row, cols]]
                t.pte[row, cols[ok]] |= WRITE
            else:
                t.pte[row, cols] &= ~np.uint8(WRITE)
            m.mark_dirty(row)
    for x, merged in mm.merge(touched):
        if merged:  # vma_merge_existing_range() -> khugepaged_enter_vma()
            m.khugepaged.enter_vma(mm, x)
    return True


def munmap(m: Machine, mm: Mm, start: int, end: int) -> bool:
    """munmap(): zap, drop the VMAs, free page tables no VMA covers any more."""
    for v, lo, hi in _pieces(mm, start, end):
        _zap(m, mm, v, lo, hi)
    mm.remove_range(start, end)
    t = mm.tables
    for base, _, _ in _blocks(start // HPAGE_PMD_NR * HPAGE_PMD_NR, end):
        row = _row(m, base)
        if not _pieces(mm, base, base + HPAGE_PMD_NR):  # free_pgtables()
            t.kind[row], t.folio[row] = PMD_EMPTY, NO_PAGE
            m.mark_dirty(row)
        pud = base // PUD_PAGES
        if not _pieces(mm, pud * PUD_PAGES, (pud + 1) * PUD_PAGES):
            t.puds.discard(pud)
    return True


# ------------------------------------------------------------------ fork


def fork(m: Machine, parent: Mm, name: str) -> Mm:
    """dup_mmap(): copy the VMAs; copy_page_range() only for VMAs with an
    anon_vma (vma_needs_copy); private pages become shared and
    write-protected in both, the child's PTEs are old; khugepaged_fork()."""
    vmas = []
    for v in parent.vmas:
        c = Vma(v.start, v.end, v.hugepage, v.nohugepage, 0, v.writable, v.region)
        if v.anon_vma:  # anon_vma_fork()
            anon_prepare(m, c)
        vmas.append(c)
    child = Mm(name, vmas, PageTables.empty(len(m.blocks)))
    m.mms[name] = child
    for v in parent.vmas:
        if v.anon_vma:
            for base, c0, c1 in _blocks(v.start, v.end):
                _copy_block(m, parent, child, _row(m, base), c0, c1)
    m.khugepaged.fork(parent, child)
    return child


def _copy_block(m: Machine, parent: Mm, child: Mm, row: int, c0: int, c1: int) -> None:
    """copy_pmd_range()/copy_huge_pmd()/copy_present_ptes() for one block."""
    p, c, st = parent.tables, child.tables, m.store
    kind = p.kind[row]
    if kind == PMD_EMPTY:
        return
    _add_pud(m, child, row)
    if kind in (PMD_THP, PMD_HUGE_ZERO):
        c.kind[row], c.folio[row] = kind, p.folio[row]
        if kind == PMD_THP:
            st.entire[int(p.folio[row])] += 1
            st.maybe_shared = True
            p.pmd_bits[row] &= ~np.uint8(WRITE)
            c.pmd_bits[row] = 0
        m.mark_dirty(row)
        return
    c.kind[row] = PMD_TABLE
    cols = np.arange(c0, c1)
    state = p.pte[row, cols] & STATE_MASK
    c.pte[row, cols] = p.pte[row, cols]
    c.page[row, cols] = p.page[row, cols]
    pres = cols[state == PTE_PRESENT]
    p.pte[row, pres] &= ~np.uint8(WRITE)
    c.pte[row, pres] = PTE_PRESENT  # write-protected and old
    st.map_ptes(p.page[row, pres], +1)
    st.exclusive[p.page[row, pres]] = False
    swp = cols[state == PTE_SWAP]
    st.exclusive[p.page[row, swp]] = False
    m.mark_dirty(row)
