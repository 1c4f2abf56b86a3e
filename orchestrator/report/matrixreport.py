"""The merged matrix's files: matrix-summary.json, junit.xml (one testsuite per kernel)
and report.html (the kernel x case grid, workload model verdicts, counters side by side).

Built from `matrixmerge.Merged`; the JUnit helpers and the jinja environment are the
single-run report's (junit.py, html.py).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from orchestrator.cache import write_json
from orchestrator.report import resultdata as rd
from orchestrator.report.html import _environment
from orchestrator.report.junit import _el, _finish_suite, _properties, xml_text
from orchestrator.report.matrixmerge import Merged, Row, counter_table, summary_json

SUMMARY_NAME = "matrix-summary.json"
JUNIT_NAME = "junit.xml"
HTML_NAME = "report.html"


def write_merged(merged: Merged, out: Path) -> dict[str, Any]:
    """Write the three files into `out`; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_json(merged)
    write_json(out / SUMMARY_NAME, summary)
    (out / JUNIT_NAME).write_text(to_matrix_junit(merged), encoding="utf-8")
    (out / HTML_NAME).write_text(render_matrix_html(merged, out), encoding="utf-8")
    return summary


# ------------------------------------------------------------------ JUnit

def to_matrix_junit(merged: Merged) -> str:
    """testsuites > testsuite per kernel > testcase per case (repeats folded into one)."""
    root = ET.Element("testsuites", {"name": xml_text("thpvm matrix " +
                                                      " ".join(merged.matrices))})
    for kernel in merged.kernels:
        jobs = [j for j in merged.jobs if j.kernel == kernel]
        suite = _el(root, "testsuite", name=kernel, hostname=",".join(
            sorted({j.host for j in jobs})))
        releases = sorted({str((j.result or {}).get("metadata", {}).get("kernel_release"))
                           for j in jobs if j.result})
        _properties(suite, {"kernel_release": " ".join(releases), "jobs": len(jobs),
                            "repeats": max((j.repeat for j in jobs), default=0)})
        for row in merged.rows:
            if kernel in row.cells:
                _junit_case(suite, row, kernel)
        _finish_suite(suite, sum(j.wall_seconds or 0.0 for j in jobs))
    suites = root.findall("testsuite")
    for attr in ("tests", "failures", "errors", "skipped"):
        root.set(attr, str(sum(int(s.get(attr, "0")) for s in suites)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _junit_case(suite: ET.Element, row: Row, kernel: str) -> None:
    cell = row.cells[kernel]
    tc = _el(suite, "testcase", name=row.name, classname=f"{kernel}.{row.kind}.{row.suite}")
    text = "\n".join(f"repeat {r}: {o}" + (f": {w}" if w else "") for r, o, w in cell.outcomes)
    status = cell.status
    if status in ("fail", "flaky"):
        first = next((w for _, o, w in cell.outcomes if o == "fail" and w), "failed")
        _el(tc, "failure", text, type=status,
            message=f"{cell.failed} of {cell.judged} runs failed"
                    + (" (flaky)" if status == "flaky" else "") + f": {first}")
    elif status == "could-not-test":
        _el(tc, "error", text, type=status, message="could not test: "
            + next((w for _, _, w in cell.outcomes if w), ""))
    elif status == "skip":
        _el(tc, "skipped", message="skipped in every run")
    _el(tc, "system-out", text)


# ------------------------------------------------------------------ HTML

def _job_link(job_dir: Path, out: Path) -> str:
    target = job_dir / "report.html"
    return os.path.relpath(target, out) if target.exists() else ""


def _workload_detail(merged: Merged, row: Row, kernel: str) -> str:
    """Model verdict per repeat with the chosen alternative ('match (default)')."""
    parts = []
    for job in merged.jobs:
        if job.kernel != kernel or job.suite != row.suite or job.result is None:
            continue
        for w in job.result.get("workloads", []):
            if w["name"] == row.name:
                alt = w.get("chosen_alternative") or "-"
                parts.append(f"r{job.repeat} {w['verdict']} ({alt})")
    return ", ".join(parts)


def render_matrix_html(merged: Merged, out: Path) -> str:
    """The merged report page (self-contained: inline CSS, no network)."""
    suites = list(dict.fromkeys(r.suite for r in merged.rows))
    sections = []
    for suite in suites:
        rows = [r for r in merged.rows if r.suite == suite]
        sections.append({
            "suite": suite,
            "rows": [{"row": r, "details": {k: _workload_detail(merged, r, k)
                                            for k in merged.kernels}
                      if r.kind == "workload" else {}} for r in rows],
            "counters": counter_table(merged, suite),
        })
    summary = summary_json(merged)
    context = {
        "m": merged, "summary": summary, "sections": sections,
        "verdict_title": rd.VERDICT_TITLES[summary["verdict"]],
        "jobs": [(j, _job_link(j.dir, out)) for j in merged.jobs],
    }
    return _environment().get_template("matrix.html.j2").render(**context)
