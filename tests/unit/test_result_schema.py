"""result.schema.json: the fixtures follow it, violations are named clearly,
loading a run directory fails with a UserError naming the path."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from reports_fixtures import NAMES, RESULTS, load

from orchestrator.errors import UserError
from orchestrator.machine.console import ConsoleEvent
from orchestrator.report import resultdata as rd
from orchestrator.report.resultfile import (
    SCHEMA_VERSION,
    ResultSchemaError,
    load_result,
    load_schema,
    schema_problems,
    validate_result,
)
from orchestrator.suites.counters import Snapshot, delta
from orchestrator.suites.selftest.output import parse_selftest


def test_schema_is_a_valid_2020_12_schema_with_descriptions() -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    # every documented field says what it is
    for name, prop in schema["$defs"]["metadata"]["properties"].items():
        assert prop.get("description"), f"metadata.{name} has no description"
    for name in ("verdict", "exit_code", "reason", "run_id"):
        assert schema["properties"][name]["description"]


@pytest.mark.parametrize("name", NAMES)
def test_fixtures_validate(name: str) -> None:
    result = load(name)
    assert schema_problems(result) == []
    validate_result(result)


def test_fixtures_cover_the_shapes_reports_must_handle() -> None:
    assert load("pass")["verdict"] == "pass"
    assert any(r.case["status"] == "fail" for r in rd.iter_cases(load("case-fail")))
    assert any(r.case["status"] == "skip" for r in rd.iter_cases(load("pass")))
    assert rd.crash_events(load("crash"))
    assert "selftest" not in load("could-not-test")
    assert any(rd.is_time_series(w) for w in load("pass")["workloads"])


def test_missing_required_key_is_named() -> None:
    result = load("pass")
    del result["metadata"]["accel"]
    with pytest.raises(ResultSchemaError) as exc:
        validate_result(result)
    assert "metadata: 'accel' is a required property" in exc.value.problems


def test_bad_enum_is_reported_at_its_path() -> None:
    result = load("case-fail")
    result["selftest"]["invocations"][0]["cases"][3]["status"] = "passed"
    problems = schema_problems(result)
    assert len(problems) == 1
    assert problems[0].startswith("selftest/invocations/0/cases/3/status:")


def test_verdict_and_exit_code_must_agree() -> None:
    result = load("pass")
    result["exit_code"] = 1
    assert any(p.startswith("exit_code:") for p in schema_problems(result))
    result = load("could-not-test")
    result["exit_code"] = 2
    assert schema_problems(result)


def test_extra_counters_and_metadata_are_allowed_but_not_top_level_typos() -> None:
    result = load("pass")
    result["metadata"]["boot_seconds"] = 3.1
    result["counters"]["delta"]["thp_some_future_counter"] = 4
    result["workloads"][0]["checkpoints"][0]["observed"]["regions"]["Q"] = {"Swap": 0}
    assert schema_problems(result) == []
    result["verdcit"] = "pass"
    assert any("verdcit" in p for p in schema_problems(result))


def test_counter_values_must_be_integers() -> None:
    result = load("pass")
    result["counters"]["delta"]["pages_collapsed"] = "35"
    assert schema_problems(result) == ["counters/delta/pages_collapsed: '35' is not of type "
                                       "'integer'"]


def test_prediction_value_is_integer_or_range() -> None:
    result = load("pass")
    pred = result["workloads"][0]["checkpoints"][0]["predicted"][0]["counters"]
    pred["full_scans"] = {"min": 2}
    problems = schema_problems(result)
    assert problems and "'max' is a required property" in problems[0]


def test_timestamps_accept_both_offset_forms() -> None:
    result = load("pass")
    for stamp in ("2025-06-02T09:14:03+0000", "2025-06-02T09:14:03+00:00",
                  "2025-06-02T09:14:03Z", "2025-06-02T09:14:03.123456+02:00"):
        result["metadata"]["started"] = stamp
        assert schema_problems(result) == [], stamp
    result["metadata"]["started"] = "June 2nd"
    assert schema_problems(result)


def test_other_schema_versions_are_refused() -> None:
    result = load("pass")
    result["schema_version"] = 2
    with pytest.raises(ResultSchemaError, match="schema_version 2 is not supported"):
        validate_result(result)


def test_many_problems_are_summarised() -> None:
    result = load("pass")
    for case in result["selftest"]["invocations"][0]["cases"]:
        case["status"] = "bogus"
    with pytest.raises(ResultSchemaError) as exc:
        validate_result(result)
    assert exc.value.problems[-1].startswith("... and ")
    assert len(exc.value.problems) == 11


@pytest.mark.parametrize("path", sorted((RESULTS.parent / "selftest").glob("*.txt")),
                         ids=lambda p: p.name)
def test_selftest_parser_invocations_fit_the_schema(path: Path) -> None:
    """The contract with selftest_output: its to_invocation_json() plus the
    pipeline's duration/counter_deltas/log is a valid invocation."""
    run = parse_selftest(path.read_text(errors="replace"), 0, ["./khugepaged", "all:anon"])
    invocation = dict(run.to_invocation_json(), duration=1.5, log="selftest.log",
                      counter_deltas={"thp_collapse_alloc": 3})
    result = load("pass")
    result["selftest"] = {"invocations": [invocation],
                          "summary": {"passed": 0, "failed": 0, "skipped": 0}}
    assert schema_problems(result) == []


def test_load_result_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=str(tmp_path / "result.json")):
        load_result(tmp_path)
    with pytest.raises(UserError, match="not a run directory"):
        load_result(tmp_path / "nope")


def test_load_result_rejects_bad_json_and_invalid_results(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        load_result(tmp_path)
    result = load("pass")
    del result["verdict"]
    (tmp_path / "result.json").write_text(json.dumps(result))
    with pytest.raises(UserError) as exc:
        load_result(tmp_path)
    assert "'verdict' is a required property" in exc.value.message
    assert str(tmp_path) in exc.value.message


def test_load_result_returns_the_result(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text(json.dumps(load("crash")))
    assert load_result(tmp_path) == load("crash")


def test_counter_snapshots_and_console_events_fit_the_schema() -> None:
    """The contract with counters/console: Snapshot.counters() (not to_json(),
    which is counters.json's nested form) and ConsoleEvent.to_json()."""
    before = Snapshot(vmstat={"thp_collapse_alloc": 1, "nr_anon_transparent_hugepages": 2},
                      khugepaged={"pages_collapsed": 0, "full_scans": 1},
                      thp_settings={"enabled": "always"}, taken_at=1.25)
    after = Snapshot(vmstat={"thp_collapse_alloc": 5, "nr_anon_transparent_hugepages": 0},
                     khugepaged={"pages_collapsed": 3, "full_scans": 9},
                     thp_settings={"enabled": "always"}, taken_at=9.5)
    result = load("pass")
    result["counters"] = {"before": before.counters(), "after": after.counters(),
                          "delta": delta(before, after)}
    result["console"]["events"] = [ConsoleEvent("ready", 3.2, ["ready"]).to_json(),
                                   ConsoleEvent("warning", 9.1, ["WARNING: CPU: 0"]).to_json()]
    assert schema_problems(result) == []
    assert result["counters"]["delta"]["nr_anon_transparent_hugepages"] == -2
    result["counters"]["before"] = before.to_json()
    assert schema_problems(result)


def test_per_size_counters_follow_the_schema() -> None:
    from orchestrator.suites.counters import mthp_summary

    result = load("pass")
    result["counters"]["delta"]["hugepages-64kB/stats/collapse_alloc"] = 3
    result["counters"]["mthp"] = mthp_summary(result["counters"]["delta"])
    assert result["counters"]["mthp"]["hugepages-64kB"]["order"] == 4
    assert schema_problems(result) == []
    result["counters"]["mthp"]["hugepages-64kB"]["order"] = "4"
    assert schema_problems(result) == [
        "counters/mthp/hugepages-64kB/order: '4' is not of type 'integer'"]
