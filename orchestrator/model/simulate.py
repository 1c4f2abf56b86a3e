"""Run a workload spec through the model, once per schedule of the real
nondeterminism, and merge the runs into admissible outcomes per checkpoint.

Timing model (each assumption is listed in ASSUMPTIONS and in the prediction):
steps other than wait_scans/sleep take no time; khugepaged passes happen at
wakeups: the first registration on an empty list, sysfs writes of the sleep
knobs or `enabled`, and every scan_sleep_millisecs afterwards. Where the real
order of events is not fixed, a `Chooser` branches, and every combination is
simulated (`enumerate_runs`):
  * a wakeup (first registration on an empty list, a sleep-knob or `enabled`
    write) makes a pass *pending*: it may run after the waking step or after
    any later step before the next wait/checkpoint/sleep ("the pass may be in
    progress when a step runs"); if it overlaps a step that holds the mmap
    write lock of a registered process (MADV_[NO]HUGEPAGE, mprotect, munmap,
    fork) its mmap_read_trylock() of that mm fails: the pass skips the mm but
    still counts in full_scans ("the first wakeup may be lost to lock
    contention");
  * a pending pass may or may not have ended when the next wait_scans reads
    its starting full_scans value, and before or after a checkpoint read;
  * a wait_scans checkpoint may see the state at the full_scans increment or
    after the rest of that wakeup's scanning (only differs when the wakeup
    goes on into the next pass);
  * time series (`sleep` + `checkpoint`) are judged by position, not by
    milliseconds: the kernel starts its sleep after khugepaged_do_scan()
    returns (khugepaged_wait_work()), so on a loaded host every wakeup that
    collapses drifts later, and the driver's own sleep may overshoot. A
    checkpoint in a run of sleeps and checkpoints (a *timed segment*) may
    therefore see the state after any whole wakeup of that segment, from the
    state when the segment began to the state when the next other step begins;
    a wait_scans right after a segment may have begun at any of the segment's
    pass boundaries (its starting full_scans is a choice). With the driver's
    timestamps the segment also runs the wake-ups the kernel can have made by
    its last read (more than scan_sleep_millisecs less one jiffy apart, one
    more per early wake_up: `_wakeup_bound`), as long as full_scans stays within
    the pass the next wait saw (`_extend_segment`): under load the driver
    oversleeps and the kernel is ahead of the model's clock inside a pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from orchestrator.errors import UserError
from orchestrator.model.khugepaged import Khugepaged
from orchestrator.model.machine import DecisionLog, Faults, Machine
from orchestrator.model.madvise_collapse import madvise_collapse
from orchestrator.model.memory import (
    fork,
    madvise_dontneed,
    madvise_flags,
    madvise_pageout,
    mprotect,
    munmap,
    touch,
)
from orchestrator.model.mm import (
    HPAGE_PMD_NR,
    PMD_TABLE,
    PMD_THP,
    PTE_PRESENT,
    PTE_SWAP,
    STATE_MASK,
    BlockMap,
    Mm,
    Vma,
)
from orchestrator.model.prediction import PredictedState, RegionState
from orchestrator.model.profile import VersionProfile
from orchestrator.spec import (
    MTHP_KNOB_DEFAULTS,
    SETTINGS_WRITE_ORDER,
    Step,
    WorkloadSpec,
    layout_addresses,
)

log = logging.getLogger(__name__)

MAX_SCHEDULES = 256

ASSUMPTIONS = (
    "No other process is registered with khugepaged when the workload starts, and khugepaged "
    "waits for the first registration (the driver wrote scan_sleep_millisecs with an empty list).",
    "Steps other than wait_scans and sleep finish well within scan_sleep_millisecs, so no "
    "periodic khugepaged wakeup falls inside them.",
    "Memory is ample: THP allocations succeed unless faults are injected; no reclaim, so the "
    "underused-THP shrinker never runs; pages are on the LRU when scanned (lru_add_drain_all).",
    "hugepages-<N>kB/enabled are the kernel defaults (2048kB inherit, others never) unless the "
    "workload sets them; one NUMA node; no userfaultfd, GUP pins, MADV_FREE or prctl.",
    "MADV_PAGEOUT swaps out every exclusive present page of the range (swap is available and "
    "the driver's per-CPU LRU batches were drained).",
)


class Chooser:
    """Replays a fixed prefix of choices, takes option 0 after it, and records
    every choice point so `enumerate_runs` can explore the others."""

    def __init__(self, forced: list[int]) -> None:
        self.forced = forced
        self.taken: list[tuple[int, int]] = []  # (choice, arity)
        self.labels: list[str] = []

    def choose(self, options: list[str]) -> int:
        """Pick one of `options` (labels describing each possibility)."""
        i = len(self.taken)
        c = self.forced[i] if i < len(self.forced) else 0
        self.taken.append((c, len(options)))
        self.labels.append(options[c])
        return c


@dataclass
class CheckpointRecord:
    """What one run saw at one checkpoint: (sub-label, observation, time, cuts)
    alternatives. `cuts` are the decision-log lengths (number of per-PMD decisions
    made before the checkpoint read) the observation can go with: one, or two when
    the read may fall before or after scans that changed nothing observable."""

    label: str
    step: int
    seen: list[tuple[str, PredictedState, int, tuple[int, ...]]] = field(default_factory=list)
    n_choices: int = 0  # choices made before this checkpoint (they explain it)


@dataclass
class Pending:
    """khugepaged was woken at step `step` and has not scanned yet."""

    step: int
    why: str
    contended: Mm | None = None  # it runs while this mm's mmap_lock is write-held


# ops that hold the calling process's mmap_lock for writing while they run
_WRITE_LOCKED = {("madvise", "hugepage"), ("madvise", "nohugepage"), ("mprotect", None),
                 ("munmap", None), ("fork", None)}


class WorkloadRun:
    """One simulation of a workload under one schedule of choices."""

    def __init__(self, spec: WorkloadSpec, profile: VersionProfile, faults: Faults,
                 chooser: Chooser, log_decisions: bool = True,
                 wait_starts: dict[int, int] | None = None,
                 checkpoint_passes: dict[int, int] | None = None,
                 step_times: dict[int, tuple[int, int]] | None = None) -> None:
        self.spec, self.chooser = spec, chooser
        self.wait_starts = wait_starts or {}
        self.checkpoint_passes = checkpoint_passes or {}
        self.step_times = step_times or {}
        self.wakes: list[int] = []  # steps that called wake_up_interruptible(&khugepaged_wait)
        addrs = layout_addresses(spec)
        self.extent = {r.name: (addrs[r.name] // 4096, addrs[r.name] // 4096 + r.pages)
                       for r in spec.regions}
        self.base = {r.name: addrs[r.name] // 4096 - r.offset_pages for r in spec.regions}
        blocks = BlockMap(self.extent.values())
        self.m = Machine(profile, dict(spec.settings), blocks, faults=faults,
                         log=DecisionLog(log_decisions))
        self.k = Khugepaged(self.m)
        self.scan_sleeps = {int(self.m.sysfs["scan_sleep_millisecs"])}  # every value set
        self.m.new_mm("parent", [self._vma(n) for n in self.extent if spec.region(n).mapped])
        self.results: dict[int, str] = {}
        self.checkpoints: list[CheckpointRecord] = []
        self.pending: Pending | None = None
        self.fs_snaps: dict[int, PredictedState] = {}
        self.fs_end: dict[int, PredictedState] = {}
        self.fs_cut: dict[int, int] = {}  # full_scans value -> decision-log length then
        self.fs_end_cut: dict[int, int] = {}
        self._pending_fs: list[int] = []
        # the timed segment: wake-up boundaries (label, state, time, log length) since it
        # began, and its checkpoints still waiting for the segment's end
        self.aligned: dict[int, str] = {}  # wait step -> pass alignment from the observation
        self.contradicted = ""  # why the observed wait starts rule this schedule out
        self.segment: list[tuple[str, PredictedState, int, int]] | None = None
        self.timed: list[CheckpointRecord] = []
        self.m.on_full_scan = self._on_full_scan
        self.k.on_do_scan_end = self._on_do_scan_end

    # -------------------------------------------------------------- observation

    def _on_full_scan(self, m: Machine) -> None:
        fs = m.counters["full_scans"]
        self.fs_snaps[fs] = self.observe()
        self.fs_cut[fs] = len(m.log)
        self._pending_fs.append(fs)

    def _on_do_scan_end(self, k: Khugepaged) -> None:
        if self.segment is not None:
            n = len(self.segment)
            self.segment.append((f"read after wake-up {n} of the time series (model "
                                 f"{self.m.now_ms} ms, full_scans "
                                 f"{self.m.counters['full_scans']})", self.observe(),
                                 self.m.now_ms, len(self.m.log)))
        if self._pending_fs:
            obs = self.observe()
            for fs in self._pending_fs:
                self.fs_end[fs] = obs
                self.fs_end_cut[fs] = len(self.m.log)
            self._pending_fs = []

    def observe(self, timed_out: bool = False) -> PredictedState:
        """The checkpoint record of the current state."""
        regions = []
        for proc, mm in self.m.mms.items():
            for r in self.spec.regions:
                regions.append((proc, r.name, self._region_state(mm, r.name)))
        return PredictedState(tuple(self.m.counters.items()),
                           tuple(regions), tuple(sorted(self.results.items())), timed_out)

    def _region_state(self, mm: Mm, name: str) -> RegionState:
        """smaps AnonHugePages/Rss/Swap summed over the region's VMAs."""
        t = mm.tables
        huge, rss, swap = [], 0, 0
        for v in mm.vmas:
            if v.region != name:
                continue
            a = v.start
            while a < v.end:
                blk = a // HPAGE_PMD_NR
                e = min(v.end, (blk + 1) * HPAGE_PMD_NR)
                row = self.m.blocks.row_of[blk]
                if t.kind[row] == PMD_THP:
                    huge.append((blk * HPAGE_PMD_NR - self.base[name]) // HPAGE_PMD_NR)
                elif t.kind[row] == PMD_TABLE:
                    st = t.pte[row, a - blk * HPAGE_PMD_NR:e - blk * HPAGE_PMD_NR] & STATE_MASK
                    rss += int(np.count_nonzero(st == PTE_PRESENT))
                    swap += int(np.count_nonzero(st == PTE_SWAP))
                a = e
        huge_kb = 2048 * len(huge)
        return RegionState(huge_kb, huge_kb + 4 * rss, 4 * swap, tuple(huge),
                           self._folios(mm, name))

    def _folios(self, mm: Mm, name: str) -> tuple[tuple[int, int], ...]:
        """PTE-mapped large folios of the region: (page index of the PTE mapping the
        folio's head, folio size in kB), what pagemap + kpageflags show."""
        st = self.m.store
        if not st.any_large:
            return ()
        s, e = self.extent[name]
        out = []
        for blk in range(s // HPAGE_PMD_NR, -(-e // HPAGE_PMD_NR)):
            row = self.m.blocks.row_of[blk]
            if mm.tables.kind[row] != PMD_TABLE:
                continue
            ids = mm.tables.page[row]
            present = (mm.tables.pte[row] & STATE_MASK) == PTE_PRESENT
            heads = np.flatnonzero(present & (ids >= 0) & (st.head[np.maximum(ids, 0)] == ids)
                                   & (st.nr[np.maximum(ids, 0)] > 1))
            for c in heads:
                page = blk * HPAGE_PMD_NR + int(c)
                if s <= page < e:
                    out.append((page - s, 4 * int(st.nr[ids[c]])))
        return tuple(out)

    # -------------------------------------------------------------- steps

    def run(self) -> None:
        """Execute every step; a pass woken by a step may run after it or later."""
        for i, step in enumerate(self.spec.steps):
            if step.op not in ("checkpoint", "sleep") and step.op != "wait_scans":
                self._end_segment()
            handler: Callable[[int, Step], None] = getattr(self, f"_op_{step.op}")
            handler(i, step)
            if step.op not in ("wait_scans", "checkpoint", "sleep"):
                self._place_pending(i, step)
        self._extend_segment(None)
        self._end_segment()

    # -------------------------------------------------------------- time series

    def _begin_segment(self) -> None:
        """A sleep starts (or continues) a timed segment; its first boundary is
        the state when the first sleep began (a pass woken before it has run)."""
        if self.segment is None:
            self.segment = [("read before the time series' first timed wake-up", self.observe(),
                             self.m.now_ms, len(self.m.log))]

    def _end_segment(self) -> None:
        """The segment is over: each of its checkpoints may have seen any of its
        wake-up boundaries (by position, not by time)."""
        if self.segment is not None:
            seen = [self.checkpoint_passes.get(rec.step) for rec in self.timed]
            ahead = max((v for v in seen if v is not None), default=None)
            if ahead is not None and ahead > self.m.counters["full_scans"]:
                self._catch_up(ahead)  # the driver was slow: the kernel went further
            for rec in self.timed:
                rec.seen = [(label, obs, t, (cut,)) for label, obs, t, cut in self.segment]
        self.segment, self.timed = None, []

    def _extend_segment(self, wait: int | None) -> None:
        """Under load the driver's sleeps and reads overshoot, so the kernel may have
        woken more often than the model's clock says before the series' last read.
        Run the timed wake-ups the timestamps allow (`_wakeup_bound`) while
        full_scans stays at most the pass the kernel was at when the series ended:
        the observed start of the wait step `wait` that ends it, or (at the end of
        the workload) the last pass its checkpoints saw. The last wake-up run may
        complete that pass (then it is the one the wait counts: `_record_wait` reads
        its increment and the rest of its scan); every boundary stays a position a
        checkpoint of the series may have seen, judged by counters and the trace."""
        if self.segment is None or not self.timed:
            return
        if wait is not None:
            limit = self.wait_starts.get(wait)
        else:
            limit = max((v for v in (self.checkpoint_passes.get(r.step) for r in self.timed)
                         if v is not None), default=None)
        most = self._wakeup_bound(self.timed[-1].step)
        if limit is None or most is None:
            return
        m, k = self.m, self.k
        while (k.do_scans < most and m.counters["full_scans"] <= limit
               and k.next_event_ms() is not None):
            k.run_next()

    def _wakeup_bound(self, step: int) -> int | None:
        """The most khugepaged_do_scan() calls the kernel can have begun before the
        read of checkpoint `step` was over: khugepaged_wait_work() sleeps until
        khugepaged_should_wakeup() (jiffies >= khugepaged_sleep_expire, set to
        jiffies + msecs_to_jiffies(scan_sleep_millisecs) after each scan), so two
        scans are more than `Khugepaged.min_sleep_ms` apart, unless a
        wake_up_interruptible(&khugepaged_wait) ended the wait early (the first
        registration, a sleep-knob or `enabled` write: at most one scan each, the
        first of which began no earlier than the step that called it). None
        without the driver's timestamps or with scan_sleep_millisecs = 0."""
        gap = min(self.k.min_sleep_ms(ms) for ms in self.scan_sleeps)
        first = self.step_times.get(self.wakes[0]) if self.wakes else None
        read = self.step_times.get(step)
        if gap <= 0 or first is None or read is None:
            return None
        return len(self.wakes) + max(0, read[1] - first[0]) // (gap * 1_000_000)

    # -------------------------------------------------------------- wakeups

    def _wake(self, i: int, why: str) -> None:
        """wake_up_interruptible(&khugepaged_wait) during step i: if that lets the
        thread scan, the pass is pending until `_place_pending` runs it."""
        self.wakes.append(i)
        if self.pending is None and self.k.runnable():
            self.pending = Pending(i, why)

    def _run_pending(self, contended: Mm | None = None) -> None:
        """Run the pending pass now (optionally with one mm's mmap_lock held)."""
        self.pending = None
        if contended is not None:
            contended.trylock_failures = 1
        self.k.wake_up()
        for mm in self.m.mms.values():
            mm.trylock_failures = 0

    def _place_pending(self, i: int, step: Step) -> None:
        """After step i: the pending pass ran after it, during it (finding the
        process's mmap_lock write-held, so that mm is skipped), or later."""
        p = self.pending
        if p is None:
            return
        opts = [f"the pass woken at step {p.step} ({p.why}) ran after step {i}",
                f"the pass woken at step {p.step} had not run by the end of step {i}"]
        mm = self.m.mms.get(step.proc)
        locked = (step.op, step.args.get("advice")) in _WRITE_LOCKED
        if locked and mm is not None and mm.registered:
            opts.append(f"the pass woken at step {p.step} ran during step {i}: "
                        f"{step.proc}'s mmap_lock was write-held ({step.op}), trylock failed")
        c = self.chooser.choose(opts)
        if c == 0:
            self._run_pending()
        elif c == 2:
            nxt = self.spec.steps[i + 1] if i + 1 < len(self.spec.steps) else None
            if nxt is not None and nxt.op == "wait_scans":
                p.contended = mm  # the skipped pass may still end after the wait began
            else:
                self._run_pending(contended=mm)

    def _range_runs(self, step: Step) -> list[tuple[int, int]]:
        """The selected pages as maximal runs [start, end) of page numbers."""
        assert step.region is not None
        start = self.extent[step.region][0]
        idx = self.spec.step_pages(step)
        runs: list[tuple[int, int]] = []
        for i in idx:
            if runs and runs[-1][1] == start + i:
                runs[-1] = (runs[-1][0], start + i + 1)
            else:
                runs.append((start + i, start + i + 1))
        return runs

    def _with_registration(self, i: int, action: Callable[[], None]) -> None:
        """Run a step's action; a first registration (the list was empty) wakes khugepaged."""
        was_empty = not self.k.mm_list
        action()
        if was_empty and self.k.mm_list:
            self._wake(i, f"{self.k.mm_list[0].name} registered")

    def _proc(self, step: Step) -> Mm:
        return self.m.mms[step.proc]

    def _op_touch(self, i: int, step: Step) -> None:
        mm = self._proc(step)
        pages = np.array([p for s, e in self._range_runs(step) for p in range(s, e)], np.int64)
        write = step.args["access"] == "write"
        self._with_registration(i, lambda: touch(self.m, mm, pages, write))

    def _op_madvise(self, i: int, step: Step) -> None:
        mm, advice = self._proc(step), step.args["advice"]
        out: list[str] = []

        def act() -> None:
            for s, e in self._range_runs(step):
                if advice in ("hugepage", "nohugepage"):
                    ok = madvise_flags(self.m, mm, s, e, advice == "hugepage")
                    out.append("ok" if ok else "ENOMEM")
                elif advice == "dontneed":
                    out.append("ok" if madvise_dontneed(self.m, mm, s, e) else "ENOMEM")
                elif advice == "pageout":
                    out.append("ok" if madvise_pageout(self.m, mm, s, e) else "ENOMEM")
                else:
                    out.append(madvise_collapse(self.m, mm, s, e))

        self._with_registration(i, act)
        self.results[i] = next((r for r in out if r != "ok"), "ok")

    def _op_mprotect(self, i: int, step: Step) -> None:
        mm, w = self._proc(step), step.args["prot"] == "rw"
        out: list[bool] = []
        self._with_registration(i, lambda: out.extend(
            mprotect(self.m, mm, s, e, w) for s, e in self._range_runs(step)))
        self.results[i] = "ok" if all(out) else "ENOMEM"

    def _op_munmap(self, i: int, step: Step) -> None:
        mm = self._proc(step)
        for s, e in self._range_runs(step):
            munmap(self.m, mm, s, e)
        self.results[i] = "ok"

    def _vma(self, name: str) -> Vma:
        s, e = self.extent[name]
        return Vma(s, e, writable=self.spec.region(name).prot == "rw", region=name)

    def _op_mmap(self, i: int, step: Step) -> None:
        """mmap(MAP_FIXED_NOREPLACE) of a region declared mapped = false: a new VMA
        without an anon_vma (__mmap_region()'s khugepaged_enter_vma() finds nothing
        eligible for anonymous memory); its first faults may register the mm."""
        assert step.region is not None
        mm = self._proc(step)
        mm.vmas = sorted([*mm.vmas, self._vma(step.region)], key=lambda v: v.start)
        self.results[i] = "ok"

    def _op_fork(self, i: int, step: Step) -> None:
        fork(self.m, self.m.mms["parent"], "child")

    def _op_set(self, i: int, step: Step) -> None:
        knobs = step.args["set"]
        for key in SETTINGS_WRITE_ORDER:
            if key not in knobs:
                continue
            self.m.sysfs[key] = knobs[key]
            if key in ("scan_sleep_millisecs", "alloc_sleep_millisecs"):
                if key == "scan_sleep_millisecs":
                    self.scan_sleeps.add(int(knobs[key]))
                self.k.sleep_expire = 0  # the store resets the timer and wakes the thread
                self._wake(i, f"{key} written")
            elif key == "enabled" or key in MTHP_KNOB_DEFAULTS:  # both start_stop_khugepaged()
                self.k.start_stop()
                if not self.k.running:
                    self.pending = None
                self._wake(i, f"{key}={knobs[key]} written")

    def _op_checkpoint(self, i: int, step: Step) -> None:
        p = self.pending
        if p is not None and not self.chooser.choose([
                f"the pass woken at step {p.step} ran before checkpoint step {i}",
                f"the pass woken at step {p.step} ran after checkpoint step {i}"]):
            self._run_pending()
        seen = self.checkpoint_passes.get(i)
        if (self.segment is None and self.pending is None and seen is not None
                and seen > self.m.counters["full_scans"]):
            self._catch_up(seen)  # periodic wake-ups while the driver's steps ran
        self._record_checkpoint(i, step)
        if self.pending is not None:
            self._run_pending()

    def _record_checkpoint(self, i: int, step: Step) -> None:
        rec = CheckpointRecord(step.args["label"], i,
                               [("", self.observe(), self.m.now_ms, (len(self.m.log),))],
                               len(self.chooser.taken))
        self.checkpoints.append(rec)
        if self.segment is not None:
            self.timed.append(rec)  # filled in when the segment ends

    def _op_sleep(self, i: int, step: Step) -> None:
        """Simulated time passes; every wake-up due runs (no choice: the segment's
        checkpoints are judged by position, see `_end_segment`)."""
        if self.pending is not None:
            self._run_pending()
        self._begin_segment()
        self.k.advance_to(self.m.now_ms + int(step.args["ms"]))

    def _op_wait_scans(self, i: int, step: Step) -> None:
        m, k = self.m, self.k
        self._extend_segment(i)
        base = self._segment_base(i)
        p = self.pending
        if p is not None:
            late = self.chooser.choose([
                f"the pass woken at step {p.step} had ended when wait step {i} began",
                f"the pass woken at step {p.step} was still running when wait step {i} began"])
            self._run_pending(contended=p.contended)
            if not late:
                base = m.counters["full_scans"]
        base = self._align_to_observed(i, base)
        self._end_segment()  # after the alignment: its wake-ups are the series' too
        target = base + int(step.args["count"])
        if target <= m.counters["full_scans"]:  # began earlier in the segment: reached
            self._record_wait(i, step, self._read_pass(i, target))
            return
        deadline = m.now_ms + int(float(step.args["timeout_s"]) * 1000)
        rec = CheckpointRecord(step.args["label"], i, n_choices=len(self.chooser.taken))
        self.checkpoints.append(rec)
        while m.counters["full_scans"] < target:
            t = k.next_event_ms()
            if t is None or t > deadline:
                k.advance_to(deadline)
                rec.seen.append(("wait timed out", self.observe(timed_out=True), m.now_ms,
                                 (len(m.log),)))
                return
            k.run_next()
        self._record_wait(i, step, self._read_pass(i, target), rec)

    def _read_pass(self, i: int, target: int) -> int:
        """The pass wait step i's checkpoint was read at: normally its target, but the
        driver's consistent read waits for the counters to settle, and on a loaded
        host the next periodic wake-up may come first (then run it here too)."""
        seen = self.checkpoint_passes.get(i)
        if seen is None or seen <= target or not self._catch_up(seen):
            return target
        note = f"checkpoint read at full_scans {seen} (observed: a later wake-up came first)"
        self.aligned[i] = f"{self.aligned[i]}; {note}" if i in self.aligned else note
        return seen

    def _align_to_observed(self, i: int, base: int) -> int:
        """Pass alignment: if the driver saw wait step i begin at a later pass than the
        model's, periodic wake-ups fell inside the (slow, loaded) steps before it; run
        them now, so the wait counts the kernel's passes (bounded: 64 wake-ups)."""
        seen = self.wait_starts.get(i)
        if seen is not None and seen < base and not self.contradicted:
            self.contradicted = (f"wait step {i} began at full_scans {seen}, this schedule "
                                 f"at {base}")
        if seen is None or seen <= base:
            return base
        if not self._catch_up(seen):
            return base  # cannot align (no timed wake-up): judged as predicted
        self.aligned[i] = (f"wait step {i} began at full_scans {seen} (observed): periodic "
                           "wake-ups fell inside the steps before it")
        return seen

    def _catch_up(self, passes: int) -> bool:
        """Run the thread's timed wake-ups until full_scans reaches `passes` (the
        kernel was ahead of the model's clock: the driver's steps took time);
        True if it is reached exactly (bounded: 64 wake-ups)."""
        m, k = self.m, self.k
        for _ in range(64):
            if m.counters["full_scans"] >= passes or k.next_event_ms() is None:
                break
            k.run_next()
        return m.counters["full_scans"] == passes

    def _segment_base(self, i: int) -> int:
        """The full_scans value wait step i starts from: after a timed segment, the
        kernel (late against the model's clock) may have been at any of its pass
        boundaries when the wait read it."""
        now = self.m.counters["full_scans"]
        if self.segment is None:
            return now
        seen = sorted({int(dict(o.counters)["full_scans"]) for _, o, _, _ in self.segment})
        if len(seen) < 2:
            return now
        opts = [f"wait step {i} began at full_scans {v} (the kernel's time series was at that "
                "pass)" for v in reversed(seen)]
        return list(reversed(seen))[self.chooser.choose(opts)]

    def _record_wait(self, i: int, step: Step, target: int,
                     rec: CheckpointRecord | None = None) -> None:
        """The wait's checkpoint: the state at the target full_scans increment, or
        after the rest of that wake-up's scan."""
        m = self.m
        if rec is None:
            rec = CheckpointRecord(step.args["label"], i, n_choices=len(self.chooser.taken))
            self.checkpoints.append(rec)
        at_inc, cut_inc = self.fs_snaps[target], self.fs_cut[target]
        at_end = self.fs_end.get(target, self.observe())
        cut_end = self.fs_end_cut.get(target, len(m.log))
        note = self.aligned.get(i, "")
        if at_end == at_inc:  # the read may still fall before or after the rest's scans
            rec.seen.append((note, at_inc, m.now_ms, tuple(sorted({cut_inc, cut_end}))))
            return
        for sub, state, cut in (("checkpoint read at the full_scans increment", at_inc, cut_inc),
                                ("checkpoint read after the rest of that wakeup's scan", at_end,
                                 cut_end)):
            rec.seen.append(("; ".join(x for x in (note, sub) if x), state, m.now_ms, (cut,)))


def enumerate_runs(make: Callable[[Chooser], WorkloadRun]) -> list[WorkloadRun]:
    """Run every combination of choices (depth-first over choice points)."""
    runs: list[WorkloadRun] = []
    prefix: list[int] = []
    while True:
        ch = Chooser(prefix)
        run = make(ch)
        run.run()
        runs.append(run)
        if len(runs) > MAX_SCHEDULES:
            raise UserError(f"workload {run.spec.name}: more than {MAX_SCHEDULES} schedules; "
                            "split it or add wait_scans steps")
        taken = ch.taken
        j = len(taken) - 1
        while j >= 0 and taken[j][0] + 1 >= taken[j][1]:
            j -= 1
        if j < 0:
            return runs
        prefix = [c for c, _ in taken[:j]] + [taken[j][0] + 1]
