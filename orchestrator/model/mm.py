"""Address spaces: VMAs (struct vm_area_struct) and page tables as numpy rows.

Addresses are page numbers (byte address >> 12). Every 2 MiB block a workload
can ever map gets one *row*; all processes use the same row numbering (forked
memory sits at the same addresses), so "the same PMD in every mm" is one row
index. Per row: the PMD entry kind, and for a PTE table 512 PTE bytes
(state | YOUNG | WRITE) plus 512 page ids.

Per-row summaries (counts of none/zero, swap, shared, young, writable PTEs)
are cached and recomputed in bulk for rows marked dirty: the khugepaged scan
of an unchanged table then costs O(1) instead of O(512).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from orchestrator.model.pages import NO_PAGE, PageStore

log = logging.getLogger(__name__)

HPAGE_PMD_NR = 512  # pages per PMD (x86-64, 4 KiB pages)
PUD_PAGES = 512 * 512  # pages per PUD (1 GiB)

# PTE byte: bits 0-1 state, bit 2 young (accessed), bit 3 write
PTE_NONE, PTE_ZERO, PTE_PRESENT, PTE_SWAP = 0, 1, 2, 3
STATE_MASK, YOUNG, WRITE = 3, 4, 8

# PMD entry kinds
PMD_EMPTY, PMD_TABLE, PMD_THP, PMD_HUGE_ZERO = 0, 1, 2, 3


@dataclass
class Vma:
    """One VMA: [start, end) in pages, THP flags, anon_vma id (0 = none), VM_WRITE."""

    start: int
    end: int
    hugepage: bool = False
    nohugepage: bool = False
    anon_vma: int = 0
    writable: bool = True
    region: str = ""

    def flags(self) -> tuple[bool, bool, bool]:
        """The flag word that decides merging and madvise no-ops."""
        return (self.hugepage, self.nohugepage, self.writable)


def hstart_hend(vma: Vma) -> tuple[int, int]:
    """The PMD-aligned sub-range of `vma`: round_up(vm_start), round_down(vm_end)."""
    return -(-vma.start // HPAGE_PMD_NR) * HPAGE_PMD_NR, vma.end // HPAGE_PMD_NR * HPAGE_PMD_NR


class BlockMap:
    """Row numbering of the 2 MiB blocks of a layout (shared by all mms)."""

    def __init__(self, extents: Iterable[tuple[int, int]]) -> None:
        blocks: list[int] = []
        for start, end in extents:
            blocks.extend(range(start // HPAGE_PMD_NR, -(-end // HPAGE_PMD_NR)))
        self.blocks = np.array(sorted(set(blocks)), dtype=np.int64)
        self.row_of = {int(b): i for i, b in enumerate(self.blocks)}

    def __len__(self) -> int:
        return len(self.blocks)

    def rows(self, first_block: int, end_block: int) -> tuple[int, int]:
        """Row range of blocks [first_block, end_block), which must be contiguous rows."""
        if end_block <= first_block:
            return 0, 0
        r0 = self.row_of[first_block]
        return r0, r0 + (end_block - first_block)


@dataclass
class PageTables:
    """The page tables of one mm over the rows of a BlockMap."""

    kind: np.ndarray
    folio: np.ndarray
    pmd_bits: np.ndarray
    pte: np.ndarray
    page: np.ndarray
    dirty: np.ndarray
    n_none: np.ndarray
    n_swap: np.ndarray
    n_shared: np.ndarray
    n_young: np.ndarray
    n_present: np.ndarray
    any_write: np.ndarray
    changed: np.ndarray  # Machine.changes when the row last changed (scanplan.py)
    puds: set[int] = field(default_factory=set)

    @classmethod
    def empty(cls, rows: int) -> PageTables:
        """Tables with nothing mapped."""
        z16 = lambda: np.zeros(rows, np.int16)  # noqa: E731
        return cls(
            kind=np.zeros(rows, np.uint8), folio=np.full(rows, NO_PAGE, np.int32),
            pmd_bits=np.zeros(rows, np.uint8),
            pte=np.zeros((rows, HPAGE_PMD_NR), np.uint8),
            page=np.full((rows, HPAGE_PMD_NR), NO_PAGE, np.int32),
            dirty=np.ones(rows, np.bool_), n_none=z16(), n_swap=z16(), n_shared=z16(),
            n_young=z16(), n_present=z16(), any_write=np.zeros(rows, np.bool_),
            changed=np.zeros(rows, np.int64),
        )

    def copy(self) -> PageTables:
        """Deep copy (fork)."""
        kw: dict[str, Any] = {k: (v.copy() if isinstance(v, np.ndarray) else set(v))
                              for k, v in self.__dict__.items()}
        return PageTables(**kw)

    def refresh(self, store: PageStore, shared_rule: str, rows: np.ndarray | None = None) -> None:
        """Recompute the summaries of dirty rows (all dirty rows, or those in `rows`)."""
        idx = np.flatnonzero(self.dirty) if rows is None else rows[self.dirty[rows]]
        if len(idx) == 0:
            return
        # contiguous slices are views (no copy); scattered rows are gathered
        if len(idx) == idx[-1] - idx[0] + 1:
            sl = slice(int(idx[0]), int(idx[-1]) + 1)
            pte, page = self.pte[sl], self.page[sl]
        else:
            pte, page = self.pte[idx], self.page[idx]
        state = pte & STATE_MASK
        present = state == PTE_PRESENT
        self.n_none[idx] = (state <= PTE_ZERO).sum(axis=1, dtype=np.int16)
        self.n_swap[idx] = (state == PTE_SWAP).sum(axis=1, dtype=np.int16)
        self.n_present[idx] = present.sum(axis=1, dtype=np.int16)
        self.n_young[idx] = ((pte & (STATE_MASK | YOUNG)) == PTE_PRESENT | YOUNG).sum(
            axis=1, dtype=np.int16)
        self.any_write[idx] = ((pte & (STATE_MASK | WRITE)) == PTE_PRESENT | WRITE).any(axis=1)
        if store.maybe_shared:
            sh = np.zeros(pte.shape, np.bool_)
            sh[present] = store.shared(page[present], shared_rule)
            self.n_shared[idx] = np.count_nonzero(sh, axis=1)
        else:
            self.n_shared[idx] = 0
        self.dirty[idx] = False


@dataclass
class Mm:
    """One process's mm_struct: VMAs in address order and its page tables."""

    name: str
    vmas: list[Vma]
    tables: PageTables
    registered: bool = False  # MMF_VM_HUGEPAGE: on the khugepaged list
    trylock_failures: int = 0  # mmap_read_trylock() failures still to happen

    def find_vma(self, addr: int) -> Vma | None:
        """find_vma(): the first VMA with vm_end > addr."""
        for v in self.vmas:
            if v.end > addr:
                return v
        return None

    def vma_at(self, addr: int) -> Vma | None:
        """The VMA containing page `addr`, or None."""
        v = self.find_vma(addr)
        return v if v is not None and v.start <= addr else None

    def split_at(self, addr: int) -> None:
        """Split the VMA containing `addr` so that a VMA starts at `addr`."""
        for i, v in enumerate(self.vmas):
            if v.start < addr < v.end:
                self.vmas[i:i + 1] = [replace(v, end=addr), replace(v, start=addr)]
                return

    def vmas_in(self, start: int, end: int) -> list[Vma]:
        """VMAs intersecting [start, end), after splitting them at both ends."""
        self.split_at(start)
        self.split_at(end)
        return [v for v in self.vmas if v.start < end and v.end > start]

    def merge(self, touched: list[Vma]) -> list[tuple[Vma, bool]]:
        """Merge adjacent compatible VMAs (vma_merge_existing_range); for every
        touched VMA return the VMA it ended up in and whether a merge happened."""
        out: list[Vma] = []
        merged_into: dict[int, Vma] = {}
        did_merge: set[int] = set()
        for v in self.vmas:
            prev = out[-1] if out else None
            if (prev is not None and prev.end == v.start and prev.flags() == v.flags()
                    and prev.region == v.region
                    and (prev.anon_vma == v.anon_vma or not prev.anon_vma or not v.anon_vma)):
                prev.end = v.end
                prev.anon_vma = prev.anon_vma or v.anon_vma
                merged_into[id(v)] = prev
                did_merge.add(id(prev))
            else:
                out.append(v)
        self.vmas = out
        res = []
        for t in touched:
            final = merged_into.get(id(t), t)
            while id(final) in merged_into:
                final = merged_into[id(final)]
            res.append((final, id(final) in did_merge))
        return res

    def remove_range(self, start: int, end: int) -> None:
        """Drop [start, end) from the VMA list (munmap)."""
        self.split_at(start)
        self.split_at(end)
        self.vmas = [v for v in self.vmas if not (v.start >= start and v.end <= end)]
