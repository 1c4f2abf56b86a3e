"""The khugepaged model: a deterministic, I/O-free simulation of what Linux's
khugepaged and MADV_COLLAPSE do to anonymous memory, PMD by PMD.

Reading order (each module mirrors kernel code named in its docstring):
  profile.py          version rule differences (data in profiles/*.toml)
  results.py          SCAN_* result codes
  pages.py, mm.py     folios/mapcounts; VMAs and page tables (numpy rows)
  machine.py          sysfs, counters, VMA eligibility (thp_vma_allowable_order)
  memory.py           faults, madvise, mprotect, munmap, fork
  scan.py             hpage_collapse_scan_pmd
  collapse.py         collapse_huge_page
  khugepaged.py       registration, khugepaged_scan_mm_slot, khugepaged_do_scan, sleeping
  scanplan.py         fast path: scan results kept across wakeups (proved equal by tests)
  madvise_collapse.py MADV_COLLAPSE
  simulate.py         workload steps, time, and the nondeterminism (schedules)
  predict.py          predict() -> Prediction; prediction.py: JSON/text forms
"""

from orchestrator.model.machine import PREDICTED_COUNTERS, Faults
from orchestrator.model.predict import predict
from orchestrator.model.prediction import (
    CheckpointPrediction,
    Outcome,
    PredictedState,
    Prediction,
    RegionState,
    Schedule,
    format_prediction,
)
from orchestrator.model.profile import VersionProfile, load_version_profile

__all__ = [
    "PREDICTED_COUNTERS",
    "CheckpointPrediction",
    "Faults",
    "PredictedState",
    "Outcome",
    "Prediction",
    "RegionState",
    "Schedule",
    "VersionProfile",
    "format_prediction",
    "load_version_profile",
    "predict",
]
