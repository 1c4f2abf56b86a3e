"""report.html rendering (without a browser) and the inline SVG charts."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from reports_fixtures import NAMES, load

from orchestrator.report import html as htmlreport
from orchestrator.report import svg as svgplot
from orchestrator.report.resultdata import format_duration

SVG = "{http://www.w3.org/2000/svg}"


class _Collector(HTMLParser):
    """Ids, tags with their attributes, and external references of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        self.tags.append((tag, d))
        if d.get("id"):
            self.ids.append(str(d["id"]))


def collect(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    return c


@pytest.mark.parametrize("name", NAMES)
def test_report_is_self_contained(name: str) -> None:
    html = htmlreport.render_html(load(name))
    page = collect(html)
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "img", "iframe"), tag
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            assert not re.match(r"^(https?:)?//", value), (tag, value)
    assert "@import" not in html and "url(" not in html
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    # every in-page link has its target
    for tag, attrs in page.tags:
        href = attrs.get("href") or ""
        if tag == "a" and href.startswith("#"):
            assert href[1:] in page.ids, href


def test_summary_comes_first() -> None:
    html = htmlreport.render_html(load("case-fail"))
    order = [html.index(marker) for marker in (
        'id="verdict"', 'id="results"', 'id="problems"', 'id="console"', 'id="selftest"',
        'id="workloads"', 'id="counters"', 'id="artifacts"')]
    assert order == sorted(order)
    assert "1 selftest case failed, 1 workload mismatched" in html
    assert '<b id="exit-code">1</b>' in html


def test_case_table_has_one_row_per_case_with_failures_explained() -> None:
    html = htmlreport.render_html(load("case-fail"))
    rows = re.findall(r'<tr id="case-[^"]*" class="row-(\w+)"', html)
    assert len(rows) == 45
    assert rows.count("fail") == 1 and rows.count("skip") == 2
    assert "Maybe collapse with max_ptes_shared exceeded: Fail" in html
    assert 'href="#case-collapse_max_ptes_shared-khugepaged-anon-"' in html


def test_time_series_workloads_get_three_plots_kernel_vs_model() -> None:
    result = load("pass")
    views = [htmlreport.workload_view(w) for w in result["workloads"]]
    assert [len(v.plots) for v in views] == [0, 3, 3]  # s1 has one checkpoint
    s9 = views[2]
    assert s9.shown_alternative == "first-wakeup-lost"
    assert len(s9.rows) == 11
    for svg in s9.plots:
        root = ET.fromstring(svg)
        assert root.tag == f"{SVG}svg"
        assert len(root.findall(f"{SVG}polyline")) == 2  # kernel + model
    titles = [ET.fromstring(svg).find(f"{SVG}title").text for svg in s9.plots]  # type: ignore
    assert titles == ["pages_collapsed", "full_scans", "thp_collapse_alloc"]


def test_mismatch_marks_the_differing_cells_and_picks_the_closest_alternative() -> None:
    view = htmlreport.workload_view(load("case-fail")["workloads"][1])
    assert view.verdict == "mismatch" and view.shown_alternative == "default"
    first = dict(zip(view.columns, view.rows[0][2], strict=True))
    assert first["pages_collapsed"].ok is False and first["pages_collapsed"].observed == 1
    assert first["full_scans"].ok is True and first["full_scans"].predicted == ">=2"
    assert first["P AnonHugePages (kB)"].ok is False


def test_closest_alternative_when_none_was_chosen() -> None:
    w = load("pass")["workloads"][2]
    w["chosen_alternative"] = None
    assert htmlreport.shown_alternative(w) == "first-wakeup-lost"


def test_guest_text_is_escaped() -> None:
    result = load("crash")
    result["console"]["events"][0]["lines"].append("<script>alert(1)</script>")
    result["selftest"]["invocations"][0]["cases"][-1]["steps"][0]["message"] = "<b>x</b>"
    result["reason"] = "<img src=x onerror=alert(1)>"
    html = htmlreport.render_html(result)
    assert "<script>" not in html and "<img" not in html and "<b>x</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_could_not_test_shows_reason_and_detail_and_no_tables() -> None:
    html = htmlreport.render_html(load("could-not-test"))
    assert "COULD NOT TEST" in html and "Why the kernel could not be tested" in html
    assert "make[4]: *** [scripts/Makefile.build:229: mm/khugepaged.o] Error 1" in html
    assert "The khugepaged selftest did not run." in html
    assert "<svg" not in html


def test_multi_line_reason_goes_to_detail() -> None:
    result = load("could-not-test")
    del result["detail"]
    result["reason"] = "boot failed: no SSH\nlast console line: VFS: unable to mount root"
    html = htmlreport.render_html(result)
    assert '<div class="reason">boot failed: no SSH</div>' in html
    assert "VFS: unable to mount root</pre>" in html


def test_artifact_links_mark_missing_files(tmp_path: Path) -> None:
    (tmp_path / "serial.log").write_text("boot\n")
    html = htmlreport.render_html(load("pass"), tmp_path)
    assert '<a href="serial.log">serial.log</a>' in html
    assert '<span class="missing">dmesg.txt</span>' in html
    assert '<a href="junit.xml">' in html and '<a href="result.json">' in html


def test_anchor_and_duration_helpers() -> None:
    assert htmlreport.anchor("case-collapse_full(khugepaged:anon) #2") == \
        "case-collapse_full-khugepaged-anon---2"
    assert format_duration(9.84) == "9.8s"
    assert format_duration(241.7) == "4m02s"
    assert format_duration(3725) == "1h02m"
    assert format_duration(None) == "-"


def test_nice_steps() -> None:
    assert svgplot.nice_step(8) == 2
    assert svgplot.nice_step(97) == 50
    assert svgplot.nice_step(0.5) == 1
    assert svgplot.nice_step(0.7, 5, integer=False) == pytest.approx(0.2)


def test_line_chart_draws_bands_for_ranges_and_clips_unbounded_ones() -> None:
    model = svgplot.Series("model", [0, 1, 2], [2, 2, 4], [2, None, 4], "#d9731a", dashed=True)
    kernel = svgplot.Series("kernel", [0, 1, 2], [2, 3, 4], [2, 3, 4], "#1f5fbf")
    root = ET.fromstring(svgplot.line_chart("full_scans <&>", [kernel, model]))
    assert root.find(f"{SVG}title").text == "full_scans <&>"  # type: ignore[union-attr]
    assert len(root.findall(f"{SVG}polygon")) == 1
    assert len(root.findall(f"{SVG}circle")) == 3
    lines = root.findall(f"{SVG}polyline")
    assert lines[-1].get("stroke-dasharray")  # model drawn over the kernel line
    for el in root.iter():
        for key in ("x", "y", "cx", "cy"):
            if el.get(key) is not None:
                assert 0 <= float(el.get(key, "0")) <= 400


def test_line_chart_single_point_and_bad_series() -> None:
    one = svgplot.Series("k", [5.0], [1.0], [1.0], "#000")
    ET.fromstring(svgplot.line_chart("one", [one]))
    with pytest.raises(ValueError):
        svgplot.line_chart("bad", [svgplot.Series("k", [1.0, 2.0], [1.0], [1.0], "#000")])


def test_region_columns_label_smaps_fields_in_kb_only() -> None:
    w = load("pass")["workloads"][0]
    cp = w["checkpoints"][0]
    cp["observed"]["regions"]["P"]["huge_pmds"] = 1
    cp["predicted"][0]["regions"]["P"]["huge_pmds"] = 1
    view = htmlreport.workload_view(w)
    assert "P AnonHugePages (kB)" in view.columns and "P huge_pmds" in view.columns


def test_schedules_are_explained_and_the_taken_one_named() -> None:
    result = load("pass")
    w = dict(result["workloads"][2])
    w["schedules"] = [
        {"name": "default", "explanation": "the pass woken at step 1 ran after step 1",
         "taken": False},
        {"name": "first-wakeup-lost", "explanation": "the first pass found mmap_lock held",
         "taken": True}]
    html = htmlreport.render_html(dict(result, workloads=[w]))
    assert "Admissible schedules (2)" in html
    assert "first-wakeup-lost (the kernel took this one)" in html
    assert "the pass woken at step 1 ran after step 1" in html
