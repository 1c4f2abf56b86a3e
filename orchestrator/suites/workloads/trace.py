"""tracefs `huge_memory` events: parse /sys/kernel/tracing/trace and place them on PMDs.

Line shape (default trace options; optional ``(tgid)`` column; the irq-flags
column may be absent)::

    khugepaged-35  [001] .....   152.123456: mm_khugepaged_scan_pmd: mm=00000000a1b2c3d4, \
scan_pfn=0x11a200, writable=1, referenced=512, none_or_zero=0, status=succeeded, unmapped=0

Event bodies differ between kernels (include/trace/events/huge_memory.h):

* mm_khugepaged_scan_pmd: mm, scan_pfn, [writable (until 7.0)], referenced, none_or_zero,
  status, unmapped
* mm_collapse_huge_page: mm, isolated, status, [order (7.2)]
* mm_collapse_huge_page_isolate: scan_pfn, none_or_zero, referenced, [writable], status,
  [order]
* mm_collapse_huge_page_swapin: mm, swapped_in, referenced, ret, [order]
* mm_khugepaged_scan (7.1+): mm, progress, full_scan_finished (one per mm visit of
  khugepaged_scan_mm_slot: the scan units it used)

so the fields are not assumed: with the guest's tracefs ``format`` files (`TraceFormat`,
fetched by `format_dump_command` and saved as ``trace-format.txt`` beside
``trace.txt``) each printed key is typed by its printf conversion (``%d``/``%u``:
decimal, ``0x%lx``: hexadecimal, ``%p``/``%s``: text) and statuses are checked
against the kernel's own ``__print_symbolic`` table (7.1+ adds ``no_pte_table``
and ``page_lazyfree`` and drops ``pmd_null``/``pmd_none``/``no_writable_page``).
Without format files (older run directories) the 6.12 shapes are assumed.

Timestamps: tracefs prints microseconds rounded to the nearest (``ns2usecs``
adds 500 ns before dividing), so an event printed ``T.tttttt`` happened in
[T - 500 ns, T + 500 ns); `TraceEvent.earliest_ns` / `latest_ns` are those
bounds, and every comparison with a driver timestamp (CLOCK_MONOTONIC, the same
clock as the ``mono`` trace clock the driver selects) uses them.

A scan_pfn of 0xffffffffffffffff (no page looked at) becomes None. The events
carry no virtual address, so `locate_scans` places each scan_pmd event on a
(process, region, PMD) with, in order of trust (each process's beacon event is
kept as a ``beacon`` entry, unplaced: it names the process's mm):

* ``pfn``: scan_pfn found in the driver's pagemap snapshot taken before the step;
* ``madvise``: an event of the driver's own pid (MADV_COLLAPSE) during a collapse
  step: the n-th event is the n-th fully covered 2 MiB block of the call ranges;
* ``only``: the mm (named by the driver's beacon event) has one candidate PMD;
* ``order``: khugepaged walks a process's PMDs in address order, so an unplaced
  event follows the previous placed one of the same mm (checked against the next
  ``pfn`` placement; the chain is dropped when they disagree).
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.errors import GuestOutputError
from orchestrator.spec import MAX_TOTAL_PAGES, PAGE_SIZE, PMD_PAGES, PMD_SIZE
from orchestrator.suites.workloads.observation import Checkpoint, Observation, PfnMap

log = logging.getLogger(__name__)

SCAN_PMD = "mm_khugepaged_scan_pmd"
COLLAPSE = "mm_collapse_huge_page"
ISOLATE = "mm_collapse_huge_page_isolate"
SWAPIN = "mm_collapse_huge_page_swapin"
SCAN = "mm_khugepaged_scan"  # 7.1+
EVENTS = (SCAN_PMD, COLLAPSE, ISOLATE, SWAPIN, SCAN)
#: on from boot: the machine profile's kernel command line names them (trace_event=)
NO_PFN = 0xFFFFFFFFFFFFFFFF
#: Bounds on what guest-supplied numbers may make us allocate (GuestOutputError beyond):
#: PMD blocks of one VMA or one madvise call, and pfn table entries of one observation.
MAX_BLOCKS = 4 * MAX_TOTAL_PAGES // PMD_PAGES
MAX_PFN_ENTRIES = 8 * MAX_TOTAL_PAGES
TRACEFS_EVENTS = "/sys/kernel/tracing/events/huge_memory"
FORMAT_MARK = "@@thpvm format "

#: 6.12 SCAN_STATUS table: trace text -> result name used by the model (SCAN_ prefix dropped)
STATUS_NAMES: dict[str, str] = {
    "failed": "FAIL", "succeeded": "SUCCEED", "pmd_null": "PMD_NULL", "pmd_none": "PMD_NONE",
    "page_pmd_mapped": "PMD_MAPPED", "exceed_none_pte": "EXCEED_NONE_PTE",
    "exceed_swap_pte": "EXCEED_SWAP_PTE", "exceed_shared_pte": "EXCEED_SHARED_PTE",
    "pte_non_present": "PTE_NON_PRESENT", "pte_uffd_wp": "PTE_UFFD_WP",
    "pte_mapped_hugepage": "PTE_MAPPED_HUGEPAGE", "no_writable_page": "PAGE_RO",
    "lack_referenced_page": "LACK_REFERENCED_PAGE", "page_null": "PAGE_NULL",
    "scan_aborted": "SCAN_ABORT", "not_suitable_page_count": "PAGE_COUNT",
    "page_not_in_lru": "PAGE_LRU", "page_locked": "PAGE_LOCK", "page_not_anon": "PAGE_ANON",
    "page_compound": "PAGE_COMPOUND", "no_process_for_page": "ANY_PROCESS",
    "vma_null": "VMA_NULL", "vma_check_failed": "VMA_CHECK",
    "not_suitable_address_range": "ADDRESS_RANGE",
    "could_not_delete_page_from_lru": "DEL_PAGE_LRU",
    "alloc_huge_page_failed": "ALLOC_HUGE_PAGE_FAIL",
    "ccgroup_charge_failed": "CGROUP_CHARGE_FAIL", "truncated": "TRUNCATED",
    "page_has_private": "PAGE_HAS_PRIVATE", "store_failed": "STORE_FAILED",
    "copy_poisoned_page": "COPY_MC", "page_filled": "PAGE_FILLED",
}


def status_name(text: str) -> str:
    """The result name of a status text: the SCAN_STATUS table's SCAN_* name without
    its prefix; a text this table lacks is named by upper-casing it (the kernel's
    convention for every status added since 6.12: no_pte_table -> NO_PTE_TABLE,
    page_lazyfree -> PAGE_LAZYFREE, page_dirty_or_writeback -> PAGE_DIRTY_OR_WRITEBACK)."""
    return STATUS_NAMES.get(text, text.upper())

_LINE_RE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s:]+)\s+)?(?P<sec>\d+)\.(?P<frac>\d+):\s+(?P<event>\w+):\s?(?P<body>.*)$")
_LOST_RE = re.compile(r"^\s*CPU:\s*\d+\s+\[LOST\s+(\d+)\s+EVENTS\]")
_FIELD_RE = re.compile(r"^(\w+)=(\S*)$")
_INT_FIELDS = {"writable", "referenced", "none_or_zero", "unmapped", "isolated",
               "swapped_in", "ret", "order", "progress", "full_scan_finished"}
_PRINT_KEY = re.compile(r"(\w+)=(0x)?%[-+ #0]*\d*(?:hh|h|ll|l|z)?([diuxXps])")
_FORMAT_FIELD = re.compile(r"^\s*field:(?P<decl>[^;]+);")
_SYMBOL = re.compile(r"\{\s*(-?\d+)\s*,\s*\"([^\"]*)\"\s*\}")


@dataclass(frozen=True)
class EventFormat:
    """One event's tracefs ``format`` file: printed keys with their printf conversion
    (``d``, ``u``, ``x`` (printed with 0x), ``p``, ``s``), struct fields (name -> C
    type, ``common_*`` left out) and the ``__print_symbolic`` table (value -> text)."""

    name: str
    keys: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    symbols: dict[int, str] = field(default_factory=dict)


@dataclass
class TraceFormat:
    """The huge_memory events a kernel has, from its tracefs format files."""

    events: dict[str, EventFormat] = field(default_factory=dict)

    def has(self, event: str, key: str | None = None) -> bool:
        """Whether the kernel has `event` (and prints `key` in it)."""
        ev = self.events.get(event)
        return ev is not None and (key is None or key in ev.keys)

    def statuses(self) -> dict[str, str]:
        """Every status text the kernel prints -> result name."""
        return {text: status_name(text) for ev in self.events.values()
                for text in ev.symbols.values()}


def parse_format_file(text: str) -> EventFormat:
    """A tracefs ``events/<system>/<event>/format`` file -> EventFormat.

    Accepts ``name: X``, ``field:TYPE NAME;\toffset:...`` lines and the
    ``print fmt: "k=%d, ...", REC->a, __print_symbolic(REC->status, { 0, "failed" }, ...)``
    line; ValueError when the name or the print fmt is missing."""
    name = ""
    fields: dict[str, str] = {}
    keys: dict[str, str] = {}
    symbols: dict[int, str] = {}
    for line in text.splitlines():
        if line.startswith("name:"):
            name = line.partition(":")[2].strip()
        elif (m := _FORMAT_FIELD.match(line)) is not None:
            decl = re.sub(r"\[.*\]", "", m["decl"]).strip()
            ctype, _, fname = decl.rpartition(" ")
            if not fname.startswith("common_"):
                fields[fname] = ctype.strip()
        elif line.startswith("print fmt:"):
            fmt = line.partition(":")[2].strip()
            printed = fmt[1:fmt.find('"', 1)] if fmt.startswith('"') else fmt
            keys = {k: ("x" if hexa else conv.lower())
                    for k, hexa, conv in _PRINT_KEY.findall(printed)}
            symbols = {int(v): t for v, t in _SYMBOL.findall(fmt)}
    if not name or not keys:
        raise ValueError("not a tracefs format file (no name or no print fmt)")
    return EventFormat(name, keys, fields, symbols)


def format_dump_command(events_dir: str = TRACEFS_EVENTS) -> str:
    """One guest command printing every huge_memory event's format file, each after a
    ``@@thpvm format <event>`` line (nothing when the kernel has no such events)."""
    return (f"for f in {events_dir}/*/format; do [ -r \"$f\" ] || continue; "
            f"d=${{f%/format}}; echo \"{FORMAT_MARK}${{d##*/}}\"; cat \"$f\"; done")


def parse_format_dump(text: str) -> TraceFormat:
    """The output of `format_dump_command` -> TraceFormat (unreadable parts skipped)."""
    fmt = TraceFormat()
    for chunk in text.split(FORMAT_MARK)[1:]:
        event, _, body = chunk.partition("\n")
        try:
            ev = parse_format_file(body)
        except ValueError:
            log.warning("trace format of %s not understood", event.strip())
            continue
        fmt.events[ev.name] = ev
    return fmt


@dataclass(frozen=True)
class TraceEvent:
    """One huge_memory event. `fields` holds ints (counts, pfn) and strings
    (mm, status: the SCAN_* name without prefix, or the raw text if unknown).
    `time_ns` is the printed timestamp, `precision_ns` the unit of its last digit."""

    line_no: int
    task: str
    pid: int
    cpu: int
    time_ns: int
    name: str
    fields: dict[str, int | str | None]
    precision_ns: int = 1000

    @property
    def earliest_ns(self) -> int:
        """The earliest real time the printed (rounded) timestamp allows."""
        return self.time_ns - self.precision_ns // 2

    @property
    def latest_ns(self) -> int:
        """The latest real time the printed (rounded) timestamp allows (inclusive)."""
        return self.time_ns + (self.precision_ns - 1) // 2

    @property
    def status(self) -> str | None:
        s = self.fields.get("status")
        return s if isinstance(s, str) else None

    @property
    def mm(self) -> str | None:
        m = self.fields.get("mm")
        return m if isinstance(m, str) else None

    @property
    def scan_pfn(self) -> int | None:
        p = self.fields.get("scan_pfn")
        return p if isinstance(p, int) else None


@dataclass
class Trace:
    """Parsed trace: events in file order, lines not understood, lost-event count."""

    events: list[TraceEvent] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)
    lost_events: int = 0

    def named(self, name: str) -> list[TraceEvent]:
        return [e for e in self.events if e.name == name]

    def scan_progress(self) -> list[ScanProgress]:
        """The 7.1+ ``mm_khugepaged_scan`` events: per mm visit, the scan units used."""
        return [ScanProgress(e.time_ns, e.mm or "", int(e.fields.get("progress") or 0),
                             bool(e.fields.get("full_scan_finished")))
                for e in self.named(SCAN)]


@dataclass(frozen=True)
class ScanProgress:
    """One mm_khugepaged_scan event: khugepaged left an mm after `progress` units."""

    time_ns: int
    mm: str
    progress: int
    full_scan_finished: bool


def _field_value(key: str, raw: str, conv: str | None = None) -> int | str | None:
    if key in ("scan_pfn", "hpage_pfn") or conv == "x":
        v = int(raw, 16) if raw.lower().startswith("0x") or conv == "x" else int(raw, 10)
        return None if v == NO_PFN and key.endswith("pfn") else v
    if conv in ("d", "i", "u") or (conv is None and key in _INT_FIELDS):
        return int(raw, 10)
    if key == "status":
        return status_name(raw)
    return raw


def parse_body(body: str, fmt: EventFormat | None = None) -> dict[str, int | str | None]:
    """``k=v, k=v`` -> dict; ValueError on a part without ``=`` or a bad number, and
    (with the event's format) on a key the kernel does not print or a status text
    missing from its symbol table."""
    out: dict[str, int | str | None] = {}
    for part in body.split(","):
        part = part.strip()
        if not part:
            continue
        m = _FIELD_RE.match(part)
        if not m:
            raise ValueError(f"field {part[:40]!r} is not key=value")
        key, raw = m.group(1), m.group(2)
        if fmt is not None and key not in fmt.keys:
            raise ValueError(f"{fmt.name} has no field {key!r} in its format")
        if fmt is not None and key == "status" and fmt.symbols \
                and raw not in fmt.symbols.values():
            raise ValueError(f"{fmt.name}: status {raw!r} is not in the kernel's table")
        out[key] = _field_value(key, raw, fmt.keys[key] if fmt is not None else None)
    return out


def parse_line(line: str, line_no: int = 0, fmt: TraceFormat | None = None
               ) -> TraceEvent | None:
    """One trace line -> TraceEvent, or None when it is not an event line
    (ValueError when it looks like one but its body is malformed)."""
    m = _LINE_RE.match(line)
    if not m:
        return None
    digits = m.group("frac")[:9]
    time_ns = int(m.group("sec")) * 1_000_000_000 + int(digits.ljust(9, "0"))
    event_fmt = fmt.events.get(m.group("event")) if fmt is not None else None
    return TraceEvent(line_no, m.group("task").strip(), int(m.group("pid")), int(m.group("cpu")),
                      time_ns, m.group("event"), parse_body(m.group("body"), event_fmt),
                      10 ** (9 - len(digits)))


def parse_trace(text: str, names: Iterable[str] = EVENTS,
                fmt: TraceFormat | None = None) -> Trace:
    """Parse a tracefs `trace` file; never raises. Events not in `names` are skipped.
    With the kernel's `fmt`, bodies are checked and typed by its format files."""
    wanted = set(names)
    trace = Trace()
    for no, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        lost = _LOST_RE.match(line)
        if lost:
            trace.lost_events += int(lost.group(1))
            continue
        try:
            ev = parse_line(line, no, fmt)
        except (ValueError, OverflowError) as e:
            trace.unparsed.append(f"line {no}: {e}: {line[:160]}")
            continue
        if ev is None:
            trace.unparsed.append(f"line {no}: not an event line: {line[:160]}")
        elif ev.name in wanted:
            trace.events.append(ev)
    return trace


# --------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class PmdScan:
    """A scan_pmd event placed on a PMD (proc/region/pmd None when it could not be)."""

    event: TraceEvent
    source: str  # "khugepaged" | "madvise" | "beacon"
    proc: str | None
    region: str | None
    pmd: int | None
    address: int | None
    located_by: str  # "pfn" | "madvise" | "only" | "order" | "none" (and "beacon")

    @property
    def status(self) -> str | None:
        return self.event.status


@dataclass
class _Layout:
    """Region starts and per-snapshot pfn lookup tables from one observation."""

    starts: dict[str, int]
    # (time, pfn -> [(proc, region, page)]): a page shared after fork has two owners
    snapshots: list[tuple[int, dict[int, list[tuple[str, str, int]]]]]

    def pmd_of(self, region: str, page: int) -> int:
        """PMD index of a region's page (KeyError for a region the driver never placed)."""
        return (self.starts[region] % PMD_SIZE // PAGE_SIZE + page) // PMD_PAGES

    def address(self, region: str, pmd: int) -> int:
        return (self.starts[region] // PMD_SIZE + pmd) * PMD_SIZE

    def find_pfn(self, pfn: int, time_ns: int, owner: str | None) -> tuple[str, str, int] | None:
        """The (proc, region, page) mapping `pfn` in the latest snapshot before
        `time_ns` that has it; `owner` (the mm's process, if known) breaks ties."""
        times = [t for t, _ in self.snapshots]
        i = bisect.bisect_right(times, time_ns) - 1
        for _, table in reversed(self.snapshots[: i + 1] if i >= 0 else []):
            hits = [h for h in table.get(pfn, []) if owner is None or h[0] == owner]
            if len({h[0] for h in hits}) == 1:
                return hits[0]
            if hits:
                return None  # shared page, owner unknown: ambiguous
        return None


def _blocks(lo: int, hi: int, what: str) -> range:
    """2 MiB block numbers from `lo` (rounded up) to `hi` (rounded down), bounded."""
    blocks = range(-(-lo // PMD_SIZE), hi // PMD_SIZE)
    if len(blocks) > MAX_BLOCKS:
        raise GuestOutputError(f"driver output: {what} spans {len(blocks)} PMDs "
                               f"(more than {MAX_BLOCKS}): not a real workload's memory")
    return blocks


def _layout(obs: Observation) -> _Layout:
    groups: dict[int, list[PfnMap]] = {}
    for m in obs.pfn_maps:
        groups.setdefault(m.step, []).append(m)
    total = sum(count for m in obs.pfn_maps for _, _, count in m.runs)
    if total > MAX_PFN_ENTRIES:
        raise GuestOutputError(f"driver output: pfn maps list {total} pages (more than "
                               f"{MAX_PFN_ENTRIES}): not a real workload's memory")
    snaps = []
    for maps in groups.values():
        table: dict[int, list[tuple[str, str, int]]] = {}
        for m in maps:
            for page, pfn, count in m.runs:
                for i in range(count):
                    table.setdefault(pfn + i, []).append((m.proc, m.region, page + i))
        snaps.append((min(m.time_ns for m in maps), table))
    snaps.sort(key=lambda s: s[0])
    return _Layout(dict(obs.regions), snaps)


def _candidates(obs: Observation, lay: _Layout, proc: str, time_ns: int) -> list[tuple[str, int]]:
    """THP-eligible full PMD blocks of `proc`'s regions at the checkpoint nearest `time_ns`."""
    cps = [c for c in obs.checkpoints if proc in c.procs]
    if not cps:
        return []
    cp: Checkpoint = min(cps, key=lambda c: abs(c.time_ns - time_ns))
    out = []
    for name, sample in cp.procs[proc].items():
        if name not in lay.starts:
            continue  # a region the driver never placed: nothing to count from
        for v in sample.vmas:
            if not v.thp_eligible:
                continue
            for block in _blocks(v.start, v.end, f"a VMA of region {name!r}"):
                out.append((block, name, block - lay.starts[name] // PMD_SIZE))
    return [(n, k) for _, n, k in sorted(out)]


def _mm_owners(trace: Trace, obs: Observation) -> dict[str, str]:
    """mm hash -> proc, from each beacon's scan_pmd event (driver pid, right after the beacon)."""
    owners: dict[str, str] = {}
    for proc, (pid, t) in obs.beacons.items():
        for ev in trace.named(SCAN_PMD):
            if ev.pid == pid and ev.mm and ev.earliest_ns <= t:
                owners.setdefault(ev.mm, proc)
                break
    return owners


def _madvise_blocks(obs: Observation, lay: _Layout) -> list[tuple[int, int, str, str, list[int]]]:
    """(t_start, t_end, proc, region, pmds in walk order) for each MADV_COLLAPSE step."""
    out = []
    prev_t = 0
    for st in obs.steps:
        region = st.region
        if st.op == "madvise" and st.calls and region in lay.starts:
            pmds = []
            for c in st.calls:
                lo = lay.starts[region] + c.first * PAGE_SIZE
                hi = lay.starts[region] + (c.last + 1) * PAGE_SIZE
                blocks = _blocks(lo, hi, f"a madvise call on region {region!r}")
                pmds += [a - lay.starts[region] // PMD_SIZE for a in blocks]
                if len(pmds) > MAX_BLOCKS:
                    raise GuestOutputError(f"driver output: madvise step {st.step} "
                                           f"covers more than {MAX_BLOCKS} PMDs")
            out.append((prev_t, st.time_ns, st.proc, region, pmds))
        prev_t = st.time_ns or prev_t
    return out


def locate_scans(trace: Trace, obs: Observation) -> list[PmdScan]:
    """Place every scan_pmd event of the workload's processes on a PMD (see module doc).

    Events of other processes (khugepaged scanning unrelated mms) are dropped; the
    beacon event of each workload process is kept (source and located_by "beacon").
    """
    lay = _layout(obs)
    owners = _mm_owners(trace, obs)
    pid_proc = {pid: p for p, pid in obs.pids.items()}
    beacon_times = {pid: t for pid, t in obs.beacons.values()}
    madv = _madvise_blocks(obs, lay)
    out: list[PmdScan] = []
    used: dict[int, int] = {}
    for ev in trace.named(SCAN_PMD):
        if ev.pid in pid_proc:
            if ev.earliest_ns <= beacon_times.get(ev.pid, -1):
                out.append(PmdScan(ev, "beacon", pid_proc[ev.pid], None, None, None, "beacon"))
                continue
            out.append(_place_madvise(ev, pid_proc[ev.pid], madv, used, lay))
            continue
        proc = owners.get(ev.mm or "")
        hit = lay.find_pfn(ev.scan_pfn, ev.time_ns, proc) if ev.scan_pfn is not None else None
        if hit is not None and hit[1] in lay.starts:
            p, region, page = hit
            pmd = lay.pmd_of(region, page)
            out.append(PmdScan(ev, "khugepaged", p, region, pmd, lay.address(region, pmd), "pfn"))
        elif proc is not None:
            out.append(PmdScan(ev, "khugepaged", proc, None, None, None, "none"))
    return _fill_order(out, obs, lay)


def _place_madvise(ev: TraceEvent, proc: str, madv: list[tuple[int, int, str, str, list[int]]],
                   used: dict[int, int], lay: _Layout) -> PmdScan:
    for i, (t0, t1, p, region, pmds) in enumerate(madv):
        if p == proc and t0 <= ev.latest_ns and ev.earliest_ns <= t1:
            n = used.get(i, 0)
            used[i] = n + 1
            if n < len(pmds):
                return PmdScan(ev, "madvise", proc, region, pmds[n],
                               lay.address(region, pmds[n]), "madvise")
    return PmdScan(ev, "madvise", proc, None, None, None, "none")


def _fill_order(scans: list[PmdScan], obs: Observation, lay: _Layout) -> list[PmdScan]:
    """Place unplaced khugepaged events by scan order (see module doc); pfn wins."""
    out = list(scans)
    by_mm: dict[str, list[int]] = {}
    for i, s in enumerate(out):
        if s.source == "khugepaged" and s.event.mm:
            by_mm.setdefault(s.event.mm, []).append(i)
    for idxs in by_mm.values():
        chain: list[int] = []
        prev: tuple[str, int] | None = None
        for i in idxs:
            s = out[i]
            proc = s.proc
            if proc is None:
                continue
            cands = _candidates(obs, lay, proc, s.event.time_ns)
            if s.located_by == "pfn":
                if chain and prev is not None and (s.region, s.pmd) != _next(cands, prev):
                    for j in chain:  # the guessed chain disagrees with a real placement
                        out[j] = _unplaced(out[j])
                chain, prev = [], (s.region or "", s.pmd or 0)
                continue
            guess = cands[0] if len(cands) == 1 else _next(cands, prev) if prev else None
            if guess is None:
                prev = None
                continue
            how = "only" if len(cands) == 1 else "order"
            out[i] = PmdScan(s.event, s.source, proc, guess[0], guess[1],
                             lay.address(*guess), how)
            if how == "order":
                chain.append(i)
            prev = guess
    return out


def _next(cands: list[tuple[str, int]], prev: tuple[str, int]) -> tuple[str, int] | None:
    if prev not in cands:
        return None
    return cands[(cands.index(prev) + 1) % len(cands)]


def _unplaced(s: PmdScan) -> PmdScan:
    return PmdScan(s.event, s.source, s.proc, None, None, None, "none")
