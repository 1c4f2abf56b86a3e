"""compare() against the real model on every built-in workload.

For each workload, the driver output a kernel following one model schedule
would print is synthesised from that schedule's outcomes; compare must call it
a match on that schedule, and a mismatch once one counter is off by one.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.data import WORKLOAD_SPECS_DIR
from orchestrator.judge.compare import compare
from orchestrator.model import predict
from orchestrator.spec import PAGE_SIZE, WorkloadSpec, layout_addresses, load_spec
from orchestrator.suites.workloads.driver import driver_input
from orchestrator.suites.workloads.observation import parse_driver_output

WORKLOADS = sorted(WORKLOAD_SPECS_DIR.glob("*.toml"))


def _region_event(spec: WorkloadSpec, idx: int, st: dict[str, Any]) -> dict[str, Any]:
    r = spec.regions[idx]
    start = layout_addresses(spec)[r.name]
    vma = [start, start + r.pages * PAGE_SIZE, st["rss_kb"], st["swap_kb"], st["anon_huge_kb"],
           1, "rd wr mr mw me ac"]
    return {"region": idx, "start": start, "vmas": [vma], "pmd_method": "pagemap_scan",
            "huge_pmds": st["huge_pmds"], "zero_pmds": []}


def _checkpoint(spec: WorkloadSpec, step: int, t: int, outcome: dict[str, Any] | None) -> dict:
    counters = dict.fromkeys(("thp_collapse_alloc", "pages_collapsed", "full_scans"), 0)
    procs = []
    if outcome is not None:
        counters = dict(outcome["counters"])
        for proc, regions in outcome["regions"].items():
            procs.append({"proc": proc, "pid": 100 + len(procs), "regions": [
                _region_event(spec, i, regions[r.name]) for i, r in enumerate(spec.regions)]})
    return {"event": "checkpoint", "step": step, "time_ns": t, "counters": counters,
            "procs": procs}


def synthesize(spec: WorkloadSpec, pred: dict[str, Any], schedule: int) -> str:
    """Driver output of a kernel that behaved exactly like `schedule`."""
    zero = {k: 0 for k in pred["checkpoints"][0]["outcomes"][0]["counters"]}
    lines: list[dict[str, Any]] = [{"event": "start", "pid": 100},
                                   {"event": "checkpoint", "step": -1, "time_ns": 1,
                                    "counters": zero, "procs": []}]
    results: dict[str, str] = {}
    for n, cp in enumerate(pred["checkpoints"]):
        o = next(o for o in cp["outcomes"] if schedule in o["schedules"])
        results.update(o["results"])
        if spec.steps[cp["step"]].op == "wait_scans":
            lines.append({"event": "wait", "step": cp["step"], "timed_out": o["timed_out"],
                          "time_ns": 10 + n})
        lines.append(_checkpoint(spec, cp["step"], 10 + n, o))
    for step, res in results.items():
        err = 0 if res == "ok" else getattr(errno, res)
        lines.append({"event": "step", "step": int(step), "proc": spec.steps[int(step)].proc,
                      "op": spec.steps[int(step)].op, "calls": [[0, 0, -1 if err else 0, err]],
                      "time_ns": 5})
    for i, s in enumerate(spec.steps):  # spec expectations after the last checkpoint
        if str(i) not in results and "expect" in s.args:
            err = 0 if s.args["expect"] == "ok" else getattr(errno, s.args["expect"])
            lines.append({"event": "step", "step": i, "proc": s.proc, "op": s.op,
                          "calls": [[0, 0, -1 if err else 0, err]], "time_ns": 99})
    lines.append({"event": "end"})
    return "\n".join(json.dumps(e) for e in lines)


@pytest.mark.parametrize("path", WORKLOADS, ids=[p.stem for p in WORKLOADS])
def test_each_schedule_matches_itself(path: Path) -> None:
    spec = load_spec(path)
    driver_input(spec)  # every built-in workload is expressible in the driver's input
    pred = predict(spec).to_json()
    for sched in pred["schedules"][:4]:
        obs = parse_driver_output(synthesize(spec, pred, sched["index"]), spec)
        assert not obs.unparsed, obs.unparsed
        v = compare(pred, obs, spec)
        assert v.status == "match", v.explanation
        # the chosen schedule produces the same observation (several may)
        chosen = int(v.chosen_alternative.split()[-1])  # type: ignore[union-attr]
        for cp in pred["checkpoints"]:
            mine = next(o for o in cp["outcomes"] if sched["index"] in o["schedules"])
            theirs = [o for o in cp["outcomes"] if chosen in o["schedules"]]
            assert any(o["counters"] == mine["counters"] for o in theirs)


@pytest.mark.parametrize("path", WORKLOADS[:6], ids=[p.stem for p in WORKLOADS[:6]])
def test_counter_off_by_one_is_a_mismatch(path: Path) -> None:
    spec = load_spec(path)
    pred = predict(spec).to_json()
    text = synthesize(spec, pred, pred["schedules"][0]["index"])
    events = [json.loads(line) for line in text.split("\n")]
    last = [e for e in events if e["event"] == "checkpoint"][-1]
    last["counters"]["thp_collapse_alloc"] += 1  # no schedule predicts this
    obs = parse_driver_output("\n".join(json.dumps(e) for e in events), spec)
    v = compare(pred, obs, spec)
    assert v.status == "mismatch"
    assert "counter thp_collapse_alloc changed by" in v.explanation


def test_child_regions_are_keyed_child() -> None:
    spec = load_spec(next(p for p in WORKLOADS if p.stem == "shared-after-fork"))
    pred = predict(spec).to_json()
    obs = parse_driver_output(synthesize(spec, pred, 0), spec)
    cp = obs.checkpoints[-1]
    assert set(cp.procs) == {"parent", "child"}
    v = compare(pred, obs, spec)
    assert v.status == "match", v.explanation
    mine = next(o for o in pred["checkpoints"][-1]["outcomes"] if 0 in o["schedules"])
    b = cp.procs["child"]["b"]
    assert b.anon_huge_kb == mine["regions"]["child"]["b"]["anon_huge_kb"]


def test_seeded_bug_is_explained_per_pmd_without_trace() -> None:
    """The recorded max-ptes-none-exceeded run, edited as a kernel that ignores
    max_ptes_none would have it: the PMD collapses in the first checkpoint."""
    d = Path(__file__).parents[2] / "tests" / "data" / "workloads" / "6.12.117-tcg"
    spec = load_spec(WORKLOAD_SPECS_DIR /
                     "max-ptes-none-exceeded.toml")
    events = [json.loads(ln) for ln in
              (d / spec.name / "driver.jsonl").read_text().splitlines()]
    cp = next(e for e in events if e["event"] == "checkpoint" and e["step"] == 2)
    base = next(e for e in events if e["event"] == "checkpoint" and e["step"] == -1)
    for name in ("pages_collapsed", "thp_collapse_alloc"):
        cp["counters"][name] = base["counters"][name] + 1
    cp["counters"]["thp_scan_exceed_none_pte"] = base["counters"]["thp_scan_exceed_none_pte"]
    region = cp["procs"][0]["regions"][0]
    region["huge_pmds"] = [0]
    region["vmas"][0][2] = region["vmas"][0][4] = 2048
    obs = parse_driver_output("\n".join(json.dumps(e) for e in events), spec)
    v = compare(predict(spec), obs, spec)
    assert v.status == "mismatch"
    assert v.details[0]["checkpoint"] == "exceeded"
    pmd = v.details[0]["pmds"][0]
    assert pmd["kernel"] == "PMD-mapped THP" and pmd["pmd"] == 0
    assert pmd["model"].startswith("EXCEED_NONE_PTE (none_or_zero=257")
    assert "PMD 0x10000000000 (parent a pmd 0): kernel PMD-mapped THP, model EXCEED_NONE_PTE" \
        in v.explanation
