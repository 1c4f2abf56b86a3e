"""predict(): a workload spec + version profile -> Prediction (the model's entry point)."""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.model.machine import Faults
from orchestrator.model.mm import HPAGE_PMD_NR
from orchestrator.model.prediction import CheckpointPrediction, Outcome, Prediction, Schedule
from orchestrator.model.profile import VersionProfile, load_version_profile
from orchestrator.model.results import Scan
from orchestrator.model.simulate import ASSUMPTIONS, Chooser, WorkloadRun, enumerate_runs
from orchestrator.spec import WorkloadSpec

log = logging.getLogger(__name__)


def predict(spec: WorkloadSpec, version: str = "6.12", faults: Faults | None = None,
            wait_starts: dict[int, int] | None = None,
            checkpoint_passes: dict[int, int] | None = None,
            step_times: dict[int, tuple[int, int]] | None = None) -> Prediction:
    """Predict counters, smaps and per-PMD decisions at every checkpoint of `spec`.

    `version` selects the profile (nearest known one, with a warning, if
    unknown); `faults` injects THP allocation/charge failures. `wait_starts`
    (wait_scans step -> the full_scans delta the driver saw when it began, from
    `Observation.wait_starts`) aligns the model with the passes the kernel
    completed: a periodic wake-up that fell inside slow steps before a wait is run
    before the wait, so the wait counts the same passes as the kernel's.
    `checkpoint_passes` (checkpoint step -> observed full_scans delta) does the
    same for plain and time-series checkpoints: a kernel ahead of the model's
    clock (the driver's steps and reads took time) is followed by running the
    periodic wake-ups up to the observed pass; the other counters are then
    compared exactly at that pass. `step_times` (step -> driver timestamps before
    it began and after it was over, `Observation.step_times`) bounds how many
    wake-ups the kernel can have made before a time series' last read: the series
    is extended to them (within the pass the next wait saw), so a kernel a wake-up
    ahead of the model's clock inside a pass is among its positions too.
    """
    profile = load_version_profile(version)
    flt = faults or Faults()

    def make(ch: Chooser) -> WorkloadRun:
        return WorkloadRun(spec, profile, flt, ch, wait_starts=wait_starts,
                           checkpoint_passes=checkpoint_passes, step_times=step_times)

    runs = enumerate_runs(make)
    # schedules whose wait began at another pass than the driver saw are ruled out
    # (unless every one is: then the comparison shows the difference)
    runs = [r for r in runs if not r.contradicted] or runs
    log.debug("workload %s: %d schedule(s)", spec.name, len(runs))
    checkpoints = []
    for ci, first in enumerate(runs[0].checkpoints):
        cp = CheckpointPrediction(first.label, first.step)
        for si, run in enumerate(runs):
            rec = run.checkpoints[ci]
            why = run.chooser.labels[:rec.n_choices]
            for sub, obs, t, cuts in rec.seen:
                reason = "; ".join([*why, sub] if sub else why) or "deterministic"
                _merge(cp.outcomes, obs, reason, si, t, cuts)
        checkpoints.append(cp)
    schedules = [Schedule(i, list(r.chooser.labels), _decisions(r, profile), _collapses(r))
                 for i, r in enumerate(runs)]
    warnings = sorted({w for r in runs for w in r.m.warnings})
    return Prediction(spec.name, spec.source, version, profile.version, dict(spec.settings),
                      checkpoints, schedules, list(ASSUMPTIONS), warnings)


def _collapses(run: WorkloadRun) -> list[dict[str, Any]]:
    """The run's collapse_huge_page() calls, tagged with region and page index."""
    out = [dict(c) for c in run.m.collapse_log]
    for c in out:
        page = c["address"] // 4096
        for name, (s, e) in run.extent.items():
            if s <= page < e:
                c["region"], c["page"] = name, page - s
                break
    return out


def _merge(outcomes: list[Outcome], obs: Any, reason: str, si: int, t: int,
           cuts: tuple[int, ...]) -> None:
    """Add schedule `si`'s observation to the outcome equal to it (or a new one),
    with the decision-log positions `cuts` it was read at on that schedule."""
    for o in outcomes:
        if o.observation == obs:
            if reason not in o.reasons:
                o.reasons.append(reason)
            if si not in o.schedules:
                o.schedules.append(si)
            o.cuts[si] = sorted(set(o.cuts.get(si, [])) | set(cuts))
            return
    outcomes.append(Outcome(obs, [reason], [si], t, {si: sorted(cuts)}))


def _decisions(run: WorkloadRun, profile: VersionProfile) -> list[dict[str, Any]]:
    """The run's decision log; each record is tagged with its region and PMD
    index, and with the `status` of the version's mm_khugepaged_scan_pmd trace
    event (numeric value and text), for alignment with a kernel trace."""
    out = run.m.log.records()
    for d in out:
        d["status"] = profile.result_value(Scan[d["result"]])
        d["status_text"] = Scan[d["result"]].value
        page = d["address"] // 4096
        for name, base in run.base.items():
            s, e = run.extent[name]
            if base <= page < e:
                d["region"], d["pmd"] = name, (page - base) // HPAGE_PMD_NR
                break
    return out
