"""The judge on a workload's run directory: predict, compare, and write what was decided
(predicted.json, verdict.json), or re-compare offline from the files a run left.

    <workload dir>/spec.toml      the spec as run
                   driver.jsonl   the driver's output (the observation)
                   trace.txt      huge_memory trace events (debug kernels), trace-format.txt
                   predicted.json the model's Prediction (`Prediction.to_json`)
                   verdict.json   the verdict
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from orchestrator.cache import write_json
from orchestrator.errors import UserError
from orchestrator.judge.compare import Verdict, compare
from orchestrator.judge.entry import result_entry
from orchestrator.model import predict
from orchestrator.model.prediction import Prediction
from orchestrator.spec import WorkloadSpec, load_spec
from orchestrator.suites.workloads.observation import Observation, load_observation
from orchestrator.suites.workloads.trace import (
    EVENTS,
    SCAN_PMD,
    PmdScan,
    locate_scans,
    parse_format_dump,
    parse_trace,
)

log = logging.getLogger(__name__)


def predict_for(spec: WorkloadSpec, obs: Observation, version: str) -> Prediction:
    """The model's prediction aligned with the run: the pass counts the driver read
    when each wait began and at each checkpoint (the model predicts per pass), and
    the driver's timestamps (how many wake-ups a time series can have seen)."""
    return predict(spec, version=version, wait_starts=obs.wait_starts,
                   checkpoint_passes=obs.checkpoint_passes(), step_times=obs.step_times())


def judge_workload(spec: WorkloadSpec, obs: Observation, out_dir: Path, version: str,
                   started: float | None = None) -> dict[str, Any]:
    """Predict `spec` for kernel `version`, compare with `obs` (and the trace in
    `out_dir`), write predicted.json and verdict.json; the result.json entry."""
    prediction = predict_for(spec, obs, version)
    verdict = compare(prediction, obs, spec, load_scans(out_dir, obs))
    write_verdict(out_dir, prediction, verdict)
    log.info("workload %s: %s", spec.name, verdict.status)
    duration = round(time.monotonic() - started, 2) if started is not None else None
    return result_entry(spec, obs, prediction, verdict, duration)


def write_verdict(out_dir: Path, prediction: Prediction, verdict: Verdict) -> None:
    """predicted.json (the model's full JSON: outcomes, reasons, schedules, decisions,
    assumptions; `Prediction.from_json` reads it back) and verdict.json in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "predicted.json", prediction.to_json())
    write_json(out_dir / "verdict.json", verdict.to_dict())


def load_scans(run_dir: Path, obs: Observation) -> list[PmdScan] | None:
    """PMD-placed scan events from run_dir/trace.txt, or None when there is no trace
    or it is incomplete (the kernel lost events, or a scan_pmd line could not be
    read): an incomplete trace cannot take part in the per-PMD comparison."""
    path = run_dir / "trace.txt"
    if not path.exists():
        return None
    fmt_path = run_dir / "trace-format.txt"  # the kernel's event formats (absent: 6.12 shapes)
    fmt = parse_format_dump(fmt_path.read_text(errors="replace")) if fmt_path.exists() else None
    trace = parse_trace(path.read_text(errors="replace"), EVENTS, fmt)
    if trace.unparsed:
        log.warning("%s: %d lines not understood", path, len(trace.unparsed))
    if trace.lost_events or any(SCAN_PMD in line for line in trace.unparsed):
        log.warning("%s: incomplete trace (%d events lost, %d lines not understood): "
                    "no per-PMD comparison", path, trace.lost_events, len(trace.unparsed))
        return None
    return locate_scans(trace, obs)


def compare_run_dir(run_dir: Path, spec: WorkloadSpec | None = None,
                    repredict: str | None = None) -> Verdict:
    """Offline comparison of one workload directory: driver.jsonl, trace.txt, and
    spec.toml when `spec` is None; predicted.json, or with `repredict` a new
    prediction for that kernel version. Rewrites verdict.json and predicted.json."""
    if spec is None:
        spec = load_spec(run_dir / "spec.toml")
    obs = load_observation(run_dir, spec)
    prediction = predict_for(spec, obs, repredict) if repredict else None
    if prediction is None:
        path = run_dir / "predicted.json"
        try:
            prediction = Prediction.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: cannot read the model prediction: {e}") from e
    verdict = compare(prediction, obs, spec, load_scans(run_dir, obs))
    write_verdict(run_dir, prediction, verdict)
    return verdict
