"""Helpers for the model unit tests: a machine with one process and given regions."""

from __future__ import annotations

from orchestrator.model.khugepaged import Khugepaged
from orchestrator.model.machine import Faults, Machine
from orchestrator.model.mm import HPAGE_PMD_NR, Mm
from orchestrator.model.profile import load_version_profile
from orchestrator.model.simulate import Chooser, WorkloadRun
from orchestrator.spec import parse_spec


def machine(regions: dict[str, int], version: str = "6.12", faults: Faults | None = None,
            **settings: object) -> tuple[Machine, Khugepaged, Mm, dict[str, int]]:
    """(machine, khugepaged, parent mm, region name -> first page number)."""
    text = ['format = 1', 'name = "t"', "[settings]"]
    text += [(f'"{k}"' if "/" in k else k) + f" = {v!r}".replace("'", '"')
             for k, v in settings.items()]
    for name, pmds in regions.items():
        text += ["[[regions]]", f'name = "{name}"', f"pmds = {pmds}"]
    text += ["[[steps]]", 'op = "checkpoint"']
    run = WorkloadRun(parse_spec("\n".join(text), "<t>"), load_version_profile(version),
                      faults or Faults(), Chooser([]))
    starts = {n: s for n, (s, _) in run.extent.items()}
    return run.m, run.k, run.m.mms["parent"], starts


def pmd(start: int, i: int) -> int:
    """Page number of PMD i of a region starting at `start` (aligned)."""
    return start + i * HPAGE_PMD_NR


def run_scan(k: Khugepaged) -> None:
    """One khugepaged_do_scan() to completion (alloc sleeps included)."""
    for _ in k.do_scan():
        pass
