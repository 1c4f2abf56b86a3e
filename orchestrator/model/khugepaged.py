"""The khugepaged thread (mm/khugepaged.c): registration, mm_slot round robin,
scan cursor, pages_to_scan budget, sleeping, full_scans.

Each method names the kernel function it mirrors. The thread itself is a
generator (`_thread`, mirroring khugepaged()) that yields when the kernel
thread would sleep; `Khugepaged.wake_up`/`advance_to` resume it, so the
simulated clock decides when passes happen (docs/khugepaged-model.md "The thread").
7.1+ names: collapse_scan_mm_slot() (7.2.13 l.2836), collapse_single_pmd() (l.2779).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from orchestrator.model.collapse import batch_collapsible, collapse_huge_page, install_huge_pmds
from orchestrator.model.machine import PMD_BIT, PMD_ORDER, Machine
from orchestrator.model.mm import HPAGE_PMD_NR, Mm, Vma, hstart_hend
from orchestrator.model.mthp import mthp_collapse
from orchestrator.model.results import CODE_OF, CODES, Scan
from orchestrator.model.scan import limits
from orchestrator.model.scanplan import MAX_PLAN, ScanPlan

log = logging.getLogger(__name__)

JIFFY_MS = 4  # CONFIG_HZ=250 (Debian): msecs_to_jiffies() rounds up to 4 ms steps

Block = tuple[Any, ...]  # what the thread waits for: ("sleep",) | ("list",) | ("alloc", t)


def jiffies_ms(ms: int) -> int:
    """msecs_to_jiffies() expressed back in ms (rounded up to whole jiffies)."""
    return -(-int(ms) // JIFFY_MS) * JIFFY_MS


class Khugepaged:
    """khugepaged_scan (list + cursor) and the khugepaged kthread."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        m.khugepaged = self
        self.mm_list: list[Mm] = []  # khugepaged_scan.mm_head
        self.scan_mm: Mm | None = None  # khugepaged_scan.mm_slot
        self.scan_address = 0  # khugepaged_scan.address (pages)
        self.sleep_expire = 0  # khugepaged_sleep_expire (ms)
        self.stop = False  # kthread_should_stop()
        self.gen: Generator[Block, None, None] | None = None
        self.block: Block | None = None
        self.do_scans = 0
        self.on_do_scan_end: Callable[[Khugepaged], None] | None = None
        # collapse runs of PMDs in one scan_mm_slot() call (only from do_scan(), whose
        # loop would re-enter the mm after each collapse: same outcome, fewer calls)
        self.batching = False
        self.plan: ScanPlan | None = None  # scan results kept across wakeups (scanplan.py)
        self.reuse_plans = True  # False: the reference path, a fresh scan at every call
        if m.pmd_enabled():  # hugepage_init() -> start_stop_khugepaged(); list empty
            self.gen = self._thread()
            self.block = ("list",)

    @property
    def running(self) -> bool:
        """khugepaged_thread != NULL."""
        return self.gen is not None

    # ------------------------------------------------------------ registration

    def enter_vma(self, mm: Mm, vma: Vma) -> bool:
        """khugepaged_enter_vma(): register `mm` if it is not yet and `vma` is eligible.
        Returns True if this call registered it and the list was empty (a wakeup)."""
        if not mm.registered and self.m.pmd_enabled():
            if self.m.collapse_orders(mm, vma):  # 7.2: collapse_possible() (l.586), any order
                return self.enter(mm)
        return False

    def enter(self, mm: Mm) -> bool:
        """__khugepaged_enter(): append to the list tail; True if the list was empty
        (the kernel then does wake_up_interruptible(&khugepaged_wait))."""
        if mm.registered:
            return False
        mm.registered = True
        wakeup = not self.mm_list
        self.mm_list.append(mm)
        return wakeup

    def fork(self, parent: Mm, child: Mm) -> bool:
        """khugepaged_fork(): the child is registered iff the parent is."""
        return self.enter(child) if parent.registered else False

    def has_work(self) -> bool:
        """khugepaged_has_work()."""
        return bool(self.mm_list) and self.m.pmd_enabled()

    # ------------------------------------------------------------ the scan

    def scan_mm_slot(self, pages: int) -> tuple[int, Scan]:
        """khugepaged_scan_mm_slot(pages, &result): scan one mm from the cursor
        until the budget is used, a collapse was attempted, or the mm is done."""
        progress, result = 0, Scan.FAIL
        if self.scan_mm is None:
            self.scan_mm, self.scan_address = self.mm_list[0], 0
        mm = self.scan_mm
        if mm.trylock_failures:  # mmap_read_trylock() failed: no progress, mm "finished"
            mm.trylock_failures -= 1
            finished = True
        else:
            progress += 1
            finished, progress, result = self._walk_vmas(mm, pages, progress, result)
        if finished:  # hpage_collapse_test_exit(mm) || !vma
            self._advance_cursor(mm)
        return progress, result

    def _advance_cursor(self, mm: Mm) -> None:
        """The cursor leaves `mm`: next slot, or end of pass -> ++khugepaged_full_scans."""
        i = self.mm_list.index(mm)
        if i + 1 < len(self.mm_list):
            self.scan_mm, self.scan_address = self.mm_list[i + 1], 0
        else:
            self.scan_mm = None
            self.m.count("full_scans")
            if self.m.on_full_scan is not None:
                self.m.on_full_scan(self.m)
        # collect_mm_slot(): frees the slot only if the mm is exiting (never here)

    def _walk_vmas(self, mm: Mm, pages: int, progress: int,
                   result: Scan) -> tuple[bool, int, Scan]:
        """The for_each_vma() loop of khugepaged_scan_mm_slot(). Returns
        (mm finished, progress, last result)."""
        m = self.m
        for vma in [v for v in mm.vmas if v.end > self.scan_address]:
            orders = m.collapse_orders(mm, vma)
            if not orders:
                progress += 1  # skip: ineligible VMA
                continue
            hstart, hend = hstart_hend(vma)
            if self.scan_address > hend:
                progress += 1
                continue
            self.scan_address = max(self.scan_address, hstart)
            while self.scan_address < hend:
                done, progress, result = self._scan_pmds(mm, vma, orders, hend, pages,
                                                         progress, result)
                if done:  # mmap_lock dropped by a collapse attempt, or budget used
                    return False, progress, result
        return True, progress, result

    def _scan_pmds(self, mm: Mm, vma: Vma, orders: int, hend: int, pages: int,
                   progress: int, result: Scan) -> tuple[bool, int, Scan]:
        """The inner `while (khugepaged_scan.address < hend)` loop, vectorised: the
        PMDs from the cursor are taken from a scan plan (scanplan.py) up to the first
        collapse attempt or the PMD after which the budget is used. A PMD costs
        HPAGE_PMD_NR ("pmd" progress) or the PTEs examined, 1 without a PTE table
        ("pte" progress, 7.1+ collapse_scan_pmd l.1587). Returns (stop this mm visit,
        progress, result); (False, ...) with PMDs left means "call again". `orders`:
        collapse_possible_orders() of `vma`, as the caller found them."""
        m = self.m
        b0 = self.scan_address // HPAGE_PMD_NR
        n_left = (hend - self.scan_address) // HPAGE_PMD_NR
        plan = self._plan(mm, b0, n_left, pages - progress, orders)
        i = plan.pos
        n = min(plan.n, i + n_left)  # this VMA's PMDs in the plan
        hit = min(int(plan.next_hit[i]), n)  # the first collapse attempt
        end = plan.budget_end(i, pages - progress)  # the budget is used after PMD end-1
        done = min(end, hit)  # PMDs [i, done) are scanned without a collapse attempt
        if done > i:
            plan.count_exceed(m, i, done)
            self._log(mm, plan, i, done)
            result = CODES[int(plan.batch.codes[done - 1])]
            self.scan_address += (done - i) * HPAGE_PMD_NR
            progress += plan.spent(i, done)
            plan.pos = done
        if end <= hit:  # budget used
            return True, progress, result
        if hit == n:  # no collapse attempt in this VMA's PMDs of the plan: call again
            return False, progress, result
        if self.batching and orders == PMD_BIT and batch_collapsible(m, mm):
            return self._collapse_run(mm, vma, plan, hit, n, pages, progress)
        # collapse_scan_pmd() -> collapse_huge_page(), lock dropped
        result = self._collapse(mm, plan.r0 + hit, orders, int(plan.batch.unmapped[hit]))
        self._log(mm, plan, hit, hit + 1, result)
        if result is Scan.SUCCEED:  # collapse_single_pmd() l.2831
            m.count("pages_collapsed")
        self.scan_address += HPAGE_PMD_NR
        plan.pos = hit + 1
        return True, progress + plan.spent(hit, hit + 1), result

    def _plan(self, mm: Mm, b0: int, n_left: int, rem: int, orders: int) -> ScanPlan:
        """The scan plan for the PMDs from block `b0`: the current one if it is still
        valid (scanplan.py), else a new one for the PMDs the budget `rem` can reach
        (at least one), or, when the previous plan was used up, twice its size."""
        m = self.m
        fill = m.profile.mthp_collapse and orders != PMD_BIT
        key = (limits(m, True, fill), fill)
        old = self.plan
        if self.reuse_plans and old is not None and old.usable(m, mm, b0, key):
            return old
        rows = max(1, -(-rem // HPAGE_PMD_NR))  # the PMDs the budget reaches at 512 each
        if self.reuse_plans and old is not None and old.pos == old.n:  # used up: grow
            rows = max(rows, min(2 * old.n, MAX_PLAN))
        self.plan = ScanPlan.build(m, mm, b0, min(n_left, rows), key)
        return self.plan

    def _collapse_run(self, mm: Mm, vma: Vma, plan: ScanPlan, i: int, n: int,
                      pages: int, progress: int) -> tuple[bool, int, Scan]:
        """A run of PMDs from plan index `i` that all scanned SUCCEED with no swap
        entry, collapsed at once. One by one, each collapse would return to
        khugepaged_do_scan() (progress >= budget ends the wakeup) and re-enter the
        mm (+1 progress, same cursor): the run stops where that budget check would."""
        m = self.m
        run = min(int(plan.run_end[i]), n) - i
        row, b = plan.r0 + i, plan.b0 + i
        if run == 0:  # swap entries: the per-PMD path swaps them in
            result = self._collapse(mm, row, PMD_BIT, int(plan.batch.unmapped[i]))
            self._log(mm, plan, i, i + 1, result)
            m.count("pages_collapsed", result is Scan.SUCCEED)
            self.scan_address += HPAGE_PMD_NR
            plan.pos = i + 1
            return True, progress + HPAGE_PMD_NR, result
        # after collapse j: progress + (j+1)*512 + j re-entries; stop once >= pages
        run = min(run, max(1, -(-(pages - progress + 1) // (HPAGE_PMD_NR + 1))))
        install_huge_pmds(m, mm, row, row + run, vma.writable)
        m.alloc_attempts += run
        for name in ("thp_collapse_alloc", "pages_collapsed"):
            m.count(name, run)
        m.count_mthp(PMD_ORDER, "collapse_alloc", run)
        for j in range(run if m.log_collapses else 0):
            m.log_collapse(mm, (b + j) * HPAGE_PMD_NR, PMD_ORDER, Scan.SUCCEED, "khugepaged")
        self._log(mm, plan, i, i + run)
        self.scan_address += run * HPAGE_PMD_NR
        plan.pos = i + run
        return True, progress + run * (HPAGE_PMD_NR + 1) - 1, Scan.SUCCEED

    def _collapse(self, mm: Mm, row: int, orders: int, unmapped: int) -> Scan:
        """After a SUCCEED scan: mthp_collapse() (7.2) or collapse_huge_page()."""
        if self.m.profile.mthp_collapse:
            return mthp_collapse(self.m, mm, row, self.scan_address, unmapped, orders)
        return collapse_huge_page(self.m, mm, row, self.scan_address, unmapped,
                                  is_khugepaged=True)

    def _log(self, mm: Mm, plan: ScanPlan, i: int, j: int, result: Scan | None = None) -> None:
        """The mm_khugepaged_scan_pmd events of plan PMDs [i, j) (with `result`
        instead of the scan's SUCCEED for a PMD whose collapse was attempted)."""
        if not self.m.log.enabled:
            return
        codes = plan.batch.codes[i:j]
        if result is not None:
            codes = np.array([CODE_OF[result]], np.int8)
        addr = (plan.b0 + np.arange(i, j)) * HPAGE_PMD_NR
        self.m.log.add(self.m.now_ms, self.m.counters["full_scans"] + 1, mm.name, "khugepaged",
                       addr, codes, {k: v[i:j] for k, v in plan.batch.counts().items()})

    # ------------------------------------------------------------ the thread

    def _thread(self) -> Generator[Block, None, None]:
        """khugepaged(): scan, then wait, until kthread_stop()."""
        while not self.stop:
            yield from self.do_scan()
            yield from self.wait_work()
        self.scan_mm = None  # the cursor slot is collected (freed only if exiting)

    def do_scan(self) -> Generator[Block, None, None]:
        """khugepaged_do_scan(): spend up to pages_to_scan, at most one pass
        through the list head; one alloc-sleep after an allocation failure."""
        m = self.m
        progress, pass_through_head, wait = 0, 0, True
        pages = int(m.sysfs["pages_to_scan"])  # READ_ONCE once per wakeup
        result = Scan.SUCCEED
        # lru_add_drain_all(): the model keeps every page on the LRU
        while True:
            if self.stop:
                break
            if self.scan_mm is None:
                pass_through_head += 1
            if self.has_work() and pass_through_head < 2:
                self.batching = True  # this loop re-enters after each collapse anyway
                p, result = self.scan_mm_slot(pages - progress)
                self.batching = False
                progress += p
            else:
                progress = pages
            if progress >= pages:
                break
            if result is Scan.ALLOC_HUGE_PAGE_FAIL:
                if not wait:
                    break
                wait = False
                # khugepaged_alloc_sleep(): any wake_up on khugepaged_wait ends it
                yield ("alloc", m.now_ms + jiffies_ms(m.sysfs["alloc_sleep_millisecs"]))
        self.do_scans += 1
        if self.on_do_scan_end is not None:
            self.on_do_scan_end(self)

    def wait_work(self) -> Generator[Block, None, None]:
        """khugepaged_wait_work(): timed sleep while there is work, else wait
        for the first registration (only while PMD THPs are enabled)."""
        if self.has_work():
            # scan_sleep_millisecs = 0 means no sleep; modelled as one jiffy so time advances
            ms = max(jiffies_ms(self.m.sysfs["scan_sleep_millisecs"]), JIFFY_MS)
            self.sleep_expire = self.m.now_ms + ms
            yield ("sleep",)
            return
        if self.m.pmd_enabled():
            yield ("list",)

    @staticmethod
    def min_sleep_ms(scan_sleep_ms: int) -> int:
        """The least real time a khugepaged_wait_work() sleep of `scan_sleep_ms` lasts:
        khugepaged_sleep_expire = jiffies + msecs_to_jiffies(ms) is reached after that
        many jiffy ticks, the first of which may come right after the sleep began (so
        one jiffy less); 0 for no sleep (scan_sleep_millisecs = 0)."""
        return max(0, jiffies_ms(scan_sleep_ms) - JIFFY_MS) if scan_sleep_ms else 0

    # ------------------------------------------------------------ scheduling

    def _ready(self) -> bool:
        """Is the wait condition of the current block satisfied (after a wake_up)?"""
        if self.block is None:
            return False
        kind = self.block[0]
        if kind == "sleep":  # khugepaged_should_wakeup()
            return self.stop or self.m.now_ms >= self.sleep_expire
        if kind == "list":  # khugepaged_wait_event()
            return bool(self.mm_list) or self.stop
        return True  # a new thread, or an alloc sleep (any wake_up ends it)

    def _resume(self) -> None:
        assert self.gen is not None
        try:
            self.block = next(self.gen)
        except StopIteration:
            self.gen, self.block = None, None

    def wake_up(self) -> None:
        """wake_up_interruptible(&khugepaged_wait): run the thread if its wait is over."""
        if self.running and self._ready():
            self._resume()

    def runnable(self) -> bool:
        """Would a wake_up() now start a scan (the thread's wait condition holds)?"""
        return self.running and self._ready()

    def next_event_ms(self) -> int | None:
        """When the thread wakes up by itself, or None (untimed wait / no thread)."""
        if self.block is None:
            return None
        if self.block[0] == "sleep":
            return max(self.sleep_expire, self.m.now_ms)
        if self.block[0] == "alloc":
            return max(int(self.block[1]), self.m.now_ms)
        return None

    def run_next(self) -> bool:
        """Advance the clock to the thread's next timed wakeup and run it; False if none."""
        t = self.next_event_ms()
        if t is None:
            return False
        self.m.now_ms = t
        self._resume()
        return True

    def advance_to(self, t: int) -> None:
        """Let simulated time pass until `t`, running every wakeup due before it."""
        while (nxt := self.next_event_ms()) is not None and nxt <= t:
            self.run_next()
        self.m.now_ms = max(self.m.now_ms, t)

    def start_stop(self) -> None:
        """start_stop_khugepaged(): called on every write to `enabled`. A new
        thread scans as soon as it runs, and the kernel then wakes the thread if
        the list is non-empty; both only make it runnable here: the caller
        decides when it runs (`runnable()` / `wake_up()`)."""
        if self.m.pmd_enabled():
            if not self.running:  # kthread_run()
                self.stop = False
                self.gen = self._thread()
                self.block = ("new",)
        elif self.running:  # kthread_stop(): wake the thread and wait for it to exit
            self.stop = True
            while self.running:
                self._resume()
            self.stop = False
