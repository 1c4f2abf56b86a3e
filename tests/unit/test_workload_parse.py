"""parse_driver_output: recorded driver lines, and garbage that must never crash it."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.spec import parse_spec
from orchestrator.suites.workloads.observation import (
    BASELINE_LABEL,
    errno_name,
    parse_driver_output,
)

SPEC = parse_spec("""
format = 1
name = "p"
[[regions]]
name = "a"
pmds = 2
[[steps]]
op = "touch"
region = "a"
[[steps]]
op = "madvise"
region = "a"
advice = "collapse"
expect = "ok"
[[steps]]
op = "wait_scans"
count = 1
label = "after"
""", "p.toml")

VMA = [1099511627776, 1099515822080, 4096, 0, 2048, 1, "rd wr mr mw me ac hg "]
RECORDED = "\n".join([
    '{"event":"start","version":1,"pid":321,"regions":1,"steps":3,"no_sysfs":false,"time_ns":5}',
    '{"event":"setting","step":-1,"path":"enabled","value":"madvise","errno":0,"skipped":false,'
    '"time_ns":6}',
    '{"event":"trace","enabled":true,"events":4,"errno":0,"clock":"mono"}',
    '{"event":"beacon","proc":"parent","pid":321,"ret":-1,"errno":22,"time_ns":7}',
    '{"event":"region","region":0,"start":1099511627776,"pages":1024}',
    '{"event":"checkpoint","step":-1,"time_ns":8,"counters":{"thp_collapse_alloc":7,'
    '"pages_collapsed":3,"full_scans":10},"procs":[{"proc":"parent","pid":321,"regions":[{"region":0,'
    '"start":1099511627776,"vmas":[],"pmd_method":"pagemap_scan","huge_pmds":[],"zero_pmds":[]}]}]}',
    '{"event":"step","step":0,"proc":"parent","op":"touch","region":0,"calls":[],"time_ns":9}',
    '{"event":"pfns","step":1,"time_ns":10,"proc":"parent","region":0,"runs":[[0,5000,512],'
    '[512,9000,1]]}',
    '{"event":"step","step":1,"proc":"parent","op":"madvise","region":0,'
    '"calls":[[0,1023,-1,12]],"time_ns":11}',
    '{"event":"wait","step":2,"start":10,"target":11,"reached":12,"timed_out":false,'
    '"elapsed_ms":210,"time_ns":12}',
    '{"event":"checkpoint","step":2,"time_ns":13,"counters":{"thp_collapse_alloc":9,'
    '"pages_collapsed":4,"full_scans":12},"procs":[{"proc":"parent","pid":321,"regions":[{"region":0,'
    f'"start":1099511627776,"vmas":[{json.dumps(VMA)}],"pmd_method":"pagemap_scan",'
    '"huge_pmds":[1],"zero_pmds":[0]}]}]}',
    '{"event":"trace_saved","path":"/root/t","ok":true}',
    '{"event":"end","child_status":0,"restored":12,"time_ns":14}',
])


def test_recorded_run() -> None:
    obs = parse_driver_output(RECORDED, SPEC)
    assert obs.complete and not obs.unparsed and not obs.errors
    assert obs.trace_enabled and obs.trace_saved
    assert obs.beacons == {"parent": (321, 7)}
    assert obs.regions == {"a": 1 << 40}
    assert [c.label for c in obs.checkpoints] == [BASELINE_LABEL, "after"]
    after = obs.checkpoint("after")
    assert after is not None
    assert after.deltas == {"thp_collapse_alloc": 2, "pages_collapsed": 1, "full_scans": 2}
    a = after.procs["parent"]["a"]
    assert (a.anon_huge_kb, a.rss_kb, a.swap_kb) == (2048, 4096, 0)
    assert a.huge_pmds == (1,) and a.zero_pmds == (0,)
    assert a.vmas[0].thp_eligible and "hg" in a.vmas[0].flags
    assert a.pmd_address(1) == (1 << 40) + (2 << 20)
    madv = obs.step_result(1)
    assert madv is not None and madv.result == "ENOMEM" and madv.expected == "ok"
    assert madv.region == "a"
    assert obs.step_result(2).result == "ok"  # type: ignore[union-attr]
    assert obs.pfn_maps[0].runs == ((0, 5000, 512), (512, 9000, 1))
    d = obs.to_dict()
    assert d["checkpoints"][1]["procs"]["parent"]["a"]["anon_huge_kb"] == 2048
    json.dumps(d)


def test_without_spec_uses_indices() -> None:
    obs = parse_driver_output(RECORDED)
    assert obs.regions == {"region0": 1 << 40}
    assert [c.label for c in obs.checkpoints] == [BASELINE_LABEL, "step2"]


def test_bad_lines_are_kept_not_fatal() -> None:
    text = RECORDED.replace('"huge_pmds":[1]', '"huge_pmds":["x"]') + "\nnot json\n[1,2]\n"
    text += '{"event":"region","region":5,"start":1,"pages":1}\n{"event":"mystery"}\n'
    obs = parse_driver_output(text, SPEC)
    assert len(obs.unparsed) == 5
    assert [c.label for c in obs.checkpoints] == [BASELINE_LABEL]
    assert any("region index 5" in u for u in obs.unparsed)


def test_timeout_and_error_events() -> None:
    text = ('{"event":"wait","step":2,"start":1,"target":3,"reached":1,"timed_out":true,'
            '"elapsed_ms":30000,"time_ns":1}\n'
            '{"event":"error","line":4,"message":"unknown op"}\n')
    obs = parse_driver_output(text, SPEC)
    assert obs.step_result(2).result == "timeout"  # type: ignore[union-attr]
    assert obs.errors == ["line 4: 'unknown op'"] and not obs.complete


def test_errno_name() -> None:
    assert errno_name(22) == "EINVAL" and errno_name(99999) == "E99999"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
events = st.sampled_from(["start", "setting", "trace", "trace_saved", "region", "checkpoint",
                          "step", "fork", "wait", "pfns", "beacon", "error", "end", "x"])


@st.composite
def event_lines(draw: st.DrawFn) -> str:
    obj = draw(st.dictionaries(st.sampled_from(
        ["step", "proc", "op", "region", "calls", "counters", "procs", "runs", "pid", "start",
         "time_ns", "timed_out", "path", "value", "errno", "child_pid", "ok", "enabled"]),
        json_values, max_size=8))
    obj["event"] = draw(events)
    return json.dumps(obj)


@settings(max_examples=300)
@given(st.lists(event_lines() | st.text(max_size=40), max_size=12))
def test_garbage_never_crashes(lines: list[str]) -> None:
    text = "\n".join(lines)
    for spec in (SPEC, None):
        obs = parse_driver_output(text, spec)
        assert len(obs.unparsed) <= text.count("\n") + 1


@given(st.lists(st.sampled_from(RECORDED.splitlines()), max_size=20), st.randoms())
def test_shuffled_and_truncated_recorded_lines(lines: list[str], rnd) -> None:  # type: ignore[no-untyped-def]
    cut = [ln[: rnd.randint(0, len(ln))] for ln in lines]
    parse_driver_output("\n".join(lines), SPEC)
    parse_driver_output("\n".join(cut), SPEC)


def test_trace_line_says_how_many_events_were_on_from_boot() -> None:
    line = '{"event":"trace","enabled":true,"events":5,"already_on":5,"errno":0,"clock":"mono"}'
    obs = parse_driver_output(line)
    assert (obs.trace_enabled, obs.trace_events, obs.trace_already_on) == (True, 5, 5)
    older = parse_driver_output('{"event":"trace","enabled":true,"events":4,"errno":0}')
    assert (older.trace_events, older.trace_already_on) == (4, 0)  # a driver before already_on
