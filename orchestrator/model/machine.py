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

log = logging.getLogger(__name__)

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
    (the fields of the mm_khugepaged_scan_pmd trace event, spec 4.5)."""

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
    # called with the machine after every full_scans increment (checkpoint snapshots)
    on_full_scan: Callable[[Machine], None] | None = None
    khugepaged: Any = None  # orchestrator.model.khugepaged.Khugepaged, set by it

    def count(self, name: str, n: int = 1) -> None:
        """count_vm_event() / the khugepaged sysfs counters."""
        self.counters[name] += n

    def new_mm(self, name: str, vmas: list[Vma]) -> Mm:
        """A new process with the given VMAs and empty page tables."""
        mm = Mm(name, vmas, PageTables.empty(len(self.blocks)))
        self.mms[name] = mm
        return mm

    def mark_dirty(self, rows: np.ndarray | slice | int) -> None:
        """Row summaries changed in every mm (mapcounts are global)."""
        for mm in self.mms.values():
            mm.tables.dirty[rows] = True

    # ---------------------------------------------------------------- eligibility

    def pmd_enabled(self) -> bool:
        """hugepage_pmd_enabled() (6.11+) / hugepage_flags_enabled() (6.1).

        With hugepages-2048kB/enabled = inherit (not modelled otherwise) both
        reduce to: global `enabled` is always or madvise.
        """
        return self.sysfs["enabled"] in ("always", "madvise")

    def vma_allowable(self, mm: Mm, vma: Vma, *, enforce_sysfs: bool, in_pf: bool = False,
                      smaps: bool = False) -> bool:
        """thp_vma_allowable_order(vma, flags, tva_flags, PMD_ORDER) for anon VMAs (spec 2.2)."""
        if enforce_sysfs:
            en = self.sysfs["enabled"]
            if not (en == "always" or (en == "madvise" and vma.hugepage)):
                return False
        if vma.nohugepage:  # vma_thp_disabled(); MMF_DISABLE_THP not modelled
            return False
        if not in_pf and not suitable_pmd(vma, vma.end - HPAGE_PMD_NR):
            return False
        if not (in_pf or smaps) and not vma.anon_vma:
            return False
        return True


def suitable_pmd(vma: Vma, addr: int) -> bool:
    """thp_vma_suitable_order(vma, addr, PMD_ORDER): the aligned block around addr fits."""
    haddr = addr // HPAGE_PMD_NR * HPAGE_PMD_NR
    return vma.start <= haddr and haddr + HPAGE_PMD_NR <= vma.end


def scan_code(s: Scan) -> int:
    """Index of a result in CODES (for numpy arrays)."""
    return CODE_OF[s]
