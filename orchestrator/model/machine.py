"""The simulated machine: sysfs knobs, vmstat counters, processes, the decision log.

`Machine` is plain state shared by the modules that mirror kernel files
(`khugepaged.py`, `collapse.py`, `memory.py`, ...). It does no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.model.mm import HPAGE_PMD_NR, BlockMap, Mm, PageTables, Vma
from orchestrator.model.pages import PageStore
from orchestrator.model.profile import VersionProfile
from orchestrator.model.results import CODE_OF, CODES, Scan
from orchestrator.spec import MTHP_KNOB_DEFAULTS, MTHP_ORDERS, size_knob

log = logging.getLogger(__name__)

PMD_ORDER = 9
PMD_BIT = 1 << PMD_ORDER
ANON_ORDERS: tuple[int, ...] = MTHP_ORDERS  # THP_ORDERS_ALL_ANON on x86-64: orders 2..9
ALL_ANON = sum(1 << o for o in ANON_ORDERS)
_SIZE_KEYS = tuple(size_knob(o) for o in ANON_ORDERS)

#: Counters the model predicts (vmstat names, plus khugepaged's two sysfs counters).
PREDICTED_COUNTERS: tuple[str, ...] = (
    "thp_fault_alloc",
    "thp_fault_fallback",
    "thp_collapse_alloc",
    "thp_collapse_alloc_failed",
    "thp_scan_exceed_none_pte",
    "thp_scan_exceed_swap_pte",
    "thp_scan_exceed_share_pte",
    "thp_split_pmd",
    "pages_collapsed",
    "full_scans",
)


#: The per-size collapse stats of 7.2 (count_mthp_stat() in mm/khugepaged.c).
MTHP_STATS: tuple[str, ...] = ("collapse_alloc", "collapse_alloc_failed",
                               "collapse_exceed_none_pte", "collapse_exceed_swap_pte",
                               "collapse_exceed_shared_pte")


def mthp_counter(order: int, stat: str) -> str:
    """Counter name of hugepages-<N>kB/stats/<stat>: ``mthp/<N>kB/<stat>``."""
    return f"mthp/{4 << order}kB/{stat}"


def mthp_counter_names() -> list[str]:
    """Every per-size collapse counter, by order then stat."""
    return [mthp_counter(o, s) for o in ANON_ORDERS for s in MTHP_STATS]


@dataclass(frozen=True)
class Faults:
    """Injected allocation outcomes. Attempts are numbered from 0 over all
    THP allocations for collapse (khugepaged and MADV_COLLAPSE) in order;
    `True` means every attempt."""

    alloc_fail: frozenset[int] | bool = frozenset()
    charge_fail: frozenset[int] | bool = frozenset()

    @staticmethod
    def _hit(rule: frozenset[int] | bool, attempt: int) -> bool:
        return rule if isinstance(rule, bool) else attempt in rule

    def alloc_fails(self, attempt: int) -> bool:
        """Does collapse allocation number `attempt` fail?"""
        return self._hit(self.alloc_fail, attempt)

    def charge_fails(self, attempt: int) -> bool:
        """Does the memcg charge of allocation number `attempt` fail?"""
        return self._hit(self.charge_fail, attempt)


class DecisionLog:
    """Per-PMD decisions, one record per hpage_collapse_scan_pmd() call
    (the fields of the mm_khugepaged_scan_pmd trace event; docs/khugepaged-model.md)."""

    FIELDS = ("time_ms", "pass", "proc", "by", "address", "result", "none_or_zero",
              "unmapped", "shared", "referenced", "writable")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._chunks: list[tuple[Any, ...]] = []
        self._n = 0  # decisions so far (len() is asked at every checkpoint and full scan)

    def add(self, time_ms: int, pass_no: int, proc: str, by: str, rows_addr: np.ndarray,
            codes: np.ndarray, counts: Mapping[str, np.ndarray]) -> None:
        """Append the decisions for several PMDs (arrays of equal length)."""
        if self.enabled and len(codes):
            self._chunks.append((time_ms, pass_no, proc, by, rows_addr.copy(), codes.copy(),
                                 {k: np.asarray(v).copy() for k, v in counts.items()}))
            self._n += len(codes)

    def records(self) -> list[dict[str, Any]]:
        """All decisions as JSON-friendly dicts, in order."""
        out = []
        for t, p, proc, by, addr, codes, counts in self._chunks:
            for i in range(len(codes)):
                out.append({
                    "time_ms": t, "pass": p, "proc": proc, "by": by,
                    "address": int(addr[i]) * 4096,
                    "result": CODES[int(codes[i])].name,
                    **{k: int(v[i]) for k, v in counts.items()},
                })
        return out

    def __len__(self) -> int:
        return self._n


@dataclass
class Machine:
    """All simulated state. `sysfs` holds the workload settings' keys."""

    profile: VersionProfile
    sysfs: dict[str, Any]
    blocks: BlockMap
    store: PageStore = field(default_factory=PageStore)
    mms: dict[str, Mm] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PREDICTED_COUNTERS, 0))
    faults: Faults = field(default_factory=Faults)
    log: DecisionLog = field(default_factory=DecisionLog)
    now_ms: int = 0
    alloc_attempts: int = 0
    next_anon_vma: int = 1
    changes: int = 0  # mark_dirty() calls so far (stamps PageTables.changed)
    # called with the machine after every full_scans increment (checkpoint snapshots)
    on_full_scan: Callable[[Machine], None] | None = None
    khugepaged: Any = None  # orchestrator.model.khugepaged.Khugepaged, set by it
    # one record per collapse_huge_page() call (the mm_collapse_huge_page trace event)
    collapse_log: list[dict[str, Any]] = field(default_factory=list)
    log_collapses: bool = True
    warnings: list[str] = field(default_factory=list)  # pr_warn_once() texts, in order
    _orders_cache: dict[tuple[Any, ...], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.profile.mthp_collapse:
            self.counters.update(dict.fromkeys(mthp_counter_names(), 0))

    def count(self, name: str, n: int = 1) -> None:
        """count_vm_event() / the khugepaged sysfs counters."""
        self.counters[name] += n

    def count_mthp(self, order: int, stat: str, n: int = 1) -> None:
        """count_mthp_stat(order, MTHP_STAT_<stat>): hugepages-<N>kB/stats/<stat>
        (predicted as `mthp/<N>kB/<stat>` for profiles with mTHP collapse)."""
        if self.profile.mthp_collapse:
            self.counters[mthp_counter(order, stat)] += n

    def log_collapse(self, mm: Mm, addr: int, order: int, result: Scan, by: str) -> None:
        """trace_mm_collapse_huge_page(mm, isolated, status, order)."""
        if self.log_collapses:
            self.collapse_log.append({"time_ms": self.now_ms, "proc": mm.name, "by": by,
                                      "address": addr * 4096, "order": order,
                                      "result": result.name})

    def new_mm(self, name: str, vmas: list[Vma]) -> Mm:
        """A new process with the given VMAs and empty page tables."""
        mm = Mm(name, vmas, PageTables.empty(len(self.blocks)))
        self.mms[name] = mm
        return mm

    def mark_dirty(self, rows: np.ndarray | slice | int) -> None:
        """Row summaries changed in every mm (mapcounts are global); the rows are
        stamped with a new change number (scan plans, scanplan.py)."""
        self.changes += 1
        for mm in self.mms.values():
            mm.tables.dirty[rows] = True
            mm.tables.changed[rows] = self.changes

    # ---------------------------------------------------------------- eligibility

    def pmd_enabled(self) -> bool:
        """Does khugepaged run? By the profile's `pmd_enabled_rule`:
        "global": hugepage_flags_enabled() (6.1), global `enabled` always/madvise;
        "per_size": hugepage_pmd_enabled() (6.11+), the PMD order's knob;
        "any_order": hugepage_enabled() (7.2.13 l.512), global `enabled` or any anon order.
        """
        glob = self.sysfs["enabled"] in ("always", "madvise")
        rule = self.profile.pmd_enabled_rule
        if rule == "global":
            return glob
        if rule == "per_size":
            v = self.size_setting(PMD_ORDER)
            return v in ("always", "madvise") or (v == "inherit" and glob)
        return glob or any(self.size_setting(o) in ("always", "madvise") for o in ANON_ORDERS)

    def size_setting(self, order: int) -> str:
        """hugepages-<N>kB/enabled for `order` (kernel default when the workload sets none)."""
        key = size_knob(order)
        return str(self.sysfs.get(key, MTHP_KNOB_DEFAULTS[key]))

    def sysfs_orders(self, vma: Vma) -> int:
        """The order mask thp_vma_allowable_orders() takes from sysfs (huge_anon_orders_*):
        always, + madvise with VM_HUGEPAGE, + inherit when the global knob allows it.
        6.1 ("global" rule) has only the global knob and the PMD order."""
        sysfs = self.sysfs
        key = (sysfs["enabled"], vma.hugepage, *map(sysfs.get, _SIZE_KEYS))
        mask = self._orders_cache.get(key)
        if mask is None:
            mask = self._orders_cache[key] = self._sysfs_orders(vma.hugepage)
        return mask

    def _sysfs_orders(self, hugepage: bool) -> int:
        en = self.sysfs["enabled"]
        glob_ok = en == "always" or (en == "madvise" and hugepage)
        if self.profile.pmd_enabled_rule == "global":
            return PMD_BIT if glob_ok else 0
        mask = 0
        for o in ANON_ORDERS:
            v = self.size_setting(o)
            if v == "always" or (v == "madvise" and hugepage) or (v == "inherit" and glob_ok):
                mask |= 1 << o
        return mask

    def allowable_orders(self, mm: Mm, vma: Vma, orders: int, *, enforce_sysfs: bool,
                         in_pf: bool = False, smaps: bool = False) -> int:
        """thp_vma_allowable_orders() + __thp_vma_allowable_orders() for anon VMAs
        (7.2.13 mm/huge_memory.c l.182): the sysfs mask, VM_NOHUGEPAGE, orders too
        large for the VMA (outside faults), and no anon_vma yet (outside faults/smaps)."""
        if enforce_sysfs:
            orders &= self.sysfs_orders(vma)
        if not orders or vma.nohugepage:  # vma_thp_disabled(); MMF_DISABLE_THP not modelled
            return 0
        if not in_pf:  # drop the highest orders until one fits at vm_end
            for o in range(orders.bit_length() - 1, -1, -1):
                if not orders >> o & 1:
                    continue
                if suitable_order(vma, vma.end - (1 << o), o):
                    break
                orders &= ~(1 << o)
        if not (in_pf or smaps) and not vma.anon_vma:
            return 0
        return orders

    def vma_allowable(self, mm: Mm, vma: Vma, *, enforce_sysfs: bool, in_pf: bool = False,
                      smaps: bool = False) -> bool:
        """thp_vma_allowable_order(vma, flags, tva_flags, PMD_ORDER) for anon VMAs."""
        return bool(self.allowable_orders(mm, vma, PMD_BIT, enforce_sysfs=enforce_sysfs,
                                          in_pf=in_pf, smaps=smaps))

    def collapse_orders(self, mm: Mm, vma: Vma) -> int:
        """collapse_possible_orders(vma, TVA_KHUGEPAGED) (7.2.13 l.566): every anon order
        with mTHP collapse, else the PMD order only."""
        want = ALL_ANON if self.profile.mthp_collapse else PMD_BIT
        return self.allowable_orders(mm, vma, want, enforce_sysfs=True)


def orders_of(mask: int) -> list[int]:
    """The orders set in a bit mask, ascending."""
    return [o for o in range(PMD_ORDER + 1) if mask >> o & 1]


def suitable_order(vma: Vma, addr: int, order: int) -> bool:
    """thp_vma_suitable_order(vma, addr, order): the aligned block around addr fits."""
    n = 1 << order
    haddr = addr // n * n
    return vma.start <= haddr and haddr + n <= vma.end


def suitable_pmd(vma: Vma, addr: int) -> bool:
    """thp_vma_suitable_order(vma, addr, PMD_ORDER): the aligned block around addr fits."""
    haddr = addr // HPAGE_PMD_NR * HPAGE_PMD_NR
    return vma.start <= haddr and haddr + HPAGE_PMD_NR <= vma.end


def scan_code(s: Scan) -> int:
    """Index of a result in CODES (for numpy arrays)."""
    return CODE_OF[s]
