"""Compare two runs: which cases changed status, which workload verdicts and
counter deltas moved. The core of patch validation (A = base, B = patched).

Everything is a list of plain tuples so callers can decide no-change /
improvement / regression without knowing the result format:

    d = diff_runs(load_result(a_dir), load_result(b_dir))
    for case_id, status_a, status_b in d.cases: ...
    d.regressions(), d.improvements(), d.kind()
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from orchestrator.report import resultdata as rd

log = logging.getLogger(__name__)

_BAD_CASE = ("fail", "crash")
_BAD_WORKLOAD = ("mismatch", "error")


class CaseChange(NamedTuple):
    """A selftest case whose status differs; None = the case did not run in that run."""

    case_id: str
    status_a: str | None
    status_b: str | None


class WorkloadChange(NamedTuple):
    """A workload whose verdict differs; None = it did not run in that run."""

    workload: str
    verdict_a: str | None
    verdict_b: str | None


class CounterChange(NamedTuple):
    """A counter delta that moved. `counter` is scoped: 'selftest/<name>' (summed
    over invocations), 'workload/<workload>/<name>' (last checkpoint),
    'run/<name>' (whole run). Counters measured in only one run are not listed
    (the cases and workloads that did not run already say so)."""

    counter: str
    delta_a: int
    delta_b: int


class ConsoleChange(NamedTuple):
    """A kind of kernel console event (oops, warning, ...) whose count differs."""

    kind: str
    count_a: int
    count_b: int


def _change_kind(a: str | None, b: str | None, bad: tuple[str, ...], good: str) -> str:
    if b in bad and a not in bad:
        return "regression"
    if a in bad and b == good:
        return "improvement"
    return "changed"


@dataclass
class RunDiff:
    """Differences between run A and run B (only what changed is listed)."""

    run_a: str
    run_b: str
    verdict_a: str
    verdict_b: str
    metadata: list[tuple[str, Any, Any]] = field(default_factory=list)
    cases: list[CaseChange] = field(default_factory=list)
    workloads: list[WorkloadChange] = field(default_factory=list)
    counters: list[CounterChange] = field(default_factory=list)
    console: list[ConsoleChange] = field(default_factory=list)

    def case_kind(self, change: CaseChange) -> str:
        """'regression' (to fail/crash), 'improvement' (fail/crash to pass) or 'changed'."""
        return _change_kind(change.status_a, change.status_b, _BAD_CASE, "pass")

    def workload_kind(self, change: WorkloadChange) -> str:
        """'regression' (to mismatch/error), 'improvement' (to match) or 'changed'."""
        return _change_kind(change.verdict_a, change.verdict_b, _BAD_WORKLOAD, "match")

    def regressions(self) -> list[CaseChange | WorkloadChange]:
        """Cases and workloads that got worse from A to B."""
        return ([c for c in self.cases if self.case_kind(c) == "regression"]
                + [w for w in self.workloads if self.workload_kind(w) == "regression"])

    def improvements(self) -> list[CaseChange | WorkloadChange]:
        """Cases and workloads that got better from A to B."""
        return ([c for c in self.cases if self.case_kind(c) == "improvement"]
                + [w for w in self.workloads if self.workload_kind(w) == "improvement"])

    def kind(self) -> str:
        """Overall judgement of B against A:

        'could-not-compare' if either run was not tested (could-not-test or
        bad-input); 'regression' if a case or workload got worse, more console
        events of some kind appeared, or the verdict went pass -> fail (wins
        over improvements); 'improvement' if something got better or the
        verdict went fail -> pass; else 'no-change'. Counter moves alone never
        decide: they are timing-sensitive, judge them with `counters`.
        """
        untested = ("could-not-test", "bad-input")
        if self.verdict_a in untested or self.verdict_b in untested:
            return "could-not-compare"
        if (self.regressions() or any(c.count_b > c.count_a for c in self.console)
                or (self.verdict_a, self.verdict_b) == ("pass", "fail")):
            return "regression"
        if self.improvements() or (self.verdict_a, self.verdict_b) == ("fail", "pass"):
            return "improvement"
        return "no-change"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the diff (tuples become lists)."""
        return {
            "run_a": self.run_a, "run_b": self.run_b,
            "verdict_a": self.verdict_a, "verdict_b": self.verdict_b, "kind": self.kind(),
            "metadata": [list(m) for m in self.metadata],
            "cases": [dict(c._asdict(), kind=self.case_kind(c)) for c in self.cases],
            "workloads": [dict(w._asdict(), kind=self.workload_kind(w)) for w in self.workloads],
            "counters": [c._asdict() for c in self.counters],
            "console": [c._asdict() for c in self.console],
        }

    def to_json(self) -> str:
        """The diff as JSON text (see `to_dict`)."""
        return json.dumps(self.to_dict(), indent=2)

    def format_diff(self) -> str:
        """The diff for a terminal."""
        return format_diff(self)


def _case_statuses(result: Mapping[str, Any]) -> dict[str, str]:
    return {ref.case_id: ref.case["status"] for ref in rd.iter_cases(result)}


def _counter_deltas(result: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for inv in rd.selftest_invocations(result):
        for name, value in inv["counter_deltas"].items():
            out[f"selftest/{name}"] = out.get(f"selftest/{name}", 0) + value
    for w in result["workloads"]:
        if w["checkpoints"]:
            for name, value in w["checkpoints"][-1]["observed"]["counters"].items():
                out[f"workload/{w['name']}/{name}"] = value
    out.update({f"run/{k}": v for k, v in result["counters"]["delta"].items()})
    return out


def _event_counts(result: Mapping[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in rd.console_events(result):
        counts[event["kind"]] = counts.get(event["kind"], 0) + 1
    return counts


def _moved(a: int, b: int, min_change: int, rel_tolerance: float) -> bool:
    change = abs(b - a)
    return change >= min_change and change > rel_tolerance * max(abs(a), abs(b))


def _merged_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys([*a, *b]))


def diff_runs(a: Mapping[str, Any], b: Mapping[str, Any], *, min_change: int = 1,
              rel_tolerance: float = 0.0) -> RunDiff:
    """What changed from result `a` to result `b`.

    A counter delta is listed when it moved by at least `min_change` and by
    more than `rel_tolerance` (fraction) of the larger value; the defaults
    list every difference.
    """
    meta_keys = ("tree", "revision", "kernel_release", "config_hash", "image_hash",
                 "qemu_version", "accel")
    diff = RunDiff(a["run_id"], b["run_id"], a["verdict"], b["verdict"])
    diff.metadata = [(k, a["metadata"].get(k), b["metadata"].get(k)) for k in meta_keys
                     if a["metadata"].get(k) != b["metadata"].get(k)]
    cases_a, cases_b = _case_statuses(a), _case_statuses(b)
    diff.cases = [CaseChange(k, cases_a.get(k), cases_b.get(k))
                  for k in _merged_keys(cases_a, cases_b) if cases_a.get(k) != cases_b.get(k)]
    wl_a = {w["name"]: w["verdict"] for w in a["workloads"]}
    wl_b = {w["name"]: w["verdict"] for w in b["workloads"]}
    diff.workloads = [WorkloadChange(k, wl_a.get(k), wl_b.get(k))
                      for k in _merged_keys(wl_a, wl_b) if wl_a.get(k) != wl_b.get(k)]
    ca, cb = _counter_deltas(a), _counter_deltas(b)
    diff.counters = [CounterChange(k, ca[k], cb[k]) for k in ca
                     if k in cb and _moved(ca[k], cb[k], min_change, rel_tolerance)]
    ka, kb = _event_counts(a), _event_counts(b)
    diff.console = [ConsoleChange(k, ka.get(k, 0), kb.get(k, 0))
                    for k in _merged_keys(ka, kb) if ka.get(k, 0) != kb.get(k, 0)]
    return diff


def _status(value: object) -> str:
    return "absent" if value is None else str(value)


def _signed(a: int | None, b: int | None) -> str:
    return "" if a is None or b is None else f"({b - a:+d})"


def _rows(items: list[tuple[str, object, object, str]]) -> list[str]:
    """Aligned 'name  a -> b  note' rows."""
    if not items:
        return []
    w0 = max(len(name) for name, _, _, _ in items)
    wa = max(len(_status(a)) for _, a, _, _ in items)
    wb = max(len(_status(b)) for _, _, b, _ in items)
    return [f"  {name:<{w0}}  {_status(a):>{wa}} -> {_status(b):<{wb}}  {note}".rstrip()
            for name, a, b, note in items]


def _only_in(changes: list[CaseChange], limit: int = 6) -> list[str]:
    """One line per side for cases that ran in only one of the runs."""
    lines = []
    for side, pick in (("A", lambda c: c.status_b is None), ("B", lambda c: c.status_a is None)):
        ids = [c.case_id for c in changes if pick(c)]
        if ids:
            shown = ", ".join(ids[:limit]) + (f", ... (+{len(ids) - limit})"
                                              if len(ids) > limit else "")
            lines.append(f"  {len(ids)} case(s) ran only in {side}: {shown}")
    return lines


def format_diff(diff: RunDiff) -> str:
    """Human-readable text of a `RunDiff`."""
    def note(kind: str) -> str:
        return kind.upper() if kind != "changed" else ""

    lines = [f"A {diff.run_a} ({diff.verdict_a})  ->  B {diff.run_b} ({diff.verdict_b}): "
             f"{diff.kind()}"]
    lines += [f"  {k}: {va} -> {vb}" for k, va, vb in diff.metadata]
    both = [c for c in diff.cases if c.status_a is not None and c.status_b is not None]
    lines.append(f"selftest cases changed: {len(diff.cases) or 'none'}")
    lines += _rows([(c.case_id, c.status_a, c.status_b, note(diff.case_kind(c))) for c in both])
    lines += _only_in(diff.cases)
    lines.append(f"workload verdicts changed: {len(diff.workloads) or 'none'}")
    lines += _rows([(w.workload, w.verdict_a, w.verdict_b, note(diff.workload_kind(w)))
                    for w in diff.workloads])
    lines.append(f"console events changed: {len(diff.console) or 'none'}")
    lines += _rows([(c.kind, c.count_a, c.count_b, "") for c in diff.console])
    lines.append(f"counter deltas moved: {len(diff.counters) or 'none'}")
    lines += _rows([(c.counter, c.delta_a, c.delta_b, _signed(c.delta_a, c.delta_b))
                    for c in diff.counters])
    return "\n".join(lines)
