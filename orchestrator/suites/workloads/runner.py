"""Workloads in a booted guest, each compared with the khugepaged model.

Glue between the spec loader (`spec.py`), the in-guest driver (`workload.py`),
the model (`model/`) and the comparison (`compare.py`): one guest, many
workloads, one result.json entry per workload.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from orchestrator.data import WORKLOAD_SPECS_DIR
from orchestrator.errors import UserError
from orchestrator.judge import compare
from orchestrator.machine.guest import GuestShell
from orchestrator.spec import WorkloadSpec, load_spec
from orchestrator.suites.workloads import driver as workload

log = logging.getLogger(__name__)

BUILTIN_DIR = WORKLOAD_SPECS_DIR


def builtin_specs() -> list[WorkloadSpec]:
    """The shipped workloads (orchestrator/workloads/*.toml), by file name."""
    return [load_spec(p) for p in sorted(BUILTIN_DIR.glob("*.toml"))]


def select(selection: list[str] | str | None, files: list[Path]) -> list[WorkloadSpec]:
    """Built-in workloads ("builtin" = all, or a list of names) plus spec files."""
    specs: list[WorkloadSpec] = []
    if selection == "builtin":
        specs = builtin_specs()
    elif isinstance(selection, list):
        known = {s.name: s for s in builtin_specs()}
        unknown = [n for n in selection if n not in known]
        if unknown:
            raise UserError(f"unknown workload(s) {unknown}; built-in: {sorted(known)}")
        specs = [known[n] for n in selection]
    specs += [load_spec(p) for p in files]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"workload names must be unique in one run: {dupes}")
    return specs


def for_kernel(specs: list[WorkloadSpec], release: str) -> list[WorkloadSpec]:
    """The workloads that apply to kernel `release` (their `since` is not newer)."""
    skipped = [s.name for s in specs if not s.applies_to(release)]
    if skipped:
        log.info("kernel %s: skipping workloads for newer kernels: %s", release,
                 ", ".join(skipped))
    return [s for s in specs if s.applies_to(release)]


def prepare_driver() -> Path:
    """Build (or reuse) the static driver on the host (before booting)."""
    return workload.driver_binary()


def upload(shell: GuestShell) -> str:
    """Copy the driver into the guest once; returns its guest path."""
    return workload.upload_driver(shell)


def run_one(shell: GuestShell, spec: WorkloadSpec, out_dir: Path, driver_remote: str,
            version: str) -> dict[str, Any]:
    """Run one workload, predict it with the model for `version`, compare; the
    result.json entry. Writes observed/predicted/verdict JSON into `out_dir`."""
    from orchestrator.model import predict

    start = time.monotonic()
    obs = workload.run_workload(shell, spec, out_dir, driver_remote)
    prediction = predict(spec, version=version, wait_starts=obs.wait_starts)
    verdict = compare.compare(prediction, obs, spec, compare.load_scans(out_dir, obs))
    compare.write_verdict(out_dir, prediction, verdict)
    log.info("workload %s: %s", spec.name, verdict.status)
    return compare.result_entry(spec, obs, prediction, verdict,
                                round(time.monotonic() - start, 2))


def drop_guest_disks(guest_dir: Path) -> None:
    """Remove a stopped per-workload guest's overlay and swap disk (they only
    matter while it runs; a suite of fresh guests would otherwise keep one each)."""
    for name in ("rootfs-overlay.qcow2", "swap.img"):
        (guest_dir / name).unlink(missing_ok=True)


def error_entry(spec: WorkloadSpec, why: str) -> dict[str, Any]:
    """The result.json entry of a workload whose driver failed in a live guest."""
    return {"name": spec.name, "description": spec.description, "verdict": "error",
            "explanation": why[:4000], "chosen_alternative": None, "checkpoints": []}
