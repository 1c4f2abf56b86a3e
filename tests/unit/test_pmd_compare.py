"""Per-PMD comparison on real 6.12.117 debug-kernel traces of the 14 built-in workloads.

The recordings (tests/data/workloads/6.12.117-tcg-debug) all match the model
with the per-PMD check counting in the verdict; edited copies of their traces
show that one changed, missing or extra scan event makes a mismatch that names
the PMD, the kernel's status and the model's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.judge import compare as cmp
from orchestrator.judge import pmd as pmd_compare
from orchestrator.judge import rundir
from orchestrator.model import predict
from orchestrator.spec import load_spec
from orchestrator.suites.workloads.observation import load_observation
from orchestrator.suites.workloads.trace import parse_trace

DEBUG = Path(__file__).parents[2] / "tests" / "data" / "workloads" / "6.12.117-tcg-debug"
RUNS = sorted(p.parent for p in DEBUG.glob("*/trace.txt"))
REGION_A = 1 << 40  # where the driver put region "a" in these runs


def _load(run: Path) -> tuple:
    spec = load_spec(run / "spec.toml")
    obs = load_observation(run, spec)
    return spec, obs, rundir.load_scans(run, obs)


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / run.name
    shutil.copytree(run, out)
    return out


def _edit_trace(run: Path, old: str, new: str, nth: int) -> None:
    """Replace `old` by `new` in the nth (0-based) khugepaged line containing `old`
    (new == "" deletes the line)."""
    path = run / "trace.txt"
    lines = path.read_text().split("\n")
    hits = [i for i, line in enumerate(lines) if "khugepaged-" in line and old in line]
    if new:
        lines[hits[nth]] = lines[hits[nth]].replace(old, new)
    else:
        del lines[hits[nth]]
    path.write_text("\n".join(lines))


def test_all_fourteen_recorded() -> None:
    assert len(RUNS) == 14
    assert all((r / "driver.jsonl").exists() and (r / "spec.toml").exists() for r in RUNS)


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_real_trace_matches_with_per_pmd_check(run: Path) -> None:
    spec, obs, scans = _load(run)
    assert scans is not None
    kernel = pmd_compare.kernel_scans(scans, obs)
    assert kernel.total > 0 and not kernel.unchecked  # the check really ran
    v = cmp.compare(predict(spec), obs, spec, scans)
    assert v.status == "match", v.explanation
    assert "per-PMD scans agree with its decision log at every checkpoint" in v.explanation


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_compare_run_dir_on_real_runs(run: Path, tmp_path: Path) -> None:
    d = _copy(run, tmp_path)
    v = rundir.compare_run_dir(d, repredict="6.12")
    assert v.status == "match", v.explanation
    assert json.loads((d / "verdict.json").read_text())["status"] == "match"
    assert "cuts" in json.loads((d / "predicted.json").read_text())["checkpoints"][0][
        "outcomes"][0]


def test_changed_status_is_a_mismatch_naming_pmd_and_both_statuses(tmp_path: Path) -> None:
    d = _copy(DEBUG / "max-ptes-none-exceeded", tmp_path)
    _edit_trace(d, "status=exceed_none_pte", "status=succeeded", 1)
    v = rundir.compare_run_dir(d, repredict="6.12")
    assert v.status == "mismatch"
    first = v.details[0]
    assert (first["kind"], first["checkpoint"], first["address"], first["observed"],
            first["predicted"], first["scan"]) == (
        "pmd", "exceeded", f"{REGION_A:#x}", "SUCCEED", "EXCEED_NONE_PTE", 2)
    assert v.explanation.startswith(
        f"checkpoint 'exceeded': PMD {REGION_A:#x} (parent a pmd 0), khugepaged scan 2: "
        "kernel SUCCEED (none_or_zero=257, unmapped=0, referenced=255, writable=1) at "
        "11.031400 s, model EXCEED_NONE_PTE (none_or_zero=257")
    assert len(v.details) == 1  # reported once, not again at the later checkpoint
    assert json.loads((d / "verdict.json").read_text())["status"] == "mismatch"


def test_counters_alone_would_match_the_edited_trace(tmp_path: Path) -> None:
    d = _copy(DEBUG / "max-ptes-none-exceeded", tmp_path)
    _edit_trace(d, "status=exceed_none_pte", "status=succeeded", 1)
    spec = load_spec(d / "spec.toml")
    obs = load_observation(d, spec)
    assert cmp.compare(predict(spec), obs, spec).status == "match"  # no trace: counters only


def test_missing_scan_event(tmp_path: Path) -> None:
    d = _copy(DEBUG / "max-ptes-none-exceeded", tmp_path)
    _edit_trace(d, "status=exceed_none_pte", "", 1)
    v = rundir.compare_run_dir(d, repredict="6.12")
    assert v.status == "mismatch"
    assert (f"checkpoint 'exceeded': PMD {REGION_A:#x} (parent a pmd 0), khugepaged scan 3: "
            "kernel no scan, model EXCEED_NONE_PTE") in v.explanation
    assert "khugepaged scans of parent before the checkpoint: kernel 2, model 3" in v.explanation


def test_pfn_placement_must_agree_with_the_model_pmd(tmp_path: Path) -> None:
    """read-only-range: the PAGE_RO scans are placed on pmd 0 by pfn; pointing the
    first one's pfn at a page of pmd 1 contradicts the model's pmd 0."""
    d = _copy(DEBUG / "read-only-range", tmp_path)
    spec, obs, _ = _load(d)
    runs = [m for m in obs.pfn_maps if m.proc == "parent"][0].runs
    pfn_pmd1 = next(pfn for page, pfn, _ in runs if page >= 512)
    path = d / "trace.txt"
    lines = path.read_text().split("\n")
    i = next(i for i, line in enumerate(lines) if "no_writable_page" in line)
    head, _, tail = lines[i].partition("scan_pfn=")
    lines[i] = head + f"scan_pfn={pfn_pmd1:#x}," + tail.partition(",")[2]
    path.write_text("\n".join(lines))
    v = cmp.compare(predict(spec), obs, spec, rundir.load_scans(d, obs))
    assert v.status == "mismatch"
    assert "kernel PAGE_RO" in v.explanation and "placed on a pmd 1 (by pfn)" in v.explanation


def test_per_pmd_check_rules_out_schedules_counters_allow() -> None:
    """shared-after-fork: schedule 0 (the first pass ran before b was madvised) fits
    every counter, but the kernel collapsed b in its first pass."""
    spec, obs, scans = _load(DEBUG / "shared-after-fork")
    pred = cmp.normalize_prediction(predict(spec))
    check = cmp._PmdCheck(pmd_compare.kernel_scans(scans, obs), obs)
    assert not cmp._path_diffs(pred, obs, "schedule 0", spec)
    diffs = cmp._path_diffs(pred, obs, "schedule 0", spec, check)
    assert [(d["kind"], d["region"], d["observed"], d["predicted"]) for d in diffs] == [
        ("pmd", "a", "SUCCEED", "EXCEED_SHARED_PTE")]
    assert "placed on b pmd 0 (by order)" in diffs[0]["kernel"]


def test_same_microsecond_as_the_checkpoint_may_fall_either_side() -> None:
    """budget-time-series 'pass2': the next wakeup's two scans carry the checkpoint's
    own microsecond, so 12..14 kernel scans may precede it; the model's read at the
    full_scans increment (12) and after the rest of that wakeup (14) both are."""
    spec, obs, scans = _load(DEBUG / "budget-time-series")
    kernel = pmd_compare.kernel_scans(scans, obs)
    cp = obs.checkpoint("pass2")
    assert cp is not None
    bounds = pmd_compare.checkpoint_bounds(obs, cp)
    assert pmd_compare.admissible(kernel.streams[("parent", "khugepaged")], bounds) == (12, 14)
    pred = predict(spec)
    cuts = [o.cuts[0] for c in pred.checkpoints if c.label == "pass2" for o in c.outcomes
            if 0 in o.schedules][0]
    assert cuts == [12, 14]  # at the increment, or after the rest of that wakeup


def test_model_cuts_and_json() -> None:
    pred = predict(load_spec(DEBUG / "max-ptes-none-exceeded" / "spec.toml"))
    exceeded = pred.checkpoints[0]
    assert exceeded.label == "exceeded"
    by_schedule = {si: cuts for o in exceeded.outcomes for si, cuts in o.cuts.items()}
    assert by_schedule == {0: [3], 1: [3], 2: [2], 3: [2], 4: [1]}
    assert pred.to_json()["checkpoints"][0]["outcomes"][0]["cuts"] == {"0": [3], "1": [3]}


def test_prediction_without_cuts_uses_the_read_time() -> None:
    """Older predicted.json has no cuts: every cut between the decisions before the
    read's model time and those at it is admissible; the real runs still match."""
    alt = {"time_ms": 200, "log": [{"time_ms": 0}, {"time_ms": 200}, {"time_ms": 200},
                                   {"time_ms": 400}]}
    assert pmd_compare.alternative_cuts(alt) == [1, 2, 3]
    for run in RUNS:
        spec, obs, scans = _load(run)
        old = predict(spec).to_json()
        for cp in old["checkpoints"]:
            for o in cp["outcomes"]:
                del o["cuts"]
        assert cmp.compare(old, obs, spec, scans).status == "match", run.name


def test_unnamed_mm_is_reported_not_compared(tmp_path: Path) -> None:
    d = _copy(DEBUG / "max-ptes-none-exceeded", tmp_path)
    path = d / "trace.txt"
    path.write_text("\n".join(line for line in path.read_text().split("\n")
                              if "thpwork-" not in line))  # drop the beacon event
    spec, obs, scans = _load(d)
    v = cmp.compare(predict(spec), obs, spec, scans)
    assert v.status == "match"
    assert "not compared: parent (its beacon event is not in the trace)" in v.explanation


def test_incomplete_trace_is_not_compared(tmp_path: Path) -> None:
    d = _copy(DEBUG / "max-ptes-none-exceeded", tmp_path)
    _edit_trace(d, "status=exceed_none_pte", "status=succeeded", 1)
    path = d / "trace.txt"
    path.write_text(path.read_text() + "CPU:1 [LOST 3 EVENTS]\n")
    spec = load_spec(d / "spec.toml")
    obs = load_observation(d, spec)
    assert rundir.load_scans(d, obs) is None
    assert parse_trace(path.read_text()).lost_events == 3


def test_last_checkpoint_is_bounded_by_the_end_record() -> None:
    _, obs, _ = _load(DEBUG / "max-ptes-none-exceeded")
    cp = obs.checkpoint("at-limit")
    assert cp is not None and obs.end_ns == 11_495_429_425
    assert pmd_compare.checkpoint_bounds(obs, cp) == (cp.time_ns, obs.end_ns)
