"""junit.xml from a result dict, in the structure GitLab, Jenkins and GitHub read.

    testsuites
      testsuite  one per selftest invocation, one for workloads, one 'thpvm'
        properties   counter deltas (and run metadata)
        testcase     one per selftest case / workload
          failure | error | skipped, system-out

The 'thpvm' suite carries what belongs to no case: the run itself (an error
when the kernel could not be tested) and kernel console events.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from orchestrator.report import resultdata as rd

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MAX_TEXT = 20000


def xml_text(text: object) -> str:
    """Text safe for XML 1.0: ANSI colours removed, other illegal characters as '?'."""
    cleaned = _XML_ILLEGAL.sub("?", _ANSI.sub("", str(text)))
    if len(cleaned) > _MAX_TEXT:
        cleaned = cleaned[:_MAX_TEXT] + "\n[... truncated]"
    return cleaned


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
    child = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attrs.items()})
    if text:
        child.text = xml_text(text)
    return child


def _properties(suite: ET.Element, props: Mapping[str, object]) -> None:
    if not props:
        return
    node = _el(suite, "properties")
    for name, value in props.items():
        _el(node, "property", name=name, value=value)


def _finish_suite(suite: ET.Element, seconds: float) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    suite.set("time", f"{seconds:.3f}")


def _new_suite(root: ET.Element, name: str, result: Mapping[str, Any]) -> ET.Element:
    meta = result["metadata"]
    return _el(root, "testsuite", name=name, timestamp=meta["started"], hostname=meta["host"])


_OUTCOME_TEXT = {"ok": "OK", "fail": "Fail", "skip": "Skip", "timeout": "Timeout",
                 "incomplete": "<no verdict: cut short>"}


def _steps_text(case: Mapping[str, Any]) -> str:
    """The steps as the selftest printed them: 'message... verdict'."""
    lines = []
    for step in case["steps"]:
        verdict = _OUTCOME_TEXT[step["outcome"]]
        if step["detail"] and step["outcome"] != "incomplete":
            verdict = step["detail"]
        lines.append(f"{step['message']}... {verdict}")
    return "\n".join(lines)


def _skip_message(case: Mapping[str, Any]) -> str:
    for step in case["steps"]:
        if step["outcome"] == "skip":
            return f"{step['message']}: {step['detail'] or 'skip'}"
    return "skipped"


def _selftest_suite(root: ET.Element, result: Mapping[str, Any],
                    inv: Mapping[str, Any], refs: list[rd.CaseRef]) -> None:
    suite = _new_suite(root, f"selftest {' '.join(inv['argv'])}", result)
    props = {f"counter.{k}": v for k, v in sorted(inv["counter_deltas"].items())}
    props.update({"argv": " ".join(inv["argv"]), "status": inv["status"],
                  "exit_code": "none" if inv["exit_code"] is None else inv["exit_code"]})
    if inv.get("explanation"):
        props["explanation"] = inv["explanation"]
    _properties(suite, props)
    crash_text = "\n\n".join("\n".join(e["lines"]) for e in rd.crash_events(result))
    for ref in refs:
        case = ref.case
        classname = f"selftest.{case['context'] or 'setup'}.{case['mem_type'] or 'none'}"
        tc = _el(suite, "testcase", name=ref.case_id, classname=classname,
                 time=f"{case.get('duration', 0.0):.3f}")
        status = case["status"]
        if status == "fail":
            _el(tc, "failure", _steps_text(case), message=rd.failure_message(case), type="fail")
        elif status == "crash":
            _el(tc, "error", crash_text or _steps_text(case),
                message=f"kernel crash or lost guest: {rd.failure_message(case)}", type="crash")
        elif status == "skip":
            _el(tc, "skipped", message=_skip_message(case))
        _el(tc, "system-out", _steps_text(case))
    _finish_suite(suite, float(inv["duration"]))


def _workload_text(workload: Mapping[str, Any]) -> str:
    lines = [workload.get("description", ""), workload["explanation"], ""]
    for cp in workload["checkpoints"]:
        pred = rd.chosen_or_first(workload, cp)
        lines.append(f"checkpoint {cp['label']} (model alternative '{pred['name']}'):")
        for name, observed in sorted(cp["observed"]["counters"].items()):
            predicted = pred["counters"].get(name)
            mark = "" if predicted is None else ("  ok" if rd.fits(predicted, observed)
                                                 else "  DIFFERS")
            lines.append(f"  {name:<28} kernel {observed:>8}  model "
                         f"{rd.format_prediction(predicted):>8}{mark}")
    return "\n".join(lines).strip()


def _workload_suite(root: ET.Element, result: Mapping[str, Any]) -> None:
    suite = _new_suite(root, "workloads", result)
    props: dict[str, object] = {}
    for w in result["workloads"]:
        last = w["checkpoints"][-1]["observed"]["counters"] if w["checkpoints"] else {}
        props.update({f"{w['name']}.{k}": v for k, v in sorted(last.items())})
    _properties(suite, props)
    total = 0.0
    for w in result["workloads"]:
        total += w.get("duration", 0.0)
        tc = _el(suite, "testcase", name=w["name"], classname="workload",
                 time=f"{w.get('duration', 0.0):.3f}")
        text = _workload_text(w)
        if w["verdict"] == "mismatch":
            _el(tc, "failure", text, message=w["explanation"], type="mismatch")
        elif w["verdict"] == "error":
            _el(tc, "error", text, message=w["explanation"], type="error")
        _el(tc, "system-out", text)
    _finish_suite(suite, total)


def _run_suite(root: ET.Element, result: Mapping[str, Any]) -> None:
    suite = _new_suite(root, "thpvm", result)
    meta = result["metadata"]
    props = {k: meta.get(k) for k in ("tree", "revision", "kernel_release", "config_hash",
                                      "image_hash", "qemu_version", "accel")}
    props = {k: v for k, v in props.items() if v is not None}
    props.update({f"counter.{k}": v for k, v in sorted(result["counters"]["delta"].items())})
    _properties(suite, props)
    tc = _el(suite, "testcase", name="run", classname="thpvm")
    reason, detail = rd.reason_parts(result)
    text = f"verdict {result['verdict']} (exit {result['exit_code']}): {reason}\n{detail}"
    if result["verdict"] in ("could-not-test", "bad-input"):
        _el(tc, "error", text.strip(), message=reason, type=result["verdict"])
    _el(tc, "system-out", text.strip())
    events = rd.console_events(result)
    if events:
        tc = _el(suite, "testcase", name="kernel console", classname="thpvm")
        text = "\n\n".join(f"[{e['kind']}]\n" + "\n".join(e["lines"]) for e in events)
        kinds = ", ".join(sorted({e["kind"] for e in events}))
        tag = "error" if rd.crash_events(result) else "failure"
        _el(tc, tag, text, message=f"kernel console: {kinds}", type=kinds)
        _el(tc, "system-out", text)
    # Test stages are timed by their own suites; this one covers the rest (build, boot...).
    _finish_suite(suite, sum(v for k, v in meta["durations"].items()
                             if k not in ("selftest", "workloads")))


def to_junit_xml(result: Mapping[str, Any]) -> str:
    """The junit.xml text of a (valid) result dict."""
    root = ET.Element("testsuites", {"name": xml_text(f"thpvm {result['run_id']}")})
    refs = list(rd.iter_cases(result))
    for n, inv in enumerate(rd.selftest_invocations(result)):
        _selftest_suite(root, result, inv, [r for r in refs if r.invocation == n])
    if result["workloads"]:
        _workload_suite(root, result)
    _run_suite(root, result)
    suites = root.findall("testsuite")
    for attr in ("tests", "failures", "errors", "skipped"):
        root.set(attr, str(sum(int(s.get(attr, "0")) for s in suites)))
    root.set("time", f"{sum(float(s.get('time', '0')) for s in suites):.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
