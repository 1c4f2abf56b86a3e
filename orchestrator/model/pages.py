"""Pages and folios: the mapcounts that decide "shared" (struct page / struct folio).

Pages are integer ids into growable numpy arrays. A folio is a run of
consecutive ids whose `head` is the first; an order-0 page is its own folio.
Only what the khugepaged rules read is kept: per-page PTE mapcount, per-folio
entire (PMD) mapcount, and the PageAnonExclusive bit.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

NO_PAGE = -1


class PageStore:
    """All anonymous pages of the simulated machine."""

    def __init__(self, capacity: int = 1024) -> None:
        self.n = 0
        self.mapcount = np.zeros(capacity, np.int32)  # PTE mappings of this page
        self.head = np.zeros(capacity, np.int32)  # folio head id
        self.nr = np.ones(capacity, np.int32)  # folio_nr_pages (valid at the head)
        self.entire = np.zeros(capacity, np.int32)  # folio_entire_mapcount (PMD mappings)
        self.exclusive = np.zeros(capacity, np.bool_)  # PageAnonExclusive
        # Fast paths: no page was ever mapped twice / no large folio is PTE-mapped.
        self.maybe_shared = False
        self.any_large = False

    def _grow(self, need: int) -> None:
        cap = len(self.mapcount)
        if need <= cap:
            return
        # twice the need: collapsing every mapped page once allocates as many new ids
        # again, and calloc'd slots cost nothing until used (no copy mid-pass)
        new = max(2 * need, 2 * cap)
        for name in ("mapcount", "head", "nr", "entire", "exclusive"):
            old = getattr(self, name)
            arr = np.zeros(new, old.dtype)  # calloc: untouched slots cost nothing
            arr[:cap] = old
            setattr(self, name, arr)

    def alloc(self, count: int) -> np.ndarray:
        """`count` new exclusive order-0 pages, not yet mapped (mapcount 0)."""
        first = self.n
        self._grow(first + count)
        ids = np.arange(first, first + count, dtype=np.int32)
        self.head[first:first + count] = ids
        self.nr[first:first + count] = 1
        self.exclusive[first:first + count] = True
        self.n += count
        return ids

    def alloc_folios(self, count: int, nr: int) -> np.ndarray:
        """`count` new exclusive large folios of `nr` pages each, consecutive ids,
        unmapped; returns their head ids."""
        first = self.n
        total = count * nr
        if first + total > len(self.mapcount):
            self._grow(first + total)
        heads = np.arange(first, first + total, nr, dtype=np.int32)
        self.head[first:first + total].reshape(count, nr)[:] = heads[:, None]
        self.nr[first:first + total] = 1
        self.nr[first:first + total:nr] = nr  # the heads (mapcounts 0: ids are never reused)
        self.exclusive[first:first + total] = True
        self.n += total
        self.any_large = True
        return heads

    def alloc_folio(self, nr: int) -> int:
        """A new exclusive large folio of `nr` pages; returns its head id."""
        ids = self.alloc(nr)
        h = int(ids[0])
        self.head[ids] = h
        self.nr[h] = nr
        self.any_large = True
        return h

    def map_ptes(self, ids: np.ndarray, delta: int) -> None:
        """Add `delta` PTE mappings to each page in `ids` (distinct ids)."""
        if len(ids) == 0:
            return
        self.mapcount[ids] += delta
        if delta > 0 and not self.maybe_shared and np.any(self.mapcount[ids] > 1):
            self.maybe_shared = True

    def folio_mapcount(self, h: int) -> int:
        """folio_mapcount(): PTE mappings of all pages plus PMD mappings."""
        n = int(self.nr[h])
        return int(self.mapcount[h:h + n].sum()) + int(self.entire[h])

    def shared(self, ids: np.ndarray, rule: str) -> np.ndarray:
        """Per page id: would the scan count it as shared? (6.12 folio_likely_mapped_shared)

        rule "page_mapcount" (6.1): that page mapped more than once.
        rule "folio_likely_mapped_shared" (6.12), for a large folio: total mapcount <= 1
        -> no; entire mapcount > 0 or total > nr_pages -> yes; else the first
        subpage's mapcount > 1. rule "folio_maybe_mapped_shared" (7.0) is
        modelled as "any page of the folio mapped more than once or PMD-mapped
        twice" (for order-0 pages all three agree).
        """
        if not self.maybe_shared or len(ids) == 0:
            return np.zeros(len(ids), np.bool_)
        out = self.mapcount[ids] > 1
        if rule == "page_mapcount" or not self.any_large:
            return out
        heads = self.head[ids]
        large = self.nr[heads] > 1
        if not large.any():
            return out
        for h in np.unique(heads[large]):
            verdict = self._folio_shared(int(h), rule)
            out[heads == h] = verdict
        return out

    def _folio_shared(self, h: int, rule: str) -> bool:
        n = int(self.nr[h])
        total = self.folio_mapcount(h)
        if rule == "folio_maybe_mapped_shared":
            return bool(self.entire[h] > 1 or (self.mapcount[h:h + n] > 1).any()
                        or (self.entire[h] > 0 and self.mapcount[h:h + n].any()))
        if total <= 1:
            return False
        if self.entire[h] > 0 or total > n:
            return True
        return bool(self.mapcount[h] > 1)
