"""khugepaged scan results (`enum scan_result`, mm/khugepaged.c) and their trace texts.

The members are the union over the versions a profile can select; the numeric
value a version uses in trace records comes from the profile's
``[results].order`` (`VersionProfile.result_value`), not from this enum.
The trace texts are the `SCAN_STATUS` table of include/trace/events/huge_memory.h.
"""

from __future__ import annotations

import enum


class Scan(enum.Enum):
    """One SCAN_* result; `.value` is its trace text."""

    FAIL = "failed"
    SUCCEED = "succeeded"
    PMD_NULL = "pmd_null"
    PMD_NONE = "pmd_none"
    NO_PTE_TABLE = "no_pte_table"
    PMD_MAPPED = "page_pmd_mapped"
    EXCEED_NONE_PTE = "exceed_none_pte"
    EXCEED_SWAP_PTE = "exceed_swap_pte"
    EXCEED_SHARED_PTE = "exceed_shared_pte"
    PTE_NON_PRESENT = "pte_non_present"
    PTE_UFFD_WP = "pte_uffd_wp"
    PTE_MAPPED_HUGEPAGE = "pte_mapped_hugepage"
    PAGE_RO = "no_writable_page"
    LACK_REFERENCED_PAGE = "lack_referenced_page"
    PAGE_NULL = "page_null"
    SCAN_ABORT = "scan_aborted"
    PAGE_COUNT = "not_suitable_page_count"
    PAGE_LRU = "page_not_in_lru"
    PAGE_LOCK = "page_locked"
    PAGE_ANON = "page_not_anon"
    PAGE_LAZYFREE = "page_lazyfree"
    PAGE_COMPOUND = "page_compound"
    ANY_PROCESS = "no_process_for_page"
    VMA_NULL = "vma_null"
    VMA_CHECK = "vma_check_failed"
    ADDRESS_RANGE = "not_suitable_address_range"
    DEL_PAGE_LRU = "could_not_delete_page_from_lru"
    ALLOC_HUGE_PAGE_FAIL = "alloc_huge_page_failed"
    CGROUP_CHARGE_FAIL = "ccgroup_charge_failed"
    TRUNCATED = "truncated"
    PAGE_HAS_PRIVATE = "page_has_private"
    STORE_FAILED = "store_failed"
    COPY_MC = "copy_poisoned_page"
    PAGE_FILLED = "page_filled"
    PAGE_DIRTY_OR_WRITEBACK = "page_dirty_or_writeback"


#: Small integer codes used in the numpy decision arrays (index into this tuple).
CODES: tuple[Scan, ...] = tuple(Scan)
CODE_OF: dict[Scan, int] = {s: i for i, s in enumerate(CODES)}
