"""diff_runs: what changed between two runs, as plain tuples."""

from __future__ import annotations

import json

from reports_fixtures import load

from orchestrator.judge.rundiff import CaseChange, CounterChange, WorkloadChange, diff_runs


def test_identical_runs_have_no_changes() -> None:
    d = diff_runs(load("pass"), load("pass"))
    assert (d.cases, d.workloads, d.counters, d.console, d.metadata) == ([], [], [], [], [])
    assert d.kind() == "no-change"
    assert "selftest cases changed: none" in d.format_diff()


def test_pass_to_case_fail_is_a_regression() -> None:
    d = diff_runs(load("pass"), load("case-fail"))
    assert d.cases == [CaseChange("collapse_max_ptes_shared(khugepaged:anon)", "pass", "fail")]
    assert d.workloads == [WorkloadChange("s3_too_many_none", "match", "mismatch")]
    assert ("selftest/thp_collapse_alloc", 35, 36) in d.counters
    assert ("warning", 0, 1) in d.console
    assert ("revision", "3f1c2a9b7e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b",
            "8e2d1c0b9a8f7e6d5c4b3a29181706f5e4d3c2b1") in d.metadata
    assert d.kind() == "regression"
    assert len(d.regressions()) == 2 and d.improvements() == []
    # plain tuples, for callers that do not know the classes
    case_id, a, b = d.cases[0]
    assert (a, b) == ("pass", "fail")


def test_reverse_direction_is_an_improvement() -> None:
    d = diff_runs(load("case-fail"), load("pass"))
    assert d.kind() == "improvement"
    assert d.case_kind(d.cases[0]) == "improvement"
    assert d.workload_kind(d.workloads[0]) == "improvement"


def test_crash_lists_cases_that_did_not_run_as_absent() -> None:
    d = diff_runs(load("pass"), load("crash"))
    crashed = CaseChange("collapse_compound_extreme(khugepaged:anon)", "pass", "crash")
    assert crashed in d.cases
    assert CaseChange("collapse_fork(madvise:anon)", "pass", None) in d.cases
    assert d.regressions()[0] == crashed
    assert ("oops", 0, 1) in d.console and ("panic", 0, 1) in d.console
    # counters measured in only one run are not listed
    assert d.counters == []
    text = d.format_diff()
    assert "31 case(s) ran only in A" in text
    assert "collapse_compound_extreme(khugepaged:anon)  pass -> crash  REGRESSION" in text


def test_untested_runs_cannot_be_compared() -> None:
    assert diff_runs(load("pass"), load("could-not-test")).kind() == "could-not-compare"
    assert diff_runs(load("could-not-test"), load("pass")).kind() == "could-not-compare"


def test_verdict_change_alone_decides() -> None:
    a, b = load("pass"), load("pass")
    b["verdict"], b["exit_code"] = "fail", 1
    assert diff_runs(a, b).kind() == "regression"
    assert diff_runs(b, a).kind() == "improvement"


def test_counter_tolerances() -> None:
    a, b = load("pass"), load("pass")
    b["counters"]["delta"]["full_scans"] = 100  # 97 -> 100
    b["counters"]["delta"]["pages_collapsed"] = 45  # 35 -> 45
    assert {c.counter for c in diff_runs(a, b).counters} == {"run/full_scans",
                                                             "run/pages_collapsed"}
    assert [c.counter for c in diff_runs(a, b, min_change=5).counters] == ["run/pages_collapsed"]
    assert [c.counter for c in diff_runs(a, b, rel_tolerance=0.1).counters] == [
        "run/pages_collapsed"]
    assert diff_runs(a, b).kind() == "no-change"  # counters alone never decide


def test_workload_counters_are_scoped_by_workload() -> None:
    a, b = load("pass"), load("pass")
    b["workloads"][2]["checkpoints"][-1]["observed"]["counters"]["pages_collapsed"] = 7
    assert diff_runs(a, b).counters == [
        CounterChange("workload/s9_budget_wakeups/pages_collapsed", 8, 7)]


def test_to_json_round_trips() -> None:
    d = diff_runs(load("pass"), load("case-fail"))
    data = json.loads(d.to_json())
    assert data["kind"] == "regression"
    assert data["cases"] == [{"case_id": "collapse_max_ptes_shared(khugepaged:anon)",
                              "status_a": "pass", "status_b": "fail", "kind": "regression"}]
    assert data["workloads"][0]["verdict_b"] == "mismatch"
    assert {"counter": "selftest/thp_collapse_alloc", "delta_a": 35, "delta_b": 36} in \
        data["counters"]
    assert data["console"] == [{"kind": "warning", "count_a": 0, "count_b": 1}]
