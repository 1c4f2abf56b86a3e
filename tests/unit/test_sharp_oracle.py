"""The oracle stays sharp: a kernel that counts thp_scan_exceed_none_pte twice per
rejected PMD (tests/data/patches/double-count-exceed-none.patch) changes no decision,
no THP and no other counter; only an exact comparison of that counter catches it.
Recorded 6.12.117 runs, with the counter doubled as that kernel would report it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.judge.compare import compare
from orchestrator.model import predict
from orchestrator.spec import load_spec
from orchestrator.suites.workloads.observation import parse_driver_output

ROOT = Path(__file__).parents[2]
RECORDED = ROOT / "tests" / "data" / "workloads" / "6.12.117-tcg"
PATCH = ROOT / "tests" / "data" / "patches" / "double-count-exceed-none.patch"
COUNTER = "thp_scan_exceed_none_pte"


def _doubled(text: str) -> str:
    """The driver output as the double-counting kernel would print it."""
    out, first = [], None
    for line in text.splitlines():
        ev = json.loads(line)
        if ev.get("event") == "checkpoint":
            c = ev["counters"]
            first = c[COUNTER] if first is None else first
            c[COUNTER] = first + 2 * (c[COUNTER] - first)
        out.append(json.dumps(ev))
    return "\n".join(out)


def test_the_seeded_patch_only_doubles_the_counter() -> None:
    added = [ln for ln in PATCH.read_text().splitlines()
             if ln.startswith("+") and not ln.startswith("+++")]
    assert added == ["+\t\t\t\tcount_vm_event(THP_SCAN_EXCEED_NONE_PTE);"]


@pytest.mark.parametrize("name", ["dontneed-empty-table", "max-ptes-none-exceeded",
                                  "zero-page-ptes"])
def test_double_counted_exceed_none_pte_is_a_mismatch(name: str) -> None:
    d = RECORDED / name
    spec = load_spec(ROOT / "orchestrator" / "suites" / "workloads" / "specs" / f"{name}.toml")
    text = (d / "driver.jsonl").read_text()
    obs = parse_driver_output(text, spec)
    prediction = predict(spec, wait_starts=obs.wait_starts)  # as runner.run_one does
    assert compare(prediction, obs, spec).status == "match"
    v = compare(prediction, parse_driver_output(_doubled(text), spec), spec)
    assert v.status == "mismatch"
    assert f"counter {COUNTER} changed by" in v.explanation, v.explanation
    assert all(d["name"] == COUNTER for d in v.details), v.details
