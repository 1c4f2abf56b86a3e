"""report.html: one self-contained page (inline CSS and SVG, no network).

`render_html` builds a plain view model from the result dict here, in Python,
and the jinja2 template `templates/report.html.j2` only lays it out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from orchestrator.report import resultdata as rd
from orchestrator.report.svg import Series, line_chart

log = logging.getLogger(__name__)

KERNEL_COLOR, MODEL_COLOR = "#1f5fbf", "#d9731a"
LINKED_ARTIFACTS = (("serial_log", "serial.log"), ("dmesg", "dmesg.txt"), ("config", "config"))


@dataclass
class Cell:
    """One kernel-vs-model table cell."""

    observed: Any
    predicted: str
    ok: bool | None  # None: the model predicts nothing for it


@dataclass
class WorkloadView:
    """What the template shows for one workload."""

    name: str
    verdict: str
    explanation: str
    description: str
    shown_alternative: str
    alternatives: list[str]
    schedules: list[dict[str, Any]]
    columns: list[str]
    rows: list[tuple[str, str, list[Cell]]]
    plots: list[str] = field(default_factory=list)


def anchor(text: str) -> str:
    """An HTML id/fragment made of text: anything but [A-Za-z0-9_.-] becomes '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["anchor"] = anchor
    env.filters["duration"] = rd.format_duration
    return env


def _misfits(workload: Mapping[str, Any], name: str) -> int:
    count = 0
    for cp in workload["checkpoints"]:
        alt = next((a for a in cp["predicted"] if a["name"] == name), None)
        if alt is None:
            count += 1
            continue
        observed = cp["observed"]["counters"]
        count += sum(1 for k, v in alt["counters"].items() if not rd.fits(v, observed.get(k)))
    return count


def shown_alternative(workload: Mapping[str, Any]) -> str:
    """The model alternative to display: the chosen one, else the closest (fewest misfits)."""
    if workload.get("chosen_alternative"):
        return str(workload["chosen_alternative"])
    names = [a["name"] for cp in workload["checkpoints"] for a in cp["predicted"]]
    unique = list(dict.fromkeys(names))
    return min(unique, key=lambda n: _misfits(workload, n)) if unique else ""


def _prediction(cp: Mapping[str, Any], name: str) -> dict[str, Any]:
    for alt in cp["predicted"]:
        if alt["name"] == name:
            return dict(alt)
    return {"name": name, "counters": {}, "regions": {}}


def _columns(workload: Mapping[str, Any], alt: str) -> list[tuple[str, str | None, str]]:
    """(label, region or None, field) for every predicted counter and region field."""
    cols: dict[tuple[str | None, str], None] = {}
    for cp in workload["checkpoints"]:
        pred = _prediction(cp, alt)
        names = pred["counters"] or cp["observed"]["counters"]
        cols.update({(None, k): None for k in names})
        for region, fields in pred["regions"].items():
            cols.update({(region, k): None for k in fields})
    return [(_column_label(r, k), r, k) for r, k in cols]


def _column_label(region: str | None, key: str) -> str:
    """Counter name, or 'region Field (kB)' for smaps fields (capitalised, in kB)."""
    if region is None:
        return key
    return f"{region} {key} (kB)" if key[:1].isupper() else f"{region} {key}"


def _cell(cp: Mapping[str, Any], pred: Mapping[str, Any], region: str | None, key: str) -> Cell:
    if region is None:
        observed = cp["observed"]["counters"].get(key)
        predicted = pred["counters"].get(key)
    else:
        observed = cp["observed"]["regions"].get(region, {}).get(key)
        predicted = pred["regions"].get(region, {}).get(key)
    ok = None if predicted is None else rd.fits(predicted, observed)
    return Cell("-" if observed is None else observed, rd.format_prediction(predicted), ok)


def _plots(workload: Mapping[str, Any], alt: str) -> list[str]:
    cps = workload["checkpoints"]
    timed = all("t" in cp for cp in cps)
    xs = [float(cp["t"]) if timed else float(i) for i, cp in enumerate(cps)]
    plots = []
    for counter in rd.PLOT_COUNTERS:
        observed = [rd.counter_value(cp["observed"]["counters"], counter) for cp in cps]
        predicted = [rd.counter_value(_prediction(cp, alt)["counters"], counter) for cp in cps]
        if all(v is None for v in observed + predicted):
            continue
        series = []
        if all(v is not None for v in observed):
            obs = [float(v) for v in observed]
            series.append(Series("kernel", xs, obs, list(obs), KERNEL_COLOR))
        if all(v is not None for v in predicted):
            ranges = [rd.value_range(v) for v in predicted]
            series.append(Series(f"model ({alt})", xs, [float(lo) for lo, _ in ranges],
                                 [None if hi is None else float(hi) for _, hi in ranges],
                                 MODEL_COLOR, dashed=True))
        plots.append(line_chart(counter, series,
                                x_label="t (s)" if timed else "checkpoint"))
    return plots


def workload_view(workload: Mapping[str, Any]) -> WorkloadView:
    """The table rows and plots of one workload."""
    alt = shown_alternative(workload)
    columns = _columns(workload, alt)
    rows = []
    for cp in workload["checkpoints"]:
        pred = _prediction(cp, alt)
        t = f"{cp['t']:.1f}" if "t" in cp else ""
        rows.append((cp["label"], t, [_cell(cp, pred, r, k) for _, r, k in columns]))
    alternatives = list(dict.fromkeys(a["name"] for cp in workload["checkpoints"]
                                      for a in cp["predicted"]))
    return WorkloadView(
        name=workload["name"], verdict=workload["verdict"],
        explanation=workload["explanation"], description=workload.get("description", ""),
        shown_alternative=alt, alternatives=alternatives,
        schedules=list(workload.get("schedules", [])),
        columns=[label for label, _, _ in columns], rows=rows,
        plots=_plots(workload, alt) if rd.is_time_series(workload) else [],
    )


def _counter_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    counters = result["counters"]
    names = sorted(set(counters["before"]) | set(counters["after"]) | set(counters["delta"]))
    rows = [{"name": n, "before": counters["before"].get(n, "-"),
             "after": counters["after"].get(n, "-"), "delta": counters["delta"].get(n, "-"),
             "key": n in rd.KEY_COUNTERS} for n in names]
    return sorted(rows, key=lambda r: (not r["key"], r["delta"] in (0, "-"), r["name"]))


def _artifacts(result: Mapping[str, Any], run_dir: Path | None) -> list[dict[str, Any]]:
    arts = dict(result["artifacts"])
    roles = [role for role, _ in LINKED_ARTIFACTS] + sorted(set(arts) - {r for r, _ in
                                                                          LINKED_ARTIFACTS})
    defaults = dict(LINKED_ARTIFACTS)
    out = []
    for role in roles:
        path = arts.get(role, defaults.get(role, ""))
        exists = role in arts and (run_dir is None or (run_dir / path).exists())
        out.append({"role": role, "path": path, "exists": exists})
    return out


def _problems(result: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(anchor, title, text) of everything that went wrong, most severe first."""
    out = [(f"console-{i}", f"kernel {e['kind']}", rd.event_headline(e))
           for i, e in enumerate(rd.console_events(result))]
    out += [(f"case-{ref.case_id}", ref.case_id, rd.failure_message(ref.case))
            for ref in rd.iter_cases(result) if ref.case["status"] in ("fail", "crash")]
    out += [(f"workload-{w['name']}", f"workload {w['name']}: {w['verdict']}", w["explanation"])
            for w in result["workloads"] if w["verdict"] != "match"]
    return out


def render_html(result: Mapping[str, Any], run_dir: Path | None = None) -> str:
    """The report.html text of a (valid) result; `run_dir` marks missing artifacts."""
    meta = result["metadata"]
    refs = list(rd.iter_cases(result))
    reason, detail = rd.reason_parts(result)
    context = {
        "reason": reason, "detail": detail, "events": rd.console_events(result),
        "r": result, "meta": meta, "verdict_title": rd.VERDICT_TITLES[result["verdict"]],
        "summary": (result.get("selftest") or {}).get("summary"),
        "workload_counts": rd.workload_counts(result),
        "key_deltas": rd.key_counters(result["counters"]["delta"]),
        "problems": _problems(result),
        "invocations": [(inv, [r for r in refs if r.invocation == n])
                        for n, inv in enumerate(rd.selftest_invocations(result))],
        "failure_message": rd.failure_message,
        "workloads": [workload_view(w) for w in result["workloads"]],
        "counter_rows": _counter_rows(result),
        "artifacts": _artifacts(result, run_dir),
        "total_seconds": sum(meta["durations"].values()),
        "durations": rd.ordered_durations(meta["durations"]),
    }
    return _environment().get_template("report.html.j2").render(**context)
