"""Pure read-only views of a result dict, shared by every renderer.

Case ids, key counters, prediction ranges: one definition each, so the JUnit
file, the HTML report, the console summary and run diffs agree.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# The counters a kernel developer looks at first, in display order.
KEY_COUNTERS = (
    "pages_collapsed", "full_scans", "thp_collapse_alloc", "thp_collapse_alloc_failed",
    "thp_fault_alloc", "thp_fault_fallback", "thp_scan_exceed_none_pte",
    "thp_scan_exceed_swap_pte", "thp_scan_exceed_share_pte", "thp_split_pmd",
)
PLOT_COUNTERS = ("pages_collapsed", "full_scans", "thp_collapse_alloc")
CRASH_KINDS = ("panic", "oops", "lockup", "hang", "exited")
STAGE_ORDER = ("build", "image", "boot", "selftest", "workloads")
_HEADLINE = re.compile(
    r"Kernel panic|BUG:|Oops|WARNING:|watchdog:|rcu: INFO|INFO: task|general protection|"
    r"Unable to handle|soft lockup|hard LOCKUP")
_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s*")
VERDICT_TITLES = {
    "pass": "PASS", "fail": "FAIL", "could-not-test": "COULD NOT TEST", "bad-input": "BAD INPUT",
}


@dataclass(frozen=True)
class CaseRef:
    """One selftest case with its stable id and the invocation it ran in."""

    case_id: str
    invocation: int
    case: dict[str, Any]


def case_id(case: Mapping[str, Any]) -> str:
    """Stable id of a selftest case: 'name(context:mem_type)' plus '[order=n]'."""
    ident = case["name"]
    if case.get("context") or case.get("mem_type"):
        ident += f"({case.get('context') or '-'}:{case.get('mem_type') or '-'})"
    if case.get("order") is not None:
        ident += f"[order={case['order']}]"
    return str(ident)


def iter_cases(result: Mapping[str, Any]) -> Iterator[CaseRef]:
    """Every selftest case of a run in order. An id seen before (alloc_at_fault
    runs in every invocation) is qualified with the invocation's arguments,
    '@ khugepaged:file /mnt', and then '#n' if still not unique."""
    seen: set[str] = set()
    for n, inv in enumerate(selftest_invocations(result)):
        for case in inv["cases"]:
            ident = case_id(case)
            if ident in seen:
                ident = f"{ident} @ {' '.join(inv['argv'][1:])}".rstrip(" @")
            base, k = ident, 2
            while ident in seen:
                ident, k = f"{base} #{k}", k + 1
            seen.add(ident)
            yield CaseRef(ident, n, case)


def selftest_invocations(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The selftest invocations, empty when the selftest did not run."""
    selftest = result.get("selftest") or {}
    return list(selftest.get("invocations", []))


def first_failed_step(case: Mapping[str, Any]) -> dict[str, Any] | None:
    """The step that explains a failed or crashed case (first not ok and not skip)."""
    for step in case.get("steps", []):
        if step["outcome"] not in ("ok", "skip"):
            return dict(step)
    return None


def failure_message(case: Mapping[str, Any]) -> str:
    """One line saying why a case failed: 'step message: detail'."""
    step = first_failed_step(case)
    if step is None:
        return f"case {case['status']}"
    if step["outcome"] == "incomplete":
        return f"{step['message']}: no verdict (cut short)"
    return f"{step['message']}: {step['detail'] or step['outcome']}"


def counter_value(counters: Mapping[str, Any], name: str) -> Any:
    """Look a counter up by bare name, also under a 'group/name' or 'group.name' key."""
    if name in counters:
        return counters[name]
    for key, value in counters.items():
        if key.endswith("/" + name) or key.endswith("." + name):
            return value
    return None


def key_counters(counters: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) of the key counters present in `counters`, in display order."""
    found = [(name, counter_value(counters, name)) for name in KEY_COUNTERS]
    return [(name, value) for name, value in found if value is not None]


def value_range(value: Any) -> tuple[int, int | None]:
    """A prediction value as an inclusive (min, max) range, max None = unbounded."""
    if isinstance(value, Mapping):
        return int(value["min"]), (None if value["max"] is None else int(value["max"]))
    return int(value), int(value)


def fits(prediction: Any, observed: Any) -> bool:
    """Whether an observed integer lies in a predicted value or range."""
    if prediction is None or observed is None:
        return False
    lo, hi = value_range(prediction)
    return bool(lo <= observed and (hi is None or observed <= hi))


def format_prediction(value: Any) -> str:
    """'3', '2..4' or '>=2' for a predicted value."""
    if value is None:
        return "-"
    lo, hi = value_range(value)
    if hi is None:
        return f">={lo}"
    return str(lo) if lo == hi else f"{lo}..{hi}"


def chosen_or_first(workload: Mapping[str, Any], checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The prediction to show for a checkpoint: the chosen alternative, else the first."""
    alternatives = checkpoint.get("predicted") or []
    for alt in alternatives:
        if alt["name"] == workload.get("chosen_alternative"):
            return dict(alt)
    return dict(alternatives[0]) if alternatives else {"name": "", "counters": {}, "regions": {}}


def is_time_series(workload: Mapping[str, Any]) -> bool:
    """A workload with two or more checkpoints is plotted over time."""
    return len(workload.get("checkpoints", [])) >= 2


def console_events(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Console events worth showing (everything but the informational 'ready')."""
    return [e for e in result["console"]["events"] if e["kind"] != "ready"]


def crash_events(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Console events that mean the kernel or guest died or hung."""
    return [e for e in result["console"]["events"] if e["kind"] in CRASH_KINDS]


def reason_parts(result: Mapping[str, Any]) -> tuple[str, str]:
    """(one-line reason, detail): extra reason lines and the `detail` field."""
    head, _, rest = str(result.get("reason", "")).strip().partition("\n")
    detail = "\n".join(x for x in (rest.strip("\n"), str(result.get("detail", ""))) if x)
    return head.strip(), detail


def workload_counts(result: Mapping[str, Any]) -> dict[str, int]:
    """Number of workloads per verdict (match, mismatch, error)."""
    counts = {"match": 0, "mismatch": 0, "error": 0}
    for w in result.get("workloads", []):
        counts[w["verdict"]] += 1
    return counts


def format_duration(seconds: float | None) -> str:
    """'9.8s', '4m02s' or '1h03m' for a duration in seconds ('-' for None)."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def event_headline(event: Mapping[str, Any]) -> str:
    """The line that names a console event (the WARNING:/BUG:/panic line), no timestamp."""
    lines = [line for line in event.get("lines", []) if line.strip()]
    best = next((line for line in lines if _HEADLINE.search(line)), lines[0] if lines else "")
    return _TIMESTAMP.sub("", best).strip()


def ordered_durations(durations: Mapping[str, float]) -> list[tuple[str, float]]:
    """Stage durations in pipeline order (build, image, boot, selftest, workloads, others)."""
    known = [(k, durations[k]) for k in STAGE_ORDER if k in durations]
    return known + sorted((k, v) for k, v in durations.items() if k not in STAGE_ORDER)
