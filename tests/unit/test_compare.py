"""compare.py: alternatives as paths, exact values, step results, PMD detail from the trace."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from orchestrator.data import RESULT_SCHEMA
from orchestrator.judge.compare import (
    Verdict,
    compare,
    fits,
    normalize_prediction,
    result_entry,
    show,
    write_verdict,
)
from orchestrator.spec import parse_spec
from orchestrator.suites.workloads.observation import parse_driver_output
from orchestrator.suites.workloads.trace import locate_scans, parse_trace

SPEC_TEXT = """
format = 1
name = "cmp"
description = "two PMDs, one collapses"
[[regions]]
name = "a"
pmds = 2
[[steps]]
op = "touch"
region = "a"
pages = "0-511,512-600"
[[steps]]
op = "madvise"
region = "a"
advice = "hugepage"
[[steps]]
op = "wait_scans"
count = 2
label = "scanned"
[[steps]]
op = "madvise"
region = "a"
advice = "collapse"
expect = "ok"
[[steps]]
op = "checkpoint"
label = "end"
"""
SPEC = parse_spec(SPEC_TEXT, "cmp.toml")

BASE = 1 << 40
PMD = 2 << 20


def _cp(step: int, t: int, counters: dict[str, int], huge: list[int], ahp: int) -> dict:
    vma = [BASE, BASE + 2 * PMD, 2048 + 356, 0, ahp, 1, "rd wr mr mw me ac hg"]
    return {"event": "checkpoint", "step": step, "time_ns": t, "counters": counters,
            "procs": [{"proc": "parent", "pid": 50, "regions": [
                {"region": 0, "start": BASE, "vmas": [vma], "pmd_method": "pagemap_scan",
                 "huge_pmds": huge, "zero_pmds": []}]}]}


def driver_output(*, collapse_errno: int = 0, complete: bool = True, alloc: int = 1) -> str:
    base = {"thp_collapse_alloc": 10, "pages_collapsed": 4, "full_scans": 100,
            "thp_scan_exceed_none_pte": 0}
    after = dict(base, thp_collapse_alloc=10 + alloc, pages_collapsed=5, full_scans=102,
                 thp_scan_exceed_none_pte=2)
    ev = [
        {"event": "start", "pid": 50, "time_ns": 1_000_000_000},
        {"event": "beacon", "proc": "parent", "pid": 50, "time_ns": 1_100_000_000},
        {"event": "region", "region": 0, "start": BASE, "pages": 1024},
        _cp(-1, 1_200_000_000, base, [], 0),
        {"event": "step", "step": 0, "proc": "parent", "op": "touch", "region": 0, "calls": [],
         "time_ns": 1_300_000_000},
        {"event": "step", "step": 1, "proc": "parent", "op": "madvise", "region": 0,
         "calls": [[0, 1023, 0, 0]], "time_ns": 1_400_000_000},
        {"event": "pfns", "step": 2, "time_ns": 1_500_000_000, "proc": "parent", "region": 0,
         "runs": [[0, 1000, 512], [512, 9000, 89]]},
        {"event": "wait", "step": 2, "start": 100, "target": 102, "reached": 102,
         "timed_out": False, "time_ns": 3_000_000_000},
        _cp(2, 3_000_000_001, after, [0], 2048),
        {"event": "step", "step": 3, "proc": "parent", "op": "madvise", "region": 0,
         "calls": [[0, 1023, -1 if collapse_errno else 0, collapse_errno]],
         "time_ns": 3_500_000_000},
        _cp(4, 4_000_000_000, after, [0], 2048),
    ]
    if complete:
        ev.append({"event": "end", "time_ns": 4_100_000_000})
    return "\n".join(json.dumps(e) for e in ev)


def prediction(alloc_first: int = 1, none_first: int = 2) -> dict:
    """A prediction in the model's JSON shape (Prediction.to_json): two schedules."""
    def outcome(schedules: list[int], alloc: int, none: int, t: int, results: dict) -> dict:
        return {"reasons": [f"because {schedules}"], "schedules": schedules, "time_ms": t,
                "counters": {"thp_collapse_alloc": alloc, "pages_collapsed": 1,
                             "full_scans": 2, "thp_scan_exceed_none_pte": none},
                "regions": {"parent": {"a": {"anon_huge_kb": 2048, "rss_kb": 2048 + 356,
                                             "swap_kb": 0, "huge_pmds": [0]}}},
                "results": results, "timed_out": False}
    decisions = [
        {"time_ms": 200, "pass": 1, "proc": "parent", "by": "khugepaged", "address": BASE,
         "result": "SUCCEED", "none_or_zero": 0, "unmapped": 0, "shared": 0,
         "referenced": 512, "writable": 1, "region": "a", "pmd": 0},
        {"time_ms": 200, "pass": 1, "proc": "parent", "by": "khugepaged",
         "address": BASE + PMD, "result": "SUCCEED", "none_or_zero": 423, "unmapped": 0,
         "shared": 0, "referenced": 89, "writable": 1, "region": "a", "pmd": 1}]
    return {
        "workload": "cmp", "version": "6.12",
        "checkpoints": [
            {"label": "scanned", "step": 2, "outcomes": [
                outcome([0], alloc_first, none_first - 1, 400, {"1": "ok"}),
                outcome([1], alloc_first, none_first, 400, {"1": "ok"})]},
            {"label": "end", "step": 4, "outcomes": [
                outcome([0], alloc_first, none_first - 1, 500, {"1": "ok", "3": "ok"}),
                outcome([1], alloc_first, none_first, 500, {"1": "ok", "3": "ok"})]}],
        "schedules": [
            {"index": 0, "choices": ["first pass lost to mmap_lock contention"],
             "decisions": decisions},
            {"index": 1, "choices": ["first pass scanned the process"],
             "decisions": decisions}],
        "assumptions": []}


def obs(**kw: object):
    return parse_driver_output(driver_output(**kw), SPEC)  # type: ignore[arg-type]


def test_values() -> None:
    assert fits(3, 3) and not fits(3, 4)
    assert fits({"min": 2, "max": None}, 7) and not fits({"min": 2, "max": 4}, 5)
    assert show({"min": 2, "max": None}) == ">=2" and show({"min": 1, "max": 3}) == "1..3"
    with pytest.raises(ValueError):
        fits(True, 1)
    with pytest.raises(ValueError):
        fits({"max": 3}, 1)


def test_match_picks_the_path_that_fits_everywhere() -> None:
    v = compare(prediction(), obs(), SPEC)
    assert v.status == "match", v.explanation
    assert v.chosen_alternative == "schedule 1"
    assert v.explanation == ("all 2 checkpoints fit model schedule 1 "
                             "(first pass scanned the process)")


def test_counter_mismatch_names_counter_checkpoint_and_amount() -> None:
    v = compare(prediction(), obs(alloc=0), SPEC)
    assert v.status == "mismatch" and v.chosen_alternative is None
    first = v.details[0]
    assert (first["checkpoint"], first["name"], first["observed"], first["predicted"]) == (
        "scanned", "thp_collapse_alloc", 0, "1")
    assert first["by"] == -1
    assert "counter thp_collapse_alloc changed by 0, model 1" in v.explanation
    assert "'scanned'" in v.explanation


def test_exact_no_tolerance() -> None:
    v = compare(prediction(none_first=5), obs(), SPEC)  # observed 2, model 5 or 4
    assert v.status == "mismatch"
    assert any(d["name"] == "thp_scan_exceed_none_pte" for d in v.details)


def test_step_result_against_spec_and_model() -> None:
    v = compare(prediction(), obs(collapse_errno=22), SPEC)
    assert v.status == "mismatch"
    step = [d for d in v.details if d["kind"] == "step"]
    assert step and step[0]["observed"] == "EINVAL" and step[0]["predicted"] == "ok"
    assert "step 3 madvise collapse a returned EINVAL, spec expects ok" in v.explanation
    model = [d for d in v.details if d["kind"] == "step" and d["source"] == "model"]
    assert model and model[0]["checkpoint"] == "end"


def test_region_difference() -> None:
    p = prediction()
    for cp in p["checkpoints"]:
        for o in cp["outcomes"]:
            o["regions"]["parent"]["a"].update(anon_huge_kb=4096, huge_pmds=[0, 1])
    v = compare(p, obs(), SPEC)
    assert v.status == "mismatch"
    assert "region a AnonHugePages is 2048 kB, model 4096 kB" in v.explanation
    assert any(d["kind"] == "huge_pmds" and d["observed"] == [0] for d in v.details)


def test_pmd_detail_from_trace() -> None:
    p = prediction()
    for cp in p["checkpoints"]:
        for out in cp["outcomes"]:
            out["regions"]["parent"]["a"]["anon_huge_kb"] = 4096
    o = obs()
    trace = parse_trace("\n".join([
        "thpwork-50 [000] ..... 1.050000: mm_khugepaged_scan_pmd: mm=P, "
        "scan_pfn=0xffffffffffffffff, writable=0, referenced=0, none_or_zero=0, "
        "status=pmd_none, unmapped=0",
        "khugepaged-35 [001] ..... 2.000000: mm_khugepaged_scan_pmd: mm=P, scan_pfn=0x5e7, "
        "writable=1, referenced=512, none_or_zero=0, status=succeeded, unmapped=0",
        "khugepaged-35 [001] ..... 2.000100: mm_khugepaged_scan_pmd: mm=P, scan_pfn=0x2360, "
        "writable=1, referenced=89, none_or_zero=423, status=exceed_none_pte, unmapped=0",
    ]))
    scans = locate_scans(trace, o)
    assert [(s.pmd, s.located_by) for s in scans] == [(None, "beacon"), (0, "pfn"), (1, "pfn")]
    v = compare(p, o, SPEC, scans)
    assert v.status == "mismatch"
    pmds = v.details[0]["pmds"]
    assert pmds == [{"address": f"{BASE + PMD:#x}", "region": "a", "pmd": 1, "proc": "parent",
                     "kernel": "EXCEED_NONE_PTE (none_or_zero=423, unmapped=0, referenced=89, "
                               "writable=1)",
                     "kernel_located_by": "pfn",
                     "model": "SUCCEED (none_or_zero=423, unmapped=0, shared=0, referenced=89, "
                              "writable=1)"}]
    assert f"PMD {BASE + PMD:#x} (parent a pmd 1): kernel EXCEED_NONE_PTE" in v.explanation


def test_incomplete_run_is_error() -> None:
    v = compare(prediction(), obs(complete=False), SPEC)
    assert v.status == "error" and "did not finish" in v.explanation


def test_bad_prediction_is_error() -> None:
    assert compare({"nothing": 1}, obs(), SPEC).status == "error"
    bad = prediction()
    for o in bad["checkpoints"][0]["outcomes"]:
        o["counters"]["full_scans"] = "lots"
    assert compare(bad, obs(), SPEC).status == "error"
    assert compare({"checkpoints": [{"label": "x"}]}, obs(), SPEC).status == "error"


def test_missing_checkpoint_and_counter() -> None:
    p = prediction()
    p["checkpoints"].append({"label": "never", "step": 9, "outcomes": [
        {"schedules": [1], "counters": {}, "regions": {}}]})
    p["checkpoints"][0]["outcomes"][1]["counters"]["thp_no_such_counter"] = 0
    v = compare(p, obs(), SPEC)
    assert v.status == "mismatch"
    kinds = {(d["kind"], d["name"]) for d in v.details}
    assert ("missing", "checkpoint") in kinds and ("counter", "thp_no_such_counter") in kinds


def test_normalize_accepts_objects() -> None:
    class Pred:
        def to_json(self) -> dict:
            return prediction()

    norm = normalize_prediction(Pred())
    alt = norm["checkpoints"][1]["alternatives"][1]
    assert alt["name"] == "schedule 1" and alt["results"] == {1: "ok", 3: "ok"}
    assert alt["regions"] == {"a": {"AnonHugePages": 2048, "Rss": 2404, "Swap": 0}}
    assert alt["huge_pmds"] == {"a": [0]}
    assert len(norm["checkpoints"][0]["alternatives"][0]["decisions"]) == 2
    assert norm["checkpoints"][1]["alternatives"][0]["decisions"] == []  # none after 400 ms
    assert normalize_prediction(norm) == norm  # idempotent


def test_write_and_result_entry(tmp_path: Path) -> None:
    o = obs()
    v = compare(prediction(), o, SPEC)
    write_verdict(tmp_path, prediction(), v)
    assert json.loads((tmp_path / "verdict.json").read_text())["status"] == "match"
    assert json.loads((tmp_path / "predicted.json").read_text()) == prediction()
    entry = result_entry(SPEC, o, prediction(), v, duration=3.2)
    assert [c["label"] for c in entry["checkpoints"]] == ["scanned", "end"]
    assert entry["checkpoints"][0]["observed"]["counters"]["pages_collapsed"] == 1
    assert entry["checkpoints"][0]["observed"]["regions"]["a"]["AnonHugePages"] == 2048
    # each admissible schedule in words, and the one the kernel took
    assert entry["schedules"] == [
        {"name": "schedule 0", "explanation": "first pass lost to mmap_lock contention",
         "taken": v.chosen_alternative == "schedule 0"},
        {"name": "schedule 1", "explanation": "first pass scanned the process",
         "taken": v.chosen_alternative == "schedule 1"}]
    assert sum(s["taken"] for s in entry["schedules"]) == 1
    schema = json.loads((RESULT_SCHEMA).read_text())
    wl_schema = {"$defs": schema["$defs"], **schema["$defs"]["workload"]}
    jsonschema.validate(entry, wl_schema)
    err = Verdict("error", "driver failed")
    jsonschema.validate(result_entry(SPEC, o, {"bad": 1}, err), wl_schema)


def test_compare_run_dir_offline(tmp_path: Path) -> None:
    from orchestrator.judge.compare import compare_run_dir

    p = prediction()
    for cp in p["checkpoints"]:
        for out in cp["outcomes"]:
            out["counters"]["pages_collapsed"] = 2
    (tmp_path / "driver.jsonl").write_text(driver_output())
    (tmp_path / "predicted.json").write_text(json.dumps(p))
    (tmp_path / "trace.txt").write_text(
        "khugepaged-35 [001] ..... 2.000100: mm_khugepaged_scan_pmd: mm=P, scan_pfn=0x2360, "
        "writable=1, referenced=89, none_or_zero=423, status=exceed_none_pte, unmapped=0\n")
    (tmp_path / "spec.toml").write_text(SPEC_TEXT)
    v = compare_run_dir(tmp_path)
    assert v.status == "mismatch"
    assert v.details[0]["name"] == "pages_collapsed" and v.details[0]["observed"] == 1
    assert "PMD 0x10000200000 (parent a pmd 1): kernel EXCEED_NONE_PTE" in v.explanation
    assert json.loads((tmp_path / "verdict.json").read_text())["status"] == "mismatch"


def test_compare_run_dir_without_prediction(tmp_path: Path) -> None:
    from orchestrator.errors import UserError
    from orchestrator.judge.compare import compare_run_dir

    (tmp_path / "driver.jsonl").write_text(driver_output())
    with pytest.raises(UserError, match="predicted.json"):
        compare_run_dir(tmp_path, SPEC)


def test_torn_reading_is_never_judged_as_a_state() -> None:
    """A checkpoint the driver could not read consistently (a collapse moved
    pages_collapsed / full_scans / thp_collapse_alloc during every read) is an
    error, not a match or mismatch; a consistent one after retries is judged."""
    lines = driver_output().splitlines()
    at = next(i for i, ln in enumerate(lines) if '"step": 2, "time_ns": 3000000001' in ln)
    cp = json.loads(lines[at])
    assert cp["event"] == "checkpoint"
    lines[at] = json.dumps(dict(cp, reads=50, consistent=False))
    v = compare(prediction(), parse_driver_output("\n".join(lines), SPEC), SPEC)
    assert v.status == "error" and "no consistent reading" in v.explanation
    lines[at] = json.dumps(dict(cp, reads=3, consistent=True))
    torn_then_ok = parse_driver_output("\n".join(lines), SPEC)
    assert torn_then_ok.checkpoints[1].reads == 3
    assert compare(prediction(), torn_then_ok, SPEC).status == "match"
