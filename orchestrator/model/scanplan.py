"""Fast path of khugepaged's PMD loop: a `ScanPlan` keeps the scan_rows() results
of a run of PMDs across khugepaged wakeups (speed only; docs/khugepaged-model.md
"Speed: scan plans").

The kernel scans each PMD when its cursor reaches it: with the default budget
(pages_to_scan 4096) that is 8 PMDs per wakeup, and evaluating 8 rows per numpy
call costs far more in call overhead than in arithmetic. A plan evaluates many
PMDs ahead at once and hands them out wakeup by wakeup.

Why a plan gives the same results as a scan done when the cursor arrives: the
result of hpage_collapse_scan_pmd()/collapse_scan_pmd() for one PMD (its code,
its trace counts and the PTEs it examined) is a function of
  (a) that PMD's entry, its PTE table and the mapcounts/folios of the pages it
      maps (scan_rows reads nothing else of the row's neighbours),
  (b) the limits the scan applies (max_ptes_none/swap/shared, the 7.2 bitmap
      rule), and
  (c) for an empty PMD on profiles with PMD_NULL/PMD_NONE, whether its PUD exists.
Every change to (a) goes through Machine.mark_dirty(rows), which stamps the
rows with a new change number in every mm (the discipline the cached row
summaries of mm.py already rely on). A plan is used for the PMD under the
cursor only if
  - it belongs to the same mm (and page tables), the cursor is exactly where the
    plan's last use left it (`pos`), and PMDs are left in it;
  - (b) is equal (`key`) and, where it matters, (c) is (`puds`);
  - no row from the cursor to the plan's end was stamped after the plan was
    computed (khugepaged's own collapses stamp only rows behind the cursor).
Otherwise a new plan is computed. `Khugepaged.reuse_plans = False` is the
reference path: a fresh plan for exactly the PMDs the budget can reach at every
call, as the kernel scans them; tests/unit/test_model_scanplan.py checks on
random layouts, settings and mutations between wakeups, for every profile, that
both paths give the same counters, decision and collapse logs and page tables.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from orchestrator.model.machine import PMD_ORDER, Machine
from orchestrator.model.mm import HPAGE_PMD_NR, Mm, PageTables
from orchestrator.model.scan import (
    C_SUCCEED,
    EXCEED_COUNTER,
    EXCEED_STAT,
    ScanBatch,
    scan_rows,
)

log = logging.getLogger(__name__)

MAX_PLAN = 4096  # PMDs a plan grows to when plans keep being used up (speed only)

Key = tuple[tuple[int, int, int], bool]  # (limits, fill_bitmap)


@dataclass
class ScanPlan:
    """scan_rows() for PMD rows [r0, r0 + n) (blocks [b0, b0 + n)) of one mm, plus
    prefix tables that answer each wakeup's questions in O(1) numpy calls:
      cum[i]      cc->progress units of PMDs [0, i) ("pmd": 512 each; "pte": examined)
      next_hit[i] the first PMD >= i whose scan ends in SUCCEED (n if none)
      run_end[i]  the first PMD >= i that is not SUCCEED-without-swap (n if none)
      exceed      per EXCEED_* code present: how many of PMDs [0, i) hit it."""

    mm: Mm
    tables: PageTables
    b0: int
    r0: int
    n: int  # PMDs in the plan
    key: Key
    puds: frozenset[int] | None
    stamp: int  # Machine.changes when computed
    batch: ScanBatch
    cum: np.ndarray
    next_hit: np.ndarray
    run_end: np.ndarray
    exceed: dict[int, np.ndarray] = field(default_factory=dict)
    pos: int = 0  # the next PMD the cursor will scan
    seen: int = 0  # Machine.changes when the plan was last found valid

    @classmethod
    def build(cls, m: Machine, mm: Mm, b0: int, n: int, key: Key) -> ScanPlan:
        """Scan PMDs [b0, b0 + n) of `mm` now (see the module docstring)."""
        r0, r1 = m.blocks.rows(b0, b0 + n)
        batch = scan_rows(m, mm, r0, r1, is_khugepaged=True, fill_bitmap=key[1])
        cost = batch.examined if m.profile.progress == "pte" else np.full(n, HPAGE_PMD_NR)
        cum = np.zeros(n + 1, np.int64)
        np.cumsum(cost, out=cum[1:])
        idx = np.arange(n)
        ok = (batch.codes == C_SUCCEED) & (batch.unmapped == 0)
        puds = None if m.profile.empty_pmd_codes == "no_pte_table" else frozenset(mm.tables.puds)
        plan = cls(mm, mm.tables, b0, r0, n, key, puds, m.changes, batch, cum,
                   _next_at_or_after(np.where(batch.codes == C_SUCCEED, idx, n)),
                   _next_at_or_after(np.where(ok, n, idx)), seen=m.changes)
        for code in EXCEED_COUNTER:
            hit = batch.codes == code
            if hit.any():
                plan.exceed[code] = np.concatenate([[0], np.cumsum(hit)])
        return plan

    def usable(self, m: Machine, mm: Mm, b0: int, key: Key) -> bool:
        """May the PMD at block `b0` of `mm` be taken from this plan (module docstring)?"""
        if (mm is not self.mm or mm.tables is not self.tables or self.pos >= self.n
                or b0 != self.b0 + self.pos or key != self.key):
            return False
        if self.puds is not None and self.puds != mm.tables.puds:
            return False
        if m.changes != self.seen:
            lo = self.r0 + self.pos
            if (self.tables.changed[lo:self.r0 + self.n] > self.stamp).any():
                return False
            self.seen = m.changes
        return True

    def budget_end(self, i: int, rem: int) -> int:
        """The end (exclusive) of the PMDs from `i` after which `rem` progress units are
        spent (at least one PMD), or n + 1 if the plan ends first."""
        target = int(self.cum[i]) + rem
        j = int(np.searchsorted(self.cum, target, side="left"))
        return max(j, i + 1)

    def spent(self, i: int, j: int) -> int:
        """Progress units of PMDs [i, j)."""
        return int(self.cum[j] - self.cum[i])

    def count_exceed(self, m: Machine, i: int, j: int) -> None:
        """scan.count_exceed() for the PMDs [i, j)."""
        for code, cum in self.exceed.items():
            k = int(cum[j] - cum[i])
            if k:
                m.count(EXCEED_COUNTER[code], k)
                m.count_mthp(PMD_ORDER, EXCEED_STAT[code], k)


def _next_at_or_after(marks: np.ndarray) -> np.ndarray:
    """For each i, min(marks[i:]) (with a sentinel n at index n)."""
    n = len(marks)
    out = np.empty(n + 1, np.int64)
    out[n] = n
    if n:
        out[:n] = np.minimum.accumulate(marks[::-1])[::-1]
    return out
