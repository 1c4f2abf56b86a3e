"""Compare the repeated runs of a base and a patched kernel: pure, no I/O.

Each side is a list of result dicts (result.json shape, one per judged run).
What changes from base to patched, each decided over the repeats by majority:

- a selftest case (by `resultdata.case_id`): pass -> fail/crash is a
  regression, fail/crash -> pass an improvement, a case that only the patched
  kernel ran and failed is a regression;
- a workload (by name): match -> mismatch/error is a regression, back an
  improvement;
- the run's verdict (pass -> fail, e.g. a crash that left no case behind);
- new kernel console events (panic, oops, lockup, hang, exited, warning);
- a judged counter delta: a regression when every patched value lies outside
  the range of base values by more than the run-to-run variation seen on
  either side (and a small floor). With one run per side there is no
  variation to go by, so counters are shown but not judged.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.report.resultdata import KEY_COUNTERS, iter_cases

log = logging.getLogger(__name__)

REGRESSION, IMPROVEMENT, INFO = "regression", "improvement", "info"
FAILED = ("fail", "crash")
# Time-driven counters vary with the host's speed, not with the kernel.
UNJUDGED_COUNTERS = ("full_scans",)
JUDGED_COUNTERS = tuple(c for c in KEY_COUNTERS if c not in UNJUDGED_COUNTERS)
ABS_FLOOR = 2
REL_FLOOR = 0.10
CONSOLE_KINDS = ("panic", "oops", "lockup", "hang", "exited", "warning")

Result = Mapping[str, Any]


@dataclass
class Change:
    """One difference between base and patched: what, both sides, and its effect."""

    kind: str
    name: str
    base: str
    patched: str
    effect: str

    def to_json(self) -> dict[str, str]:
        return dict(self.__dict__)


def majority(values: Sequence[str]) -> str | None:
    """The most common value, 'flaky(a/b)' on a tie, None for no values."""
    if not values:
        return None
    ranked = Counter(values).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return "flaky(" + "/".join(sorted(v for v, n in ranked if n == ranked[0][1])) + ")"
    return ranked[0][0]


def _by_key(results: Sequence[Result], items: Any) -> dict[str, str | None]:
    """key -> majority value over the runs, from `items(result)` yielding (key, value)."""
    seen: dict[str, list[str]] = {}
    for result in results:
        for key, value in items(result):
            seen.setdefault(key, []).append(value)
    return {k: majority(v) for k, v in seen.items()}


def _cases(result: Result) -> list[tuple[str, str]]:
    return [(ref.case_id, ref.case["status"]) for ref in iter_cases(result)]


def _workloads(result: Result) -> list[tuple[str, str]]:
    return [(w["name"], w["verdict"]) for w in result.get("workloads", [])]


def _verdict(result: Result) -> list[tuple[str, str]]:
    return [("verdict", str(result.get("verdict")))]


def case_changes(base: Sequence[Result], patched: Sequence[Result]) -> list[Change]:
    """Selftest cases whose majority status changed."""
    a, b = _by_key(base, _cases), _by_key(patched, _cases)
    changes = []
    for key in list(a) + [k for k in b if k not in a]:
        old, new = a.get(key), b.get(key)
        if old == new:
            continue
        if new in FAILED and (old == "pass" or old is None):
            effect = REGRESSION
        elif old in FAILED and new == "pass":
            effect = IMPROVEMENT
        else:
            effect = INFO
        changes.append(Change("case", key, old or "absent", new or "absent", effect))
    return changes


def workload_changes(base: Sequence[Result], patched: Sequence[Result]) -> list[Change]:
    """Workloads whose majority verdict changed."""
    a, b = _by_key(base, _workloads), _by_key(patched, _workloads)
    changes = []
    for key in list(a) + [k for k in b if k not in a]:
        old, new = a.get(key), b.get(key)
        if old == new:
            continue
        if new in ("mismatch", "error") and old in ("match", None):
            effect = REGRESSION
        elif old in ("mismatch", "error") and new == "match":
            effect = IMPROVEMENT
        else:
            effect = INFO
        changes.append(Change("workload", key, old or "absent", new or "absent", effect))
    return changes


def verdict_changes(base: Sequence[Result], patched: Sequence[Result]) -> list[Change]:
    """The run verdict (pass/fail) when it changed."""
    old = _by_key(base, _verdict).get("verdict")
    new = _by_key(patched, _verdict).get("verdict")
    if old == new:
        return []
    effect = INFO
    if old == "pass" and new == "fail":
        effect = REGRESSION
    elif old == "fail" and new == "pass":
        effect = IMPROVEMENT
    return [Change("run", "verdict", str(old), str(new), effect)]


def console_changes(base: Sequence[Result], patched: Sequence[Result]) -> list[Change]:
    """Console event kinds seen in most patched runs but in no base run."""
    def kinds(result: Result) -> set[str]:
        events = (result.get("console") or {}).get("events", [])
        return {e["kind"] for e in events if e.get("kind") in CONSOLE_KINDS}

    in_base = set().union(*(kinds(r) for r in base)) if base else set()
    counts = Counter(k for r in patched for k in kinds(r))
    return [Change("console", kind, "none", f"{n}/{len(patched)} runs", REGRESSION)
            for kind, n in sorted(counts.items()) if kind not in in_base and n * 2 > len(patched)]


def _deltas(results: Sequence[Result], name: str) -> list[int]:
    values = [((r.get("counters") or {}).get("delta") or {}).get(name) for r in results]
    return [int(v) for v in values if isinstance(v, int | float)]


def counter_moved(base: Sequence[int], patched: Sequence[int]) -> bool:
    """Whether patched values all lie beyond the base range by more than the noise.

    The margin is the larger of the spread (max - min) seen on either side,
    ABS_FLOOR, and REL_FLOOR of the larger magnitude.
    """
    if len(base) < 2 or len(patched) < 2:
        return False
    spread = max(max(base) - min(base), max(patched) - min(patched))
    scale = max(abs(v) for v in (*base, *patched))
    margin = max(spread, ABS_FLOOR, REL_FLOOR * scale)
    gap = max(min(patched) - max(base), min(base) - max(patched))
    return gap > margin


def counter_changes(base: Sequence[Result], patched: Sequence[Result]) -> list[Change]:
    """Judged counter deltas that moved beyond run-to-run variation (needs 2+ runs a side)."""
    changes = []
    for name in JUDGED_COUNTERS:
        a, b = _deltas(base, name), _deltas(patched, name)
        if a and b and counter_moved(a, b):
            changes.append(Change("counter", name, _span(a), _span(b), REGRESSION))
    return changes


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}..{hi}"


def compare(base: Sequence[Result], patched: Sequence[Result]) -> list[Change]:
    """Every change from base to patched, regressions first."""
    changes = (verdict_changes(base, patched) + case_changes(base, patched)
               + workload_changes(base, patched) + console_changes(base, patched)
               + counter_changes(base, patched))
    order = {REGRESSION: 0, IMPROVEMENT: 1, INFO: 2}
    return sorted(changes, key=lambda c: order[c.effect])


def verdict_of(changes: Sequence[Change]) -> str:
    """regression if any change is one, else improvement if any, else no-change."""
    effects = {c.effect for c in changes}
    if REGRESSION in effects:
        return "regression"
    if IMPROVEMENT in effects:
        return "improvement"
    return "no-change"


def counter_table(base: Sequence[Result], patched: Sequence[Result]) -> list[tuple[str, str, str]]:
    """(counter, base values, patched values) for the key counters present on either side."""
    rows = []
    for name in KEY_COUNTERS:
        a, b = _deltas(base, name), _deltas(patched, name)
        if a or b:
            rows.append((name, _span(a) if a else "-", _span(b) if b else "-"))
    return rows
