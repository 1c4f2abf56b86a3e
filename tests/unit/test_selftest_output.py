"""Tests of orchestrator.suites.selftest.output on recorded, synthetic and generated outputs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.data import RESULT_SCHEMA
from orchestrator.suites.selftest import output as so
from orchestrator.suites.selftest.output import parse_selftest, summarize

DATA = Path(__file__).resolve().parents[1] / "data" / "selftest"
SCHEMA = RESULT_SCHEMA
OK, FAIL, SKIP = "\x1b[32mOK\x1b[0m", "\x1b[31mFail\x1b[0m", "\x1b[33mSkip\x1b[0m"


def raw(name: str) -> str:
    """A fixture exactly as recorded (no newline translation: `\\r` matters)."""
    return (DATA / name).read_bytes().decode()


def steps_of(run: so.SelftestRun, name: str, context: str | None = None) -> list[tuple]:
    case = next(c for c in run.cases if c.name == name and (context is None or
                                                            c.context == context))
    return [(s.message, s.outcome, s.detail) for s in case.steps]


def statuses(run: so.SelftestRun) -> dict[str, str]:
    return {f"{c.name}({c.context}:{c.mem_type})": c.status for c in run.cases}


# ----------------------------------------------------------- recorded 6.12.117


def test_recorded_anon_default_all_pass() -> None:
    run = parse_selftest(raw("6.12.117-tcg-anon.txt"), 0, ["./khugepaged"])
    assert (run.form, run.status) == ("legacy", "pass")
    assert len(run.cases) == 26 and all(c.status == "pass" for c in run.cases)
    first = run.cases[0]
    assert (first.name, first.context, first.mem_type) == ("alloc_at_fault", None, None)
    assert [s.message for s in first.steps] == ["Allocate huge page on fault",
                                                "Split huge PMD on MADV_DONTNEED"]
    assert [(s.message, s.outcome) for s in run.preamble_steps] == [
        ("Save THP and khugepaged settings", "ok")]
    assert [s.message for s in run.epilogue_steps] == ["Restore THP and khugepaged settings"]
    assert steps_of(run, "collapse_compound_extreme", "khugepaged")[0] == (
        "Construct PTE page table full of different PTE-mapped compound pages 512/512", "ok", "")
    assert steps_of(run, "madvise_collapse_existing_thps") == [
        ("Collapse fully populated PTE table", "ok", ""),
        ("Re-collapse PMD-mapped hugepage", "ok", "")]
    assert run.unparsed == [] and run.notes == []
    assert {c.order for c in run.cases} == {0}


def test_recorded_61_anon_all_pass() -> None:
    """6.1.176 (selftests/vm/, no context:mem argument): 26 cases, every one passed."""
    run = parse_selftest(raw("6.1.176-tcg-anon.txt"), 0, ["./khugepaged"])
    assert (run.form, run.status) == ("legacy", "pass")
    assert len(run.cases) == 26 and all(c.status == "pass" for c in run.cases)
    assert {(c.context, c.mem_type) for c in run.cases if c.context} == {
        ("khugepaged", "anon"), ("madvise", "anon")}
    assert run.unparsed == []


def test_recorded_anon_s2_carries_order() -> None:
    run = parse_selftest(raw("6.12.117-tcg-anon-s2.txt"), 0, ["./khugepaged", "-s", "2"])
    assert run.status == "pass"
    assert {c.order for c in run.cases} == {2}
    assert run.cases[1].to_json()["order"] == 2
    default = parse_selftest(raw("6.12.117-tcg-anon.txt"), 0, ["./khugepaged"])
    assert default.cases[1].to_json()["order"] is None  # result.json: null = default


def test_recorded_shmem_failures_match_exit_status() -> None:
    run = parse_selftest(raw("6.12.117-tcg-all-shmem-exit3.txt"), 3,
                         ["./khugepaged", "all:shmem"])
    assert run.status == "fail"
    failed = [k for k, v in statuses(run).items() if v == "fail"]
    assert failed == ["collapse_full(khugepaged:shmem)",
                      "collapse_single_pte_entry(khugepaged:shmem)",
                      "collapse_full_of_compound(khugepaged:shmem)"]
    assert steps_of(run, "collapse_full", "khugepaged") == [
        ("Collapse multiple fully populated PTE table", "fail", "Fail")]
    assert steps_of(run, "madvise_retracted_page_tables")[0][:2] == (
        "Collapse and leave PMD cleared", "ok")
    assert summarize([run]) == {"passed": 6, "failed": 3, "skipped": 0}
    assert run.notes == []  # 3 failing steps agree with exit status 3


def test_recorded_file_khugepaged_exit5() -> None:
    argv = ["./khugepaged", "khugepaged:file", "/root/thpvm-file-thp"]
    run = parse_selftest(raw("6.12.117-tcg-khugepaged-file-exit5.txt"), 5, argv)
    assert run.status == "fail"
    assert summarize([run]) == {"passed": 1, "failed": 5, "skipped": 0}
    assert steps_of(run, "collapse_full")[:2] == [
        ("Creating /root/thpvm-file-thp/collapse_test_file for collapse", "ok", ""),
        ("Opening /root/thpvm-file-thp/collapse_test_file read only for collapse", "ok", "")]


def test_recorded_madvise_file_pass() -> None:
    argv = ["./khugepaged", "madvise:file", "/root/thpvm-file-thp"]
    run = parse_selftest(raw("6.12.117-tcg-madvise-file.txt"), 0, argv)
    assert run.status == "pass" and len(run.cases) == 8
    assert {c.mem_type for c in run.cases[1:]} == {"file"}


def test_newline_translated_progress_counter_still_passes() -> None:
    """read_text() turns the \\r of collapse_compound_extreme into \\n."""
    text = (DATA / "6.12.117-tcg-anon.txt").read_text()
    assert "\r" not in text
    run = parse_selftest(text, 0, ["./khugepaged"])
    assert run.status == "pass"
    assert len(steps_of(run, "collapse_compound_extreme", "madvise")) == 2


# ------------------------------------------------------------------ synthetic


def test_synthetic_fail_timeout_then_skip_never_hides_failure() -> None:
    run = parse_selftest(raw("synthetic-6.12-s2-fail.txt"), 2, ["./khugepaged", "-s", "2"])
    assert run.status == "fail"
    shared = steps_of(run, "collapse_max_ptes_shared", "khugepaged")
    assert shared[-2:] == [("Collapse with max_ptes_shared PTEs shared", "timeout", "Timeout"),
                           ("Check if parent still has huge page", "skip", "Skip")]
    assert statuses(run)["collapse_max_ptes_shared(khugepaged:anon)"] == "fail"
    assert statuses(run)["collapse_max_ptes_none(khugepaged:anon)"] == "fail"
    assert "2 case(s) failed" in run.explanation


def test_synthetic_runner_picks_section_and_its_exit_status() -> None:
    text = raw("synthetic-6.12-runner.txt")
    first = parse_selftest(text, 1, ["./khugepaged"])
    second = parse_selftest(text, 1, ["./khugepaged", "-s", "2"])
    assert (first.status, first.exit_code) == ("pass", 0)
    assert (second.status, second.exit_code) == ("fail", 2)
    assert {c.order for c in second.cases} == {2}
    plain = parse_selftest(raw("synthetic-6.12-s2-fail.txt"), 2, ["./khugepaged", "-s", "2"])
    assert [c.to_json() for c in second.cases] == [c.to_json() for c in plain.cases]


def test_synthetic_crash_marks_running_case() -> None:
    run = parse_selftest(raw("synthetic-6.12-crash.txt"), None, ["./khugepaged"])
    assert run.status == "crash"
    crashed = [c for c in run.cases if c.status == "crash"]
    assert [(c.name, c.context) for c in crashed] == [("collapse_compound_extreme", "khugepaged")]
    assert crashed[0].steps[-1] == so.StepOutcome(
        "Collapse PTE table full of different compound pages", "incomplete", so.MID_TEST)
    assert summarize([run])["failed"] == 1  # a crashed case counts as failed
    assert "collapse_compound_extreme" in run.explanation


def test_synthetic_tmpfs_skip_beats_earlier_ok_setup_steps() -> None:
    argv = ["./khugepaged", "khugepaged:file", "/mnt/thp-tmpfs"]
    run = parse_selftest(raw("synthetic-6.12-file-tmpfs.txt"), 0, argv)
    assert run.status == "pass"
    assert statuses(run)["collapse_max_ptes_none(khugepaged:file)"] == "skip"
    assert steps_of(run, "collapse_max_ptes_none")[-1] == ("tmpfs", "skip", "Skip")
    assert summarize([run]) == {"passed": 4, "failed": 0, "skipped": 2}


def test_synthetic_signal_restore_glued_to_running_step() -> None:
    run = parse_selftest(raw("synthetic-6.12-signal.txt"), 1, ["./khugepaged", "khugepaged:anon"])
    assert run.status == "fail"
    assert steps_of(run, "collapse_fork")[-1] == (
        "Collapse PTE table with single page shared with parent process", "incomplete",
        so.NO_VERDICT)
    assert [s.outcome for s in run.epilogue_steps] == ["ok"]


def test_synthetic_fatal_error_text_becomes_step_detail() -> None:
    run = parse_selftest(raw("synthetic-6.12-fatal.txt"), 1, ["./khugepaged", "khugepaged:anon"])
    assert run.status == "fail"
    assert steps_of(run, "collapse_swapin_single_pte") == [
        ("Swapout one page", "incomplete",
         "madvise(MADV_PAGEOUT): Invalid argument\n" + so.NO_VERDICT)]
    assert run.unparsed == []


def test_synthetic_thp_unavailable_is_skip() -> None:
    run = parse_selftest(raw("synthetic-6.12-thp-unavailable.txt"), 4, ["./khugepaged"])
    assert (run.status, run.cases) == ("skip", [])
    assert run.explanation == "Transparent Hugepages not available"


def test_synthetic_v61_context_blocks() -> None:
    run = parse_selftest(raw("synthetic-6.1-default.txt"), 1, ["./khugepaged"])
    assert run.form == "context" and run.status == "fail"
    assert [(c.name, c.context, c.mem_type, c.status) for c in run.cases] == [
        ("alloc_at_fault", None, None, "pass"), ("context", "khugepaged", "anon", "pass"),
        ("context", "madvise", "anon", "fail")]
    madvise = steps_of(run, "context", "madvise")
    assert ("Collapse PTE table with single PTE entry present", "fail",
            "Fail: Bad return value") in madvise
    assert madvise[-1] == ("Re-collapse PMD-mapped hugepage", "ok", "")  # no dots in 6.1


def test_synthetic_ktap_step_failure_beats_ok_result_line() -> None:
    run = parse_selftest(raw("synthetic-ktap-2026.txt"), 0, ["./khugepaged", "khugepaged:anon"])
    assert run.form == "ktap" and run.status == "fail"
    assert [(c.name, c.number, c.result, c.status) for c in run.cases] == [
        ("allocate on fault and split", 1, "pass", "pass"),
        ("collapse_full", 2, "pass", "pass"), ("collapse_empty", 3, "pass", "pass"),
        ("collapse_max_ptes_none", 4, "pass", "fail"),
        ("collapse_compound_extreme", 5, "skip", "skip")]
    assert steps_of(run, "collapse_compound_extreme") == [
        ("Construct PTE page table full of different PTE-mapped compound pages", "skip", "Skip")]
    assert run.plan == 5 and run.totals == {"pass": 4, "fail": 0, "xfail": 0, "xpass": 0,
                                            "skip": 1, "error": 0}
    assert [s.message for s in run.preamble_steps] == ["Save THP and khugepaged settings"]


# ------------------------------------------------------------- grammar rules


@pytest.mark.parametrize("text,colour,expected", [
    ("OK", "32", ("ok", "")), ("Fail", "31", ("fail", "Fail")),
    ("Fail: check_huge()", "31", ("fail", "Fail: check_huge()")),
    ("Timeout", "31", ("timeout", "Timeout")), ("Skip", "33", ("skip", "Skip")),
    ("Passed", "32", ("ok", "unrecognised verdict 'Passed'")),
    ("Weird", "35", ("fail", "unrecognised verdict 'Weird'")),
])
def test_parse_verdict(text: str, colour: str, expected: tuple[str, str]) -> None:
    assert so.parse_verdict(text, colour) == expected


def test_parse_segment_runs_steps_together() -> None:
    tokens = so.parse_segment("Allocate small page...Share small page over fork()..... " + OK)
    assert tokens == [so._Msg("Allocate small page"), so._Msg("Share small page over fork()"),
                      so._Verdict("ok", "")]


def test_parse_segment_uncoloured_and_detail() -> None:
    assert so.parse_segment("Collapse and leave PMD cleared.... Fail: Bad return value") == [
        so._Msg("Collapse and leave PMD cleared"), so._Verdict("fail", "Fail: Bad return value")]
    assert so.parse_segment("Failed to allocate huge page") == [
        so._Text("Failed to allocate huge page", inline=False)]


def test_parse_body_splits_glued_settings_step() -> None:
    assert so.parse_body("Fail: No settings setRestore THP and khugepaged settings...", True) \
        == [so._Text("Fail: No settings set", inline=False),
            so._Msg("Restore THP and khugepaged settings")]


def test_parse_header_forms() -> None:
    assert so.parse_header("Run test: collapse_full (madvise:shmem)") == (
        0, so._Header("collapse_full", "madvise", "shmem"))
    assert so.parse_header("*** Testing context: khugepaged ***") == (
        0, so._Header("context", "khugepaged", "anon"))
    assert so.parse_header("Creating /x for collapse...") is None


@pytest.mark.parametrize("line,expected", [
    ("ok 2 collapse_full", so._Result("pass", 2, "collapse_full", "")),
    ("not ok 3 collapse_empty", so._Result("fail", 3, "collapse_empty", "")),
    ("ok 5 # SKIP collapse_compound_extreme",
     so._Result("skip", 5, "collapse_compound_extreme", "")),
    ("ok 5 thing # SKIP no swap", so._Result("skip", 5, "thing", "no swap")),
    ("not ok 2 khugepaged -s 2 # exit=3", so._Result("fail", 2, "khugepaged -s 2", "")),
    ("ok 1 - named", so._Result("pass", 1, "named", "")),
    ("ok", None), ("okay 1 x", None),
])
def test_parse_ktap_result(line: str, expected: so._Result | None) -> None:
    assert so.parse_ktap_result(line) == expected


@pytest.mark.parametrize("argv,order", [
    (["./khugepaged"], 0), (["./khugepaged", "-s", "2"], 2),
    (["./khugepaged", "-s4", "all:anon"], 4),
    (["./khugepaged", "-s", "x"], 0), (["./khugepaged", "-s", "3junk"], 3), (["-s"], 0),
    (["./khugepaged", "--", "-s", "2"], 0),
])
def test_parse_order(argv: list[str], order: int) -> None:
    assert so.parse_order(argv) == order


def test_split_runner_output_plain_mode_and_glued_verdict() -> None:
    text = ("------------------\nrunning ./khugepaged\n------------------\n"
            "Save THP and khugepaged settings... OK\n[PASS]\n"
            "# ------------------------\n# running ./khugepaged -s 2\n# ------------------------\n"
            "# Reading PMD pagesize failed# [FAIL]\nnot ok 2 khugepaged -s 2 # exit=1\n")
    sections = so.split_runner_output(text)
    assert [(s.title, s.argv, s.exit_code) for s in sections] == [
        ("./khugepaged", ["./khugepaged"], 0),
        ("./khugepaged -s 2", ["./khugepaged", "-s", "2"], 1)]
    assert sections[1].text == "Reading PMD pagesize failed"
    cut = so.split_runner_output(text.split("[PASS]")[0])
    assert cut[0].exit_code is None


# --------------------------------------------------------------- aggregation


def legacy(*body: str) -> str:
    return "".join(["Save THP and khugepaged settings... " + OK + "\n",
                    "Allocate huge page on fault... " + OK + "\n", *body])


def test_interleaved_child_verdicts_close_latest_step_first() -> None:
    text = legacy("\nRun test: collapse_fork (khugepaged:anon)\n",
                  "Check if parent still has small page...Child step... " + OK + "\n",
                  " " + OK + "\n")
    run = parse_selftest(text, 0, ["./khugepaged"])
    assert steps_of(run, "collapse_fork") == [("Check if parent still has small page", "ok", ""),
                                              ("Child step", "ok", "")]
    assert run.status == "pass"


def test_orphan_verdict_names_previous_line() -> None:
    text = legacy("\nRun test: x (khugepaged:anon)\n", "Construct something\n", " " + OK + "\n")
    run = parse_selftest(text, 0, ["./khugepaged"])
    assert steps_of(run, "x") == [("Construct something", "ok", "")]
    assert run.unparsed == []


def test_nonzero_exit_without_failing_step_adds_synthetic_case() -> None:
    text = legacy("\nRun test: collapse_full (khugepaged:anon)\n",
                  "Collapse multiple fully populated PTE table... " + OK + "\n")
    run = parse_selftest(text, 137, ["./khugepaged"])
    assert run.status == "fail"
    assert run.cases[-1].name == "(exit status)"
    assert run.cases[-1].steps[0].message == "exit status 137 without a failing step"
    assert statuses(run)["collapse_full(khugepaged:anon)"] == "pass"


def test_exit_zero_without_cases_is_not_a_pass() -> None:
    run = parse_selftest("", 0, ["./khugepaged"])
    assert run.status == "fail" and run.cases[-1].name == "(no tests)"


def test_usage_error_is_explained() -> None:
    text = "\nUsage: ./khugepaged [OPTIONS] <test type> [dir]\n\n\t<test type>\t: <context>\n"
    run = parse_selftest(text, 1, ["./khugepaged", "bogus"])
    assert run.status == "fail"
    assert "Usage: ./khugepaged" in run.cases[-1].steps[0].detail


def test_failed_save_step_becomes_setup_case() -> None:
    text = "Save THP and khugepaged settings...read_file(): No such file or directory\n"
    run = parse_selftest(text, 1, ["./khugepaged"])
    assert run.status == "fail"
    assert [c.name for c in run.cases] == ["(setup)"]
    assert run.cases[0].steps[0].outcome == "incomplete"


def test_crash_between_steps_appends_end_of_output() -> None:
    text = legacy("\nRun test: collapse_full (khugepaged:anon)\n",
                  "Collapse multiple fully populated PTE table... " + OK + "\n")
    run = parse_selftest(text, None, ["./khugepaged"])
    assert run.status == "crash"
    assert run.cases[-1].status == "crash"
    assert run.cases[-1].steps[-1] == so.StepOutcome("(end of output)", "incomplete", so.MID_TEST)


def test_crash_during_alloc_at_fault() -> None:
    run = parse_selftest("Save THP and khugepaged settings... OK\nAllocate huge page on fault...",
                         None, ["./khugepaged"])
    assert run.status == "crash"
    assert [(c.name, c.status) for c in run.cases] == [("alloc_at_fault", "crash")]


def test_crash_inside_a_message_crashes_the_open_case() -> None:
    text = legacy("\nRun test: collapse_full (khugepaged:anon)\n", "Collapse multiple fu")
    run = parse_selftest(text, None, ["./khugepaged"])
    assert run.status == "crash" and run.cases[-1].status == "crash"
    assert run.unparsed == ["Collapse multiple fu"]


def test_ktap_bail_out_without_result_line() -> None:
    text = ("TAP version 13\n1..3\n# Save THP and khugepaged settings... " + OK + "\n"
            "ok 1 allocate on fault and split\n# \n# Run test: collapse_full (khugepaged:anon)\n"
            "Bail out! Unexpected huge page\n"
            "# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0\n")
    run = parse_selftest(text, 1, ["./khugepaged"])
    assert run.status == "fail"
    assert steps_of(run, "collapse_full") == [
        ("(no result line)", "incomplete", "no result line\nBail out! Unexpected huge page")]


def test_ktap_whole_run_skipped() -> None:
    text = "TAP version 13\n1..0 # SKIP Transparent Hugepages not available\n"
    run = parse_selftest(text, 4, ["./khugepaged"])
    assert (run.status, run.explanation) == ("skip", "Transparent Hugepages not available")


def test_ktap_missing_results_fail_the_run() -> None:
    text = "TAP version 13\n1..3\nok 1 allocate on fault and split\n"
    run = parse_selftest(text, 0, ["./khugepaged"])
    assert run.status == "fail" and run.cases[-1].name == "(plan)"


def test_all_skipped_cases_make_a_skipped_run() -> None:
    text = legacy("\nRun test: collapse_max_ptes_none (khugepaged:file)\n",
                  "tmpfs... " + SKIP + "\n")
    run = parse_selftest(text, 0, ["./khugepaged", "khugepaged:file", "/tmp"])
    assert statuses(run) == {"alloc_at_fault(None:None)": "pass",
                             "collapse_max_ptes_none(khugepaged:file)": "skip"}
    assert run.status == "pass"


def test_exit_count_mismatch_is_noted() -> None:
    text = legacy("\nRun test: x (khugepaged:anon)\n", "A... " + FAIL + "\n", "B... " + FAIL + "\n")
    run = parse_selftest(text, 3, ["./khugepaged"])
    assert run.notes == ["exit status 3 but 2 failing step(s) in the output"]


# ------------------------------------------------------------------ JSON


def _invocation_schema() -> dict:
    schema = json.loads(SCHEMA.read_text())
    return {"$ref": "#/$defs/invocation", "$defs": schema["$defs"]}


@pytest.mark.parametrize("name,code,argv", [
    ("6.12.117-tcg-anon.txt", 0, ["./khugepaged"]),
    ("synthetic-6.12-crash.txt", None, ["./khugepaged"]),
    ("synthetic-ktap-2026.txt", 0, ["./khugepaged", "khugepaged:anon"]),
    ("synthetic-6.12-thp-unavailable.txt", 4, ["./khugepaged"]),
    ("synthetic-6.12-fatal.txt", 1, ["./khugepaged", "khugepaged:anon"]),
])
def test_invocation_json_matches_result_schema(name: str, code: int | None,
                                               argv: list[str]) -> None:
    inv = parse_selftest(raw(name), code, argv).to_invocation_json()
    inv.update(duration=1.0, counter_deltas={})
    jsonschema.validate(inv, _invocation_schema())


def test_to_json_is_plain_and_complete() -> None:
    run = parse_selftest(raw("synthetic-6.12-s2-fail.txt"), 2, ["./khugepaged", "-s", "2"])
    data = json.loads(json.dumps(run.to_json()))
    assert data["status"] == "fail" and data["summary"] == summarize([run])
    assert data["preamble_steps"][0]["message"] == "Save THP and khugepaged settings"


# ------------------------------------------------------------------ properties

_GARBAGE_ALPHABET = st.sampled_from(
    list("abc .#:()[]\r\n\t\x1b0123456789-!") + ["...", "OK", " Fail", "Skip", "Timeout",
                                                 "\x1b[32m", "\x1b[0m", "Run test: ", "ok 1 ",
                                                 "not ok ", "TAP version 13\n", "1..", "# ",
                                                 "*** Testing context: ", "Bail out! ",
                                                 "running ./khugepaged\n", "-----\n", "[PASS]"])


def _check_invariants(run: so.SelftestRun) -> None:
    assert run.status in so.RUN_STATUSES
    for case in run.cases:
        assert case.status in so.CASE_STATUSES and case.name
        assert all(s.outcome in so.STEP_OUTCOMES for s in case.steps)
    assert sum(summarize([run]).values()) == len(run.cases)
    json.dumps(run.to_json())
    failing = any(c.status in ("fail", "crash") for c in run.cases)
    if run.exit_code is None:
        assert run.status == "crash"
    elif failing:
        assert run.status == "fail"
    if run.exit_code not in (None, 0, so.KSFT_SKIP):
        assert run.status == "fail"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=400), st.lists(_GARBAGE_ALPHABET, max_size=80).map("".join)),
       exit_code=st.one_of(st.none(), st.integers(-300, 300)),
       argv=st.lists(st.text(max_size=8), max_size=4))
def test_garbage_never_raises(text: str, exit_code: int | None, argv: list[str]) -> None:
    _check_invariants(parse_selftest(text, exit_code, argv))


_STEP = st.tuples(st.sampled_from(["Collapse thing", "Swapout 65 of 512 pages", "Allocate page",
                                   "Share huge page over fork()"]),
                  st.sampled_from(["OK", "Fail", "Timeout", "Skip", "Fail: check_huge()"]),
                  st.integers(0, 6))
_CASE = st.tuples(st.sampled_from(["collapse_full", "collapse_fork", "collapse_empty"]),
                  st.sampled_from(["khugepaged", "madvise"]),
                  st.sampled_from(["anon", "file", "shmem"]),
                  st.lists(_STEP, min_size=1, max_size=4))
_COLOURS = {"OK": "32", "Skip": "33"}


def _render(cases: list, colour: bool, prefix: bool, crlf: bool) -> str:
    def verdict(word: str) -> str:
        return f"\x1b[{_COLOURS.get(word, '31')}m{word}\x1b[0m" if colour else word
    out = ["Save THP and khugepaged settings... " + verdict("OK") + "\n"]
    for name, ctx, mem, steps in cases:
        out.append(f"\nRun test: {name} ({ctx}:{mem})\n")
        out += [f"{msg}...{'.' * ticks} {verdict(word)}\n" for msg, word, ticks in steps]
    out.append("Restore THP and khugepaged settings... " + verdict("OK") + "\n")
    text = "".join(out)
    if prefix:
        text = "".join(f"# {line}\n" for line in text.rstrip("\n").split("\n"))
    return text.replace("\n", "\r\n") if crlf else text


def _expected(steps: list) -> str:
    words = {w.split(":")[0] for _, w, _ in steps}
    if words & {"Fail", "Timeout"}:
        return "fail"
    return "skip" if "Skip" in words else "pass"


@settings(max_examples=150, deadline=None)
@given(cases=st.lists(_CASE, min_size=1, max_size=5), colour=st.booleans(),
       prefix=st.booleans(), crlf=st.booleans(), order=st.integers(0, 9))
def test_rendered_runs_round_trip(cases: list, colour: bool, prefix: bool, crlf: bool,
                                  order: int) -> None:
    fails = sum(w.startswith(("Fail", "Timeout")) for *_, steps in cases for _, w, _ in steps)
    argv = ["./khugepaged", "-s", str(order)]
    run = parse_selftest(_render(cases, colour, prefix, crlf), fails % 256, argv)
    assert [(c.name, c.context, c.mem_type, c.order) for c in run.cases] == [
        (n, ctx, mem, order) for n, ctx, mem, _ in cases]
    assert [c.status for c in run.cases] == [_expected(steps) for *_, steps in cases]
    for case, (*_, steps) in zip(run.cases, cases, strict=True):
        assert [(s.message, s.detail or "OK") for s in case.steps] == [(m, w) for m, w, _ in steps]
    assert run.status == ("fail" if fails else
                          "skip" if all(c.status == "skip" for c in run.cases) else "pass")
    assert run.unparsed == []


@settings(max_examples=150, deadline=None)
@given(cases=st.lists(_CASE, min_size=1, max_size=4), data=st.data())
def test_truncated_output_is_a_crash(cases: list, data: st.DataObject) -> None:
    text = _render(cases, True, False, False)
    cut = data.draw(st.integers(0, len(text)))
    run = parse_selftest(text[:cut], None, ["./khugepaged"])
    _check_invariants(run)
    assert run.status == "crash"
    full = parse_selftest(text, 0, ["./khugepaged"])
    ok_full = {(c.name, c.context, s.message) for c in full.cases for s in c.steps
               if s.outcome == "ok"}
    for case in run.cases:  # a truncated run never invents a passing step
        for step in case.steps:
            if step.outcome == "ok" and case.name != "alloc_at_fault":
                assert (case.name, case.context, step.message) in ok_full


def test_ktap_inside_run_vmtests_is_unwrapped() -> None:
    section = raw("synthetic-ktap-2026.txt").rstrip("\n").split("\n")
    title = "running ./khugepaged khugepaged:anon"
    text = "".join(["TAP version 13\n", f"# {'-' * len(title)}\n", f"# {title}\n",
                    f"# {'-' * len(title)}\n", *(f"# {line}\n" for line in section),
                    "# [PASS]\n", "ok 1 khugepaged khugepaged:anon\n", "1..1\n"])
    run = parse_selftest(text, 1, ["./khugepaged", "khugepaged:anon"])
    assert (run.form, run.exit_code, run.status) == ("ktap", 0, "fail")
    assert [c.status for c in run.cases] == ["pass", "pass", "pass", "fail", "skip"]
    assert run.unparsed == []


def test_prefixed_capture_without_banner_is_unwrapped() -> None:
    lines = raw("6.12.117-tcg-anon.txt").rstrip("\n").split("\n")
    run = parse_selftest("".join(f"# {line}\n" for line in lines), 0, ["./khugepaged"])
    assert (run.form, run.status, len(run.cases)) == ("legacy", "pass", 26)


def test_72_all_file_on_xfs_three_file_variants_and_a_hidden_failure() -> None:
    # 7.2.13: the three file mem_ops (read-only, read-write read, read-write write) are all
    # named "file"; ksft_test_result_report() reports the global exit_status, which the
    # last success() overwrites, so "ok" can follow a failed step (the case still fails)
    run = parse_selftest(raw("synthetic-7.2-all-file.txt"), 0,
                         ["./khugepaged", "all:file", "/tmp/thpvm-xfs"])
    assert run.form == "ktap" and run.plan == len(run.cases) == 5
    full = [c for c in run.cases if c.name == "collapse_full"]
    assert [(c.context, c.mem_type, c.order, c.status) for c in full] == \
        [("khugepaged", "file", 0, "pass")] * 3
    assert [c.steps[1].message.split()[-3] for c in full] == ["read-only", "(read)", "(write)"]
    hidden = run.cases[-1]
    assert (hidden.name, hidden.result, hidden.status) == ("collapse_max_ptes_none", "pass",
                                                           "fail")
    assert run.status == "fail"


@pytest.mark.parametrize("name, argv, cases", [
    ("7.2.13-tcg-anon.txt", ["./khugepaged"], 26),
    ("7.2.13-tcg-anon-s2.txt", ["./khugepaged", "-s", "2"], 26),
    ("7.2.13-tcg-shmem.txt", ["./khugepaged", "all:shmem"], 9),
    ("7.2.13-tcg-shmem-s4.txt", ["./khugepaged", "-s", "4", "all:shmem"], 9),
    ("7.2.13-tcg-file-xfs.txt", ["./khugepaged", "all:file", "/tmp/thpvm-xfs"], 31),
])
def test_recorded_72_runs_parse_every_case(name: str, argv: list[str], cases: int) -> None:
    # real 7.2.13 output (vm-test --tree debian:7.2 --suite selftest under TCG)
    run = parse_selftest(raw(name), 0, argv)
    assert run.form == "ktap" and run.status == "pass" and not run.unparsed
    assert run.plan == len(run.cases) == cases
    assert run.totals is not None and run.totals["pass"] == cases
    named = [c for c in run.cases if c.context is not None]
    assert len(named) == cases - 1  # all but 'allocate on fault and split'
    assert {c.order for c in run.cases} == {so.parse_order(argv)}
