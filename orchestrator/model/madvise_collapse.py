"""MADV_COLLAPSE (mm/khugepaged.c madvise_collapse(), mm/madvise.c madvise_walk_vmas()).

Synchronous, in the caller: no max_ptes_* limits, no referenced rule, the
PAGE_RO rule still applies (<= 6.12); every fully covered aligned 2 MiB block
of each VMA is scanned and collapsed. Returns "ok" or an errno name (docs/khugepaged-model.md).
"""

from __future__ import annotations

import logging

import numpy as np

from orchestrator.model.collapse import collapse_huge_page, hugepage_vma_revalidate
from orchestrator.model.machine import Machine
from orchestrator.model.mm import HPAGE_PMD_NR, Mm, Vma
from orchestrator.model.results import CODE_OF, CODES, Scan
from orchestrator.model.scan import C_SUCCEED, scan_rows

log = logging.getLogger(__name__)


def collapse_errno(m: Machine, r: Scan) -> str:
    """madvise_collapse_errno()."""
    if r is Scan.ALLOC_HUGE_PAGE_FAIL:
        return "ENOMEM"
    if r is Scan.CGROUP_CHARGE_FAIL:
        return "EBUSY"
    if r is Scan.EXCEED_NONE_PTE:
        return m.profile.collapse_exceed_none_errno
    if r in m.profile.collapse_eagain:
        return "EAGAIN"
    return "EINVAL"


def madvise_collapse(m: Machine, mm: Mm, start: int, end: int) -> str:
    """madvise(start, len, MADV_COLLAPSE) via madvise_walk_vmas(): the first VMA
    that fails ends the call; holes give ENOMEM only if every VMA succeeded."""
    covered = 0
    for v in [v for v in mm.vmas if v.start < end and v.end > start]:
        lo, hi = max(start, v.start), min(end, v.end)
        covered += hi - lo
        err = _collapse_vma(m, mm, v, lo, hi)
        if err != "ok":
            return err
    return "ok" if covered == end - start else "ENOMEM"


def _collapse_vma(m: Machine, mm: Mm, vma: Vma, start: int, end: int) -> str:
    """madvise_collapse(vma, prev, start, end) for one VMA."""
    if not m.vma_allowable(mm, vma, enforce_sysfs=False):  # tva_flags 0
        return "EINVAL"
    hstart = -(-start // HPAGE_PMD_NR) * HPAGE_PMD_NR
    hend = end // HPAGE_PMD_NR * HPAGE_PMD_NR
    thps, last_fail, locked = 0, Scan.FAIL, True
    addr = hstart
    while addr < hend:
        if not locked:  # mmap_read_lock() again + hugepage_vma_revalidate(expect_anon=false)
            r = hugepage_vma_revalidate(m, mm, addr, is_khugepaged=False, expect_anon=False)
            if r is not Scan.SUCCEED:
                last_fail = r
                break
            v = mm.find_vma(addr)
            assert v is not None
            hend = min(hend, v.end // HPAGE_PMD_NR * HPAGE_PMD_NR)
            locked = True
        row = m.blocks.row_of[addr // HPAGE_PMD_NR]
        batch = scan_rows(m, mm, row, row + 1, is_khugepaged=False)
        result = CODES[int(batch.codes[0])]
        if batch.codes[0] == C_SUCCEED:
            result = collapse_huge_page(m, mm, row, addr, int(batch.unmapped[0]),
                                        is_khugepaged=False)
            locked = False
        m.log.add(m.now_ms, 0, mm.name, "madvise_collapse", np.array([addr]),
                  np.array([CODE_OF[result]], np.int8), batch.counts())
        addr += HPAGE_PMD_NR
        if result in (Scan.SUCCEED, Scan.PMD_MAPPED):
            thps += 1
        elif result in m.profile.collapse_continue_on:
            last_fail = result
        else:
            last_fail = result
            break
    return "ok" if thps == (hend - hstart) // HPAGE_PMD_NR else collapse_errno(m, last_fail)
