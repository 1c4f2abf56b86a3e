"""Recorded driver outputs from a real 6.12.117 guest: parse cleanly, compare as a match."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.data import WORKLOAD_SPECS_DIR
from orchestrator.judge.compare import compare
from orchestrator.model import predict
from orchestrator.spec import load_spec
from orchestrator.suites.workloads.driver import driver_input, load_observation

ROOT = Path(__file__).parents[2]
RECORDED = sorted((ROOT / "tests" / "data" / "workloads" / "6.12.117-tcg").glob("*/driver.jsonl"))


@pytest.mark.parametrize("path", RECORDED, ids=[p.parent.name for p in RECORDED])
def test_recorded_run_matches_model(path: Path) -> None:
    toml = WORKLOAD_SPECS_DIR / f"{path.parent.name}.toml"
    if (path.parent / "spec.toml").exists():  # the spec as recorded (the shipped one moved on)
        toml = path.parent / "spec.toml"
    if not toml.exists():
        pytest.skip(f"{toml.name} is gone: delete its recording")
    spec = load_spec(toml)
    if (path.parent / "driver-input.txt").read_text() != driver_input(spec):
        pytest.skip("the spec or the input format changed since recording: re-record")
    obs = load_observation(path.parent, spec)
    assert obs.complete and not obs.unparsed and not obs.errors
    assert all(s["errno"] == 0 and not s["skipped"] for s in obs.settings)
    assert obs.checkpoints[0].pids["parent"] == obs.pids["parent"]
    v = compare(predict(spec), obs, spec)
    assert v.status == "match", v.explanation
    # aligned with the passes the driver saw at each wait's start: still a match
    waits = [i for i, s in enumerate(spec.steps) if s.op == "wait_scans"]
    assert sorted(obs.wait_starts) == waits
    v = compare(predict(spec, wait_starts=obs.wait_starts), obs, spec)
    assert v.status == "match", v.explanation


def test_recordings_exist() -> None:
    assert len(RECORDED) >= 14
