"""Known races in the selftest itself (selftest matrix `known_race`): a failure that is
exactly such a race runs the invocation again; anything else is judged as it is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orchestrator.data import RESULT_SCHEMA as SCHEMA_PATH
from orchestrator.jobs import vmtest
from orchestrator.machine.console import ConsoleEvent
from orchestrator.machine.health import Diagnosis
from orchestrator.suites.selftest import output
from orchestrator.suites.selftest import runner as selftest

DATA = Path(__file__).resolve().parents[1] / "data"
RACE_LOG = (DATA / "findings/7.2.13-tcg-anon-max-ptes-swap-race.txt").read_text()
PASS_LOG = (DATA / "selftest/7.2.13-tcg-anon.txt").read_text()
ARGV = ["./khugepaged"]


def anon_with_races() -> selftest.Invocation:
    """The matrix's `anon` invocation on a tree whose selftest has the race (7.2.13)."""
    matrix = selftest.load_matrix()
    iface = selftest.Interface("mm", frozenset({"ctx-mem", "order", "scan-leaves-hugepage"}))
    [inv] = selftest.select(matrix, iface, ["anon"])
    return inv


def test_the_race_is_scoped_to_selftests_that_leave_madv_hugepage_set():
    matrix = selftest.load_matrix()
    old = selftest.Interface("mm", frozenset({"ctx-mem", "order"}))  # 6.12.117
    assert all([r.id for r in i.races] == ["pageout-misses-other-cpu-batch"]
               for i in selftest.select(matrix, old, None))
    assert [r.id for r in anon_with_races().races] == ["collapse-before-sanity-check",
                                                        "pageout-misses-other-cpu-batch"]


def test_a_swap_out_set_up_step_that_fails_is_the_pageout_race():
    """6.12.117 at load ~15: "Swapout 65 of 512 pages... Fail" (madvise context)."""
    text = (DATA / "findings/6.12.117-tcg-madvise-swapout-race.txt").read_text()
    parsed = output.parse_selftest(text, 1, ARGV)
    race = selftest.known_race(anon_with_races(), parsed, text)
    assert race is not None and race.id == "pageout-misses-other-cpu-batch"
    # the same case failing its collapse check is not that race
    other = text.replace("Swapout 65 of 512 pages", "Collapse with max_ptes_swap pages")
    assert selftest.known_race(anon_with_races(), output.parse_selftest(other, 1, ARGV),
                               other) is None


def test_wait_for_scan_leaving_madv_hugepage_set_is_detected(tmp_path):
    src = tmp_path / "tools/testing/selftests/mm/khugepaged.c"
    src.parent.mkdir(parents=True)
    body = ("static bool wait_for_scan(const char *msg, char *p)\n{\n"
            "\tmadvise(p, 1, MADV_HUGEPAGE);\n{tail}}\n\nint main(void)\n{\n"
            "\tmadvise(p, 1, MADV_NOHUGEPAGE);\n}\n")
    src.write_text(body.replace("{tail}", ""))
    assert "scan-leaves-hugepage" in selftest.detect_interface(tmp_path).features
    src.write_text(body.replace("{tail}", "\tmadvise(p, 1, MADV_NOHUGEPAGE);\n"))
    assert "scan-leaves-hugepage" not in selftest.detect_interface(tmp_path).features


def test_recorded_race_matches_and_other_failures_do_not():
    inv = anon_with_races()
    parsed = output.parse_selftest(RACE_LOG, 1, ARGV)
    assert selftest.known_race(inv, parsed, RACE_LOG).id == "collapse-before-sanity-check"
    other = RACE_LOG.replace("Unexpected huge page", "Something else")
    assert selftest.known_race(inv, output.parse_selftest(other, 1, ARGV), other) is None
    assert selftest.known_race(selftest.Invocation("anon", ()), parsed, RACE_LOG) is None


@dataclass
class AliveGuest:
    shell: object = None

    def diagnose(self) -> Diagnosis:
        return Diagnosis("alive", "")

    def kernel_failure(self) -> ConsoleEvent | None:
        return None


def run_with_outputs(monkeypatch, tmp_path, logs: list[tuple[int, str]]) -> vmtest.Run:
    inv = anon_with_races()
    outcomes = iter(selftest.InvocationOutcome(inv, ARGV, code, text, 1.0) for code, text in logs)
    monkeypatch.setattr(selftest, "prepare_guest", lambda shell, binary, invocations: None)
    monkeypatch.setattr(vmtest, "_invoke", lambda g, i, before=None: next(outcomes))
    run = vmtest.Run(tmp_path, None)
    vmtest._run_selftest(AliveGuest(), tmp_path / "bin", [inv], run, None)
    return run


def schema_ok(entry: dict) -> None:
    import jsonschema
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(entry, {"$defs": schema["$defs"], "$ref": "#/$defs/invocation"})


def test_a_race_then_a_pass_is_a_pass_with_the_attempt_recorded(monkeypatch, tmp_path):
    run = run_with_outputs(monkeypatch, tmp_path, [(1, RACE_LOG), (0, PASS_LOG)])
    [entry] = run.selftest["invocations"]
    assert entry["status"] == "pass" and not run.failures
    [retry] = entry["retries"]
    assert (retry["attempt"], retry["case"], retry["context"]) == \
        (1, "collapse_max_ptes_swap", "khugepaged")
    assert (tmp_path / retry["log"]).read_text() == RACE_LOG
    assert (tmp_path / entry["log"]).read_text() == PASS_LOG
    schema_ok(entry)


def test_a_race_on_every_attempt_still_fails(monkeypatch, tmp_path):
    run = run_with_outputs(monkeypatch, tmp_path, [(1, RACE_LOG)] * 3)
    [entry] = run.selftest["invocations"]
    assert entry["status"] == "fail" and len(entry["retries"]) == 2
    assert any("on all 3 attempts" in n for n in entry["notes"])
    assert run.failures == ["selftest ./khugepaged: fail"]
    schema_ok(entry)


def test_a_failure_that_is_not_the_race_is_not_retried(monkeypatch, tmp_path):
    other = RACE_LOG.replace("Unexpected huge page", "Something else")
    run = run_with_outputs(monkeypatch, tmp_path, [(1, other), (0, PASS_LOG)])
    [entry] = run.selftest["invocations"]
    assert entry["status"] == "fail" and "retries" not in entry
