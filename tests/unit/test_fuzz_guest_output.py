"""Property-based fuzz tests for every parser of guest output (issue 15 row 12).

The guest is untrusted input. Each parser is fed the recorded fixtures under
tests/data/ after random mutations (lines dropped, duplicated, cut, swapped;
numbers replaced by extremes; junk inserted) and must

* let no exception escape but its documented error type (counters:
  `CounterFormatError`; trace placement: `GuestOutputError`; console, selftest,
  driver JSON lines and tracefs text never raise), and
* stay within bounded memory (tracemalloc peak under a fixed budget plus a small
  multiple of the input size), however large the numbers the guest prints.

The selftest parser's result must also fit the result.json schema, so that a
strange context word or exit status is never an exit-128 schema failure.
"""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.data import WORKLOAD_SPECS_DIR
from orchestrator.errors import GuestOutputError
from orchestrator.machine.console import ConsoleEvent, classify_log
from orchestrator.report.resultfile import load_schema
from orchestrator.spec import WorkloadSpec, load_spec
from orchestrator.suites import counters
from orchestrator.suites.selftest.output import parse_selftest
from orchestrator.suites.workloads.observation import Observation, parse_driver_output
from orchestrator.suites.workloads.trace import locate_scans, parse_trace

DATA = Path(__file__).parent.parent / "data"
SERIAL = sorted((DATA / "serial").glob("*.log"))
SELFTEST = sorted((DATA / "selftest").glob("*.txt"))
WORKLOADS = sorted(p.parent for p in (DATA / "workloads").glob("*/*/driver.jsonl")
                   if (p.parent / "spec.toml").exists()
                   or (WORKLOAD_SPECS_DIR / f"{p.parent.name}.toml").exists())
TRACED = [d for d in WORKLOADS if (d / "trace.txt").exists()]
COUNTER_FIXTURES = sorted((DATA / "counters").glob("*.txt"))

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MEMORY_BUDGET = 64 << 20  # bytes, plus 64x the input size
EXTREMES = [0, -1, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63)]
NUMBER = re.compile(r"-?\d+")
T = TypeVar("T")


def _spec(run: Path) -> WorkloadSpec:
    """The run's spec.toml, else the shipped spec of the same name."""
    own = run / "spec.toml"
    return load_spec(own if own.exists() else WORKLOAD_SPECS_DIR / f"{run.name}.toml")


def bounded(fn: Callable[[], T], size: int) -> T:
    """Run `fn` and assert its peak traced allocation stays within the budget."""
    tracemalloc.start()
    try:
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BUDGET + 64 * size, f"peak {peak >> 20} MiB for {size} bytes"
    return out


@st.composite
def mutated(draw: st.DrawFn, sources: list[Path]) -> str:
    """A recorded fixture after a few random line-level and number-level mutations."""
    lines = draw(st.sampled_from(sources)).read_text(errors="replace").splitlines()
    for _ in range(draw(st.integers(0, 8))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "cut", "number", "junk", "swap", "tail",
                                   "drop-kind", "number"]))
        if op == "drop":
            del lines[i]
        elif op == "drop-kind":  # every line of one kind, e.g. all driver 'region' events
            kind = lines[i][:40]
            lines = [line for line in lines if line[:40] != kind] or [""]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "cut":
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
        elif op == "number":
            lines[i] = _replace_number(lines[i], draw)
        elif op == "junk":
            lines.insert(i, draw(st.text(max_size=80)))
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines = lines[:i]
    return "\n".join(lines) + draw(st.sampled_from(["\n", ""]))


def _replace_number(line: str, draw: st.DrawFn) -> str:
    spots = list(NUMBER.finditer(line))
    if not spots:
        return line
    m = spots[draw(st.integers(0, len(spots) - 1))]
    value = draw(st.sampled_from(EXTREMES) | st.integers(-(2**70), 2**70))
    return line[:m.start()] + str(value) + line[m.end():]


# ---------------------------------------------------------------- console

@FUZZ
@given(text=mutated(SERIAL))
def test_console_classifier_never_raises(text: str) -> None:
    events = bounded(lambda: classify_log(text, marker="THPVM-READY-x"), len(text))
    assert all(isinstance(e, ConsoleEvent) and e.lines for e in events)


@FUZZ
@given(text=st.text(max_size=2000))
def test_console_classifier_on_arbitrary_text(text: str) -> None:
    assert isinstance(bounded(lambda: classify_log(text), len(text)), list)


# ---------------------------------------------------------------- selftest

def _invocation_validator() -> Any:
    import jsonschema

    schema = load_schema()
    return jsonschema.Draft202012Validator({"$ref": "#/$defs/invocation",
                                            "$defs": schema["$defs"]})


INVOCATION = _invocation_validator()


def _check_selftest(text: str, exit_code: int | None, argv: list[str]) -> None:
    run = bounded(lambda: parse_selftest(text, exit_code, argv), len(text))
    entry = run.to_invocation_json() | {"duration": 0.0, "counter_deltas": {}}
    problems = [e.message for e in INVOCATION.iter_errors(entry)]
    assert not problems, problems


@FUZZ
@given(text=mutated(SELFTEST), exit_code=st.none() | st.sampled_from([0, 1, 3, 4, 5, 255, -11]),
       argv=st.sampled_from([["./khugepaged"], ["./khugepaged", "-s", "2"],
                             ["./khugepaged", "all:shmem"], ["./khugepaged", "-s", "99999999999"]]))
def test_selftest_parser_output_fits_the_schema(text: str, exit_code: int | None,
                                                argv: list[str]) -> None:
    _check_selftest(text, exit_code, argv)


@pytest.mark.parametrize("header", [
    "Run test: collapse_full (frobnicate:anon)",
    "*** Testing context: frobnicate ***",
    "Run test: collapse_full (:anon)",
])
def test_unknown_selftest_context_is_not_a_schema_failure(header: str) -> None:
    text = f"{header}\nCollapse fully populated PTE table... \x1b[32mOK\x1b[0m\n"
    _check_selftest(text, 0, ["./khugepaged"])


# ---------------------------------------------------------------- counters

COUNTER_PARSERS: list[Callable[[str], object]] = [
    counters.parse_vmstat, counters.parse_sysfs_dump, counters.parse_snapshot,
    counters.parse_series]


@FUZZ
@given(data=st.data(), parser=st.sampled_from(COUNTER_PARSERS))
def test_counter_parsers_raise_only_counter_format_error(data: st.DataObject,
                                                         parser: Callable[[str], object]) -> None:
    text = data.draw(mutated(COUNTER_FIXTURES) | st.text(max_size=500))
    try:
        bounded(lambda: parser(text), len(text))
    except counters.CounterFormatError as e:
        assert e.message


# ---------------------------------------------------------------- driver JSON lines + trace

@FUZZ
@given(data=st.data())
def test_driver_output_parser_never_raises(data: st.DataObject) -> None:
    run = data.draw(st.sampled_from(WORKLOADS))
    text = data.draw(mutated([run / "driver.jsonl"]))
    spec = _spec(run)
    obs = bounded(lambda: parse_driver_output(text, spec), len(text))
    assert isinstance(obs, Observation)


@FUZZ
@given(data=st.data())
def test_trace_parser_and_placement_raise_only_guest_output_error(data: st.DataObject) -> None:
    run = data.draw(st.sampled_from(TRACED))
    driver = data.draw(mutated([run / "driver.jsonl"]))
    text = data.draw(mutated([run / "trace.txt"]))
    obs = parse_driver_output(driver, _spec(run))
    trace = bounded(lambda: parse_trace(text), len(text))
    try:
        scans = bounded(lambda: locate_scans(trace, obs), len(text) + len(driver))
    except GuestOutputError as e:
        assert "driver output" in e.message
        return
    assert len(scans) <= len(trace.events)


# ---------------------------------------------------------------- the cases the fuzzer found

def _traced_run(edit: Callable[[str], str]) -> tuple[Observation, Any]:
    run = DATA / "workloads" / "6.12.117-tcg-debug" / "shared-after-fork"
    lines = [edit(line) for line in (run / "driver.jsonl").read_text().splitlines()]
    obs = parse_driver_output("\n".join(lines), _spec(run))
    return obs, parse_trace((run / "trace.txt").read_text())


def test_missing_region_line_leaves_scans_unplaced_not_a_key_error() -> None:
    obs, trace = _traced_run(lambda line: "" if '"event":"region"' in line else line)
    assert not obs.regions
    scans = locate_scans(trace, obs)
    assert scans and all(s.region is None for s in scans if s.located_by != "beacon")


def test_a_vma_over_the_whole_address_space_is_a_guest_output_error() -> None:
    def edit(line: str) -> str:
        return re.sub(r'"vmas":\[\[(\d+),(\d+),', f'"vmas":[[0,{2**64},', line)

    obs, trace = _traced_run(edit)
    with pytest.raises(GuestOutputError, match="a VMA"):
        bounded(lambda: locate_scans(trace, obs), 0)


def test_huge_madvise_call_and_pfn_run_are_guest_output_errors() -> None:
    run = DATA / "workloads" / "6.12.117-tcg-debug" / "madv-collapse-ignores-limits"
    text = (run / "driver.jsonl").read_text()
    trace = parse_trace((run / "trace.txt").read_text())
    calls = re.sub(r'"op":"madvise","region":0,"calls":\[\[(\d+),(\d+),',
                   f'"op":"madvise","region":0,"calls":[[0,{2**62},', text)
    assert calls != text
    with pytest.raises(GuestOutputError, match="madvise"):
        bounded(lambda: locate_scans(trace, parse_driver_output(calls, _spec(run))), 0)
    runs = re.sub(r'"runs":\[\[(\d+),(\d+),(\d+)\]', r'"runs":[[\1,\2,1099511627776]', text)
    if runs != text:
        with pytest.raises(GuestOutputError, match="pfn maps"):
            bounded(lambda: locate_scans(trace, parse_driver_output(runs, _spec(run))), 0)
