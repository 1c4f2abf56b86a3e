"""Per-PMD comparison: the kernel's mm_khugepaged_scan_pmd events vs the model's decision log.

With a tracing kernel (kconfigs/debug.config) the driver records the huge_memory
trace events of the workload; `trace.locate_scans` turns them into `PmdScan`s.
This module decides whether one model outcome (one schedule at one checkpoint)
agrees with them. The rule, exactly:

*Streams.* A stream is one process (``parent`` / ``child``) in one context:

* ``khugepaged``: events from the khugepaged thread whose ``mm`` is the process's
  mm, named by the driver's beacon (the first MADV_COLLAPSE of that pid, on an
  empty PMD outside every region; the beacon itself is never compared). Model
  side: the decisions with ``by == "khugepaged"`` and that ``proc``.
* ``madvise``: events from the process's own pid after its beacon, i.e. its
  MADV_COLLAPSE calls. Model side: ``by == "madvise_collapse"``.

Events of any other mm (khugepaged scanning unrelated processes) are ignored.
``mm_collapse_huge_page`` is not compared separately: the scan_pmd event that
ends the same ``hpage_collapse_scan_pmd`` call already carries its result as
``status`` (spec 4.5), and the model logs that one result.

*Checkpoints.* At every checkpoint C the model outcome says which decisions came
before the checkpoint read: ``decisions[:cut]`` for one of its cuts
(`Outcome.cuts`; two when the read may fall before or after scans that changed
nothing observable). The kernel events before C are those the timestamps allow:
every event that surely happened before the driver took C's timestamp (the
checkpoint reads the counters right after it) must be counted, and every event
that surely happened after the driver's next record after C (the read is over
by then) must not; the printed trace time is rounded to the microsecond
(`TraceEvent.earliest_ns` / `latest_ns`), so an event within that rounding of
either bound may fall on either side. C agrees when, for some cut, in every
stream the model's n decisions before C and the kernel's first n events are an
admissible kernel prefix (n within the bounds above) and equal one by one:

* the same status (the SCAN_* name: SUCCEED, EXCEED_NONE_PTE, PMD_MAPPED,
  PAGE_RO, ...), and
* where the kernel event was placed on a PMD by its scan_pfn (``pfn``: the pfn
  was in the process's pagemap snapshot taken before it), the same
  (process, region, PMD) as the model's decision.

Because every checkpoint compares everything since the start, agreement at
consecutive checkpoints is the same as agreement of each checkpoint interval:
for each (process, region, PMD) the kernel's sequence of statuses between the
two checkpoints equals the model's decisions for that PMD in that interval.

*Why a stream, not a PMD, is the unit.* Trace events carry no address. Within a
stream the kernel is sequential and ordered: khugepaged walks an mm's VMAs and
PMDs in address order and passes follow each other; MADV_COLLAPSE walks its
range in order, synchronously in the caller. So the i-th event of a stream is
the i-th PMD examination of that stream, and equal streams mean equal per-PMD
sequences under that assignment, with the PMD named by the model's decision.
Placement by pfn is independent evidence for that assignment and is checked;
placements by order or by a single candidate (see trace.py) are guesses from
the walk order and the VMAs at the nearest checkpoint, so they are only shown.
Events whose pfn is not in any snapshot
are common and expected: a collapse's allocation may compact memory and migrate
the very pages being scanned, and the event reports the pfn seen at the end.

*Edge cases, from mm/khugepaged.c (6.12).* A pass whose
``mmap_read_trylock`` fails in ``khugepaged_scan_mm_slot`` jumps to
``breakouterloop_mmap_lock`` before any ``hpage_collapse_scan_pmd`` and so emits
no event; the model logs no decision for it either, so only the schedules that
chose the contention have fewer decisions, and the kernel's count picks among
them. ``hpage_collapse_scan_pmd`` traces at its ``out:`` label on every path, so
every examined PMD emits exactly one event, also for the early exits (PMD_NONE,
PMD_NULL, PMD_MAPPED) and for the collapse result. In ``madvise_collapse`` a
block whose ``hugepage_vma_revalidate`` fails (after an earlier block dropped
the lock) ends the call unscanned: no event, and no model decision. Scans after
the last checkpoint are not compared: the model predicts nothing about them.

*No weaker invariant is used.* The only freedom is what the data cannot decide:
the model's own nondeterminism (schedules, and the two cuts of a read) and the
timestamps' (the checkpoint read takes time; the trace prints rounded
microseconds). A time series' cuts are the model's whole wake-ups up to the most
the driver's timestamps allow (`WorkloadRun._wakeup_bound`: khugepaged_wait_work()
sleeps more than msecs_to_jiffies(scan_sleep_millisecs) - 1 jiffies between
scans; under load the kernel may be that far ahead of the model's clock inside a
pass, where no counter shows it), never beyond the pass the next wait saw; the
kernel's events before each read are still bounded by the trace timestamps above.
Statuses are compared exactly; the events' counts (none_or_zero, referenced, ...)
are shown in a mismatch but not compared.

When a process's mm is not named in the trace (no beacon event), its streams
are not compared and the reason is reported; a trace that lost events should
not be passed here at all (see `compare.load_scans`).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.spec import PMD_SIZE
from orchestrator.suites.workloads.observation import Checkpoint, Observation
from orchestrator.suites.workloads.trace import PmdScan

log = logging.getLogger(__name__)

KHUGEPAGED, MADVISE = "khugepaged", "madvise"
StreamKey = tuple[str, str]  # (proc, context)


@dataclass
class KernelScans:
    """The trace side of the comparison, prepared once per observation.

    `streams`: (proc, context) -> its events in trace order; `unchecked`: proc ->
    why its events cannot be compared; `total`: events compared."""

    streams: dict[StreamKey, list[PmdScan]] = field(default_factory=dict)
    unchecked: dict[str, str] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)  # region -> start address

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.streams.values())


def kernel_scans(scans: Sequence[PmdScan], obs: Observation) -> KernelScans:
    """Group `scans` (from `trace.locate_scans`) into streams (see the module doc)."""
    mm_proc = {s.event.mm: s.proc for s in scans
               if s.source == "beacon" and s.event.mm and s.proc is not None}
    named = set(mm_proc.values())
    out = KernelScans(starts=dict(obs.regions))
    for proc in sorted(set(obs.pids) | set(obs.beacons)):
        if proc not in named:
            out.unchecked[proc] = ("its beacon event is not in the trace"
                                   if proc in obs.beacons else "the driver named no mm for it")
    for s in scans:
        if s.source == KHUGEPAGED and s.event.mm in mm_proc:
            key = (mm_proc[s.event.mm] or "", KHUGEPAGED)
        elif s.source == MADVISE and s.proc in named:
            key = (s.proc or "", MADVISE)
        else:
            continue
        out.streams.setdefault(key, []).append(s)
    return out


# --------------------------------------------------------------------------- the model side


@dataclass
class ModelStreams:
    """A schedule's decision log split into streams: (proc, context) -> log
    indices and decisions, both in log order."""

    index: dict[StreamKey, list[int]]
    decisions: dict[StreamKey, list[Mapping[str, Any]]]

    def prefix(self, key: StreamKey, cut: int) -> int:
        """How many of the stream's decisions lie in ``log[:cut]``."""
        return bisect.bisect_left(self.index.get(key, []), cut)


def model_streams(decisions: Sequence[Mapping[str, Any]]) -> ModelStreams:
    """Split a decision log (`Schedule.decisions`) into streams."""
    index: dict[StreamKey, list[int]] = {}
    out: dict[StreamKey, list[Mapping[str, Any]]] = {}
    for i, d in enumerate(decisions):
        ctx = KHUGEPAGED if d.get("by") == "khugepaged" else MADVISE
        key = (str(d.get("proc")), ctx)
        index.setdefault(key, []).append(i)
        out.setdefault(key, []).append(d)
    return ModelStreams(index, out)


def alternative_cuts(alt: Mapping[str, Any]) -> list[int]:
    """The alternative's decision-log cuts. A prediction without them (older JSON)
    says only the time of the read: then every cut between the decisions made
    before that time and those made at it is admissible."""
    if isinstance(alt.get("cuts"), list):
        return [int(c) for c in alt["cuts"]]
    t = alt.get("time_ms", 0)
    log_ = alt.get("log") or []
    before = sum(1 for d in log_ if d.get("time_ms", 0) < t)
    upto = sum(1 for d in log_ if d.get("time_ms", 0) <= t)
    return list(range(before, upto + 1))


# --------------------------------------------------------------------------- windows


def checkpoint_bounds(obs: Observation, cp: Checkpoint) -> tuple[int, int | None]:
    """(the checkpoint's own timestamp, the driver's next timestamp after it or
    None): the checkpoint read happened between the two."""
    return cp.time_ns, obs.next_record_ns(cp.step)


def admissible(events: Sequence[PmdScan], bounds: tuple[int, int | None]) -> tuple[int, int]:
    """(lo, hi): a prefix of `events` (in time order) can be "before the
    checkpoint" iff its length n has lo <= n <= hi."""
    start, end = bounds
    lo = sum(1 for s in events if s.event.latest_ns < start)
    hi = len(events) if end is None else sum(1 for s in events if s.event.earliest_ns <= end)
    return lo, max(lo, hi)


# --------------------------------------------------------------------------- comparing


def _same(k: PmdScan, m: Mapping[str, Any]) -> bool:
    if k.status != m.get("result"):
        return False
    if k.located_by == "pfn":
        return (k.proc, k.region, k.pmd) == (m.get("proc"), m.get("region"), m.get("pmd"))
    return True


def _first_difference(kern: Sequence[PmdScan], model: Sequence[Mapping[str, Any]],
                      lo: int, hi: int) -> tuple[int, PmdScan | None,
                                                 Mapping[str, Any] | None] | None:
    """None when `model` (the whole prefix before the checkpoint) is an admissible
    kernel prefix equal to it; else (position, kernel event, model decision)."""
    n = len(model)
    for i in range(min(n, hi)):  # hi <= len(kern)
        if not _same(kern[i], model[i]):
            return i, kern[i], model[i]
    if n > hi:
        return hi, None, model[hi]
    if n < lo:
        return n, kern[n], None
    return None


def checkpoint_diffs(alt: Mapping[str, Any], streams: ModelStreams, kernel: KernelScans,
                     obs: Observation, cp: Checkpoint) -> list[dict[str, Any]]:
    """Stream differences of one alternative at one checkpoint ([] if it agrees):
    the best of its cuts, one difference per disagreeing stream."""
    bounds = checkpoint_bounds(obs, cp)
    keys = sorted(k for k in set(kernel.streams) | set(streams.decisions)
                  if k[0] not in kernel.unchecked)
    windows = {k: admissible(kernel.streams.get(k, []), bounds) for k in keys}
    best: list[dict[str, Any]] | None = None
    for cut in alternative_cuts(alt):
        diffs = []
        for key in keys:
            model = streams.decisions.get(key, [])[:streams.prefix(key, cut)]
            lo, hi = windows[key]
            found = _first_difference(kernel.streams.get(key, []), model, lo, hi)
            if found is not None:
                diffs.append(_diff(cp.label, key, found, kernel, len(model), (lo, hi)))
        if best is None or len(diffs) < len(best):
            best = diffs
        if not diffs:
            break
    return best or []


def _counts(fields: Mapping[str, Any], keys: Sequence[str]) -> str:
    got = ", ".join(f"{k}={fields[k]}" for k in keys if k in fields)
    return f" ({got})" if got else ""


def kernel_text(s: PmdScan | None) -> str:
    """'EXCEED_NONE_PTE (none_or_zero=257, ...) at 11.031400 s' or 'no scan'."""
    if s is None:
        return "no scan"
    keys = ("none_or_zero", "unmapped", "referenced", "writable")
    return f"{s.status}{_counts(s.event.fields, keys)} at {s.event.time_ns / 1e9:.6f} s"


def model_text(d: Mapping[str, Any] | None) -> str:
    """'SUCCEED (none_or_zero=256, ...)' or 'no scan'."""
    if d is None:
        return "no scan"
    keys = ("none_or_zero", "unmapped", "shared", "referenced", "writable")
    return f"{d.get('result')}{_counts(d, keys)}"


def _diff(label: str, key: StreamKey, found: tuple[int, PmdScan | None,
                                                    Mapping[str, Any] | None],
          kernel: KernelScans, n_model: int, window: tuple[int, int]) -> dict[str, Any]:
    """One stream difference, named by the PMD: the model's decision's PMD, or the
    kernel event's placement when the model has no decision there."""
    i, k, m = found
    proc, ctx = key
    if m is not None:
        region, pmd = m.get("region"), m.get("pmd")
    else:
        region, pmd = (k.region, k.pmd) if k is not None else (None, None)
    start = kernel.starts.get(region) if isinstance(region, str) else None
    address = (start // PMD_SIZE + pmd) * PMD_SIZE if start is not None and isinstance(
        pmd, int) else None
    placed = ""
    if k is not None and k.pmd is not None and m is not None and (k.region, k.pmd) != (
            region, pmd):
        placed = f", placed on {k.region} pmd {k.pmd} (by {k.located_by})"
    return {"checkpoint": label, "kind": "pmd", "name": f"{ctx} scan", "proc": proc,
            "context": ctx, "region": region, "pmd": pmd,
            "address": f"{address:#x}" if address is not None else None,
            "scan": i + 1, "predicted": m.get("result") if m is not None else None,
            "observed": k.status if k is not None else None,
            "kernel": kernel_text(k) + placed, "model": model_text(m),
            "kernel_located_by": k.located_by if k is not None else None,
            "model_scans": n_model, "kernel_scans": list(window)}


def describe(d: Mapping[str, Any]) -> str:
    """One line for a "pmd" difference."""
    where = f"checkpoint {d['checkpoint']!r}: " if d.get("checkpoint") else ""
    pmd = f"PMD {d['address']}" if d.get("address") else "an unplaced PMD"
    region = f" {d['region']} pmd {d['pmd']}" if d.get("region") is not None else ""
    lo, hi = d["kernel_scans"]
    text = (f"{where}{pmd} ({d['proc']}{region}), {d['context']} scan {d['scan']}: "
            f"kernel {d['kernel']}, model {d['model']}")
    if not lo <= d["model_scans"] <= hi:
        count = f"{lo}" if lo == hi else f"{lo}..{hi}"
        text += (f" ({d['context']} scans of {d['proc']} before the checkpoint: "
                 f"kernel {count}, model {d['model_scans']})")
    return text


def summary(kernel: KernelScans) -> str:
    """What the per-PMD check covered, for a verdict's explanation."""
    text = (f"per-PMD scans agree with its decision log at every checkpoint "
            f"({kernel.total} kernel scan events traced)")
    if kernel.unchecked:
        text += "; not compared: " + "; ".join(f"{p} ({why})"
                                                 for p, why in sorted(kernel.unchecked.items()))
    return text
