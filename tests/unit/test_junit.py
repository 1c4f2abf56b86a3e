"""junit.xml: parses, follows the common JUnit XSD structure (Jenkins/GitLab),
one testcase per selftest case and workload, failures carry the failing step."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reports_fixtures import NAMES, load

from orchestrator.report import resultdata as rd
from orchestrator.report.junit import to_junit_xml, xml_text

# The structure of the widely used JUnit XSD (jenkins junit-10.xsd, which GitLab
# and GitHub reporters accept): allowed children and attributes per element.
CHILDREN = {
    "testsuites": {"testsuite"},
    "testsuite": {"properties", "testcase", "system-out", "system-err"},
    "properties": {"property"},
    "property": set(),
    "testcase": {"skipped", "error", "failure", "system-out", "system-err"},
    "skipped": set(), "error": set(), "failure": set(), "system-out": set(), "system-err": set(),
}
ATTRS = {
    "testsuites": {"name", "time", "tests", "failures", "errors", "skipped", "disabled"},
    "testsuite": {"name", "tests", "failures", "errors", "time", "disabled", "skipped",
                  "timestamp", "hostname", "id", "package", "file", "log", "url", "version"},
    "property": {"name", "value"},
    "testcase": {"name", "classname", "time", "assertions", "status", "file", "line"},
    "skipped": {"message"}, "error": {"message", "type"}, "failure": {"message", "type"},
    "properties": set(), "system-out": set(), "system-err": set(),
}
CHILD_ORDER = {"testsuite": ["properties", "testcase", "system-out", "system-err"],
               "testcase": ["skipped", "error", "failure", "system-out", "system-err"]}


def check_structure(el: ET.Element) -> None:
    assert el.tag in CHILDREN, el.tag
    assert set(el.attrib) <= ATTRS[el.tag], (el.tag, set(el.attrib) - ATTRS[el.tag])
    tags = [c.tag for c in el]
    assert set(tags) <= CHILDREN[el.tag], (el.tag, tags)
    if el.tag in CHILD_ORDER:
        ranks = [CHILD_ORDER[el.tag].index(t) for t in tags]
        assert ranks == sorted(ranks), (el.tag, tags)
    if el.tag == "testcase":
        assert sum(t in ("skipped", "error", "failure") for t in tags) <= 1
    if el.tag in ("testsuite", "testcase", "testsuites") and "time" in el.attrib:
        assert float(el.attrib["time"]) >= 0
    for child in el:
        check_structure(child)


def parse(name: str) -> ET.Element:
    return ET.fromstring(to_junit_xml(load(name)).encode())


@pytest.mark.parametrize("name", NAMES)
def test_junit_parses_and_follows_the_xsd_structure(name: str) -> None:
    root = parse(name)
    assert root.tag == "testsuites"
    check_structure(root)
    for suite in root.findall("testsuite"):
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(cases)
        assert int(suite.get("failures", "-1")) == sum(c.find("failure") is not None
                                                       for c in cases)
        assert int(suite.get("errors", "-1")) == sum(c.find("error") is not None for c in cases)
        assert int(suite.get("skipped", "-1")) == sum(c.find("skipped") is not None
                                                      for c in cases)
    total = sum(int(s.get("tests", "0")) for s in root.findall("testsuite"))
    assert int(root.get("tests", "-1")) == total


def test_one_testcase_per_selftest_case_and_workload() -> None:
    result = load("pass")
    root = parse("pass")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [
        "selftest ./khugepaged all:anon", "selftest ./khugepaged -s 4 khugepaged:anon",
        "selftest ./khugepaged khugepaged:file /mnt/thp-tmpfs", "workloads", "thpvm"]
    names = [c.get("name") for s in suites[:3] for c in s.findall("testcase")]
    assert names == [r.case_id for r in rd.iter_cases(result)]
    assert len(names) == len(set(names)) == 45
    assert [c.get("name") for c in suites[3].findall("testcase")] == [
        "s1_full_pmd", "s3_too_many_none", "s9_budget_wakeups"]
    assert root.get("failures") == "0" and root.get("errors") == "0"
    assert root.get("skipped") == "2"


def test_failure_carries_the_failing_step() -> None:
    root = parse("case-fail")
    case = root.find(".//testcase[@name='collapse_max_ptes_shared(khugepaged:anon)']")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("message") == "Maybe collapse with max_ptes_shared exceeded: Fail"
    assert "Trigger CoW on page 255 of 512... OK" in (failure.text or "")
    assert case.get("classname") == "selftest.khugepaged.anon"


def test_workload_mismatch_is_a_failure_with_the_comparison() -> None:
    root = parse("case-fail")
    case = root.find(".//testsuite[@name='workloads']/testcase[@name='s3_too_many_none']")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "mismatch"
    assert "pages_collapsed observed 1, model 0" in (failure.get("message") or "")
    assert "DIFFERS" in (failure.text or "")


def test_counter_deltas_are_properties() -> None:
    root = parse("pass")
    suite = root.find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["counter.thp_collapse_alloc"] == "22"
    assert props["counter.pages_collapsed"] == "12"
    wl = root.find("testsuite[@name='workloads']")
    assert wl is not None
    wprops = {p.get("name"): p.get("value") for p in wl.iter("property")}
    assert wprops["s9_budget_wakeups.pages_collapsed"] == "8"
    run = root.find("testsuite[@name='thpvm']")
    assert run is not None
    rprops = {p.get("name"): p.get("value") for p in run.iter("property")}
    assert rprops["counter.full_scans"] == "97" and rprops["kernel_release"] == "6.12.117"


def test_crash_is_an_error_with_the_console_excerpt() -> None:
    root = parse("crash")
    case = root.find(".//testcase[@name='collapse_compound_extreme(khugepaged:anon)']")
    assert case is not None
    error = case.find("error")
    assert error is not None and error.get("type") == "crash"
    assert "RIP: 0010:collapse_huge_page" in (error.text or "")
    console = root.find(".//testcase[@name='kernel console']")
    assert console is not None and console.find("error") is not None
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["exit_code"] == "none"


def test_warning_is_a_console_failure_and_ready_is_ignored() -> None:
    root = parse("case-fail")
    console = root.find(".//testcase[@name='kernel console']/failure")
    assert console is not None and console.get("message") == "kernel console: warning"
    assert root.find(".//testcase[@name='kernel console']") is not None
    assert parse("pass").find(".//testcase[@name='kernel console']") is None  # only 'ready'


def test_could_not_test_is_one_error() -> None:
    root = parse("could-not-test")
    assert [s.get("name") for s in root.findall("testsuite")] == ["thpvm"]
    error = root.find(".//testcase[@name='run']/error")
    assert error is not None and error.get("type") == "could-not-test"
    assert "'cc' undeclared" in (error.get("message") or "")
    assert "make[4]: ***" in (error.text or "")
    assert root.get("errors") == "1"


def test_xml_text_strips_colours_and_illegal_characters() -> None:
    assert xml_text("\x1b[32mOK\x1b[0m") == "OK"
    assert xml_text("a\x00b\x07c\ttab") == "a?b?c\ttab"
    assert xml_text("x" * 30000).endswith("[... truncated]")


@settings(max_examples=60, deadline=None)
@given(st.text(), st.text(max_size=50))
def test_untrusted_guest_text_always_gives_valid_xml(detail: str, message: str) -> None:
    result = load("case-fail")
    case = result["selftest"]["invocations"][0]["cases"][5]
    case["status"] = "fail"
    case["steps"][0] = {"message": message, "outcome": "fail", "detail": detail}
    result["console"]["events"][1]["lines"].append(detail)
    root = ET.fromstring(to_junit_xml(result).encode())
    check_structure(root)
    failure = root.findall(".//failure")
    assert failure
