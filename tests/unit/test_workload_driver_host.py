"""Compile driver/thpwork.c and run it on the host in --no-sysfs mode.

A real test of the C parser and the mmap/touch/madvise/fork logic; it never
writes sysfs or tracefs (--no-sysfs) and only reads counters. The host's own
khugepaged may collapse the test's regions, so nothing here depends on it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import proc
from orchestrator.data import WORKLOAD_SPECS_DIR
from orchestrator.spec import parse_spec
from orchestrator.suites.workloads.driver import driver_binary, driver_input
from orchestrator.suites.workloads.observation import parse_driver_output

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

TINY = """
format = 1
name = "tiny"
[settings]
max_ptes_none = 256
[[regions]]
name = "a"
pmds = 1
[[regions]]
name = "b"
pages = 100
offset_pages = 3
[[steps]]
op = "touch"
region = "a"
pages = "0-9,20-29"
[[steps]]
op = "checkpoint"
label = "touched"
[[steps]]
op = "madvise"
region = "b"
advice = "collapse"
expect = "EINVAL"
[[steps]]
op = "fork"
[[steps]]
op = "touch"
proc = "child"
region = "b"
pages = { random = 10, seed = 5 }
[[steps]]
op = "mprotect"
proc = "child"
region = "b"
pages = "0-1,50"
prot = "r"
[[steps]]
op = "touch"
region = "b"
access = "read"
pages = "90-99"
[[steps]]
op = "madvise"
region = "a"
advice = "dontneed"
pages = "5-9"
[[steps]]
op = "munmap"
region = "b"
pages = "0-9"
[[steps]]
op = "set"
set = { max_ptes_none = 511 }
[[steps]]
op = "wait_scans"
count = 10000
timeout_s = 0.05
label = "waited"
[[steps]]
op = "sleep"
ms = 1
[[steps]]
op = "checkpoint"
label = "end"
"""


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The driver built into a private cache, for this module only (a cache switched for
    good would send every later test, the integration tests included, to it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THPVM_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield driver_binary()


def _run(binary: Path, tmp_path: Path, text: str, *extra: str) -> proc.Result:
    inp = tmp_path / "in.txt"
    inp.write_text(text)
    return proc.run([binary, "--no-sysfs", *extra, inp], timeout=60, check=False)


def test_build_is_cached(binary: Path) -> None:
    assert binary.exists() and binary.stat().st_mode & 0o111
    assert driver_binary() == binary


def test_tiny_spec_runs_on_host(binary: Path, tmp_path: Path) -> None:
    spec = parse_spec(TINY, "tiny.toml")
    res = _run(binary, tmp_path, driver_input(spec), "--beacon")
    assert res.returncode == 0, res.output
    obs = parse_driver_output(res.output, spec)
    assert obs.complete and not obs.errors and not obs.unparsed
    assert [c.label for c in obs.checkpoints] == ["@start", "touched", "waited", "end"]
    # no khugepaged collapses on the host: every checkpoint is consistent at the first read
    assert all(c.consistent and c.reads == 1 for c in obs.checkpoints)
    assert set(obs.regions) == {"a", "b"}
    assert obs.regions["b"] % (2 << 20) == 3 * 4096
    # every initial knob is reported as skipped, none written
    assert obs.settings and all(s["skipped"] for s in obs.settings)
    touched = obs.checkpoint("touched")
    assert touched is not None
    a = touched.procs["parent"]["a"]
    assert a.rss_kb == 20 * 4 and a.swap_kb == 0 and a.pmd_method == "pagemap_scan"
    assert touched.procs["parent"]["b"].rss_kb == 0
    results = {s.step: s.result for s in obs.steps}
    assert results[2] == "EINVAL"  # MADV_COLLAPSE of a never-written VMA
    assert obs.step_result(2).expected == "EINVAL"  # type: ignore[union-attr]
    mprotect = obs.step_result(5)
    assert mprotect is not None and mprotect.proc == "child" and mprotect.region == "b"
    assert results[5] == "ok" and len(mprotect.calls) == 2  # mprotect 0-1 and 50-50
    assert results[10] == "timeout"  # wait_scans 1e6 scans in 50 ms
    assert "child" in obs.pids and obs.pids["child"] != obs.pids["parent"]
    end = obs.checkpoint("end")
    assert end is not None
    child_b = end.procs["child"]["b"]
    assert child_b.rss_kb == 40  # the child's 10 written pages
    # r (0-1) | rw | r (50) | rw
    assert [v.flags[:2] for v in child_b.vmas] == [("rd", "mr"), ("rd", "wr")] * 2
    assert end.procs["parent"]["b"].vmas[0].start == obs.regions["b"] + 10 * 4096  # munmap 0-9
    assert end.procs["parent"]["a"].rss_kb <= 15 * 4 or end.procs["parent"]["a"].huge_pmds
    assert {b for b in obs.beacons} == {"parent", "child"}
    assert {m.proc for m in obs.pfn_maps} == {"parent", "child"}


def test_output_lines_are_json(binary: Path, tmp_path: Path) -> None:
    spec = parse_spec(TINY, "tiny.toml")
    res = _run(binary, tmp_path, driver_input(spec))
    for line in res.output.splitlines():
        assert isinstance(json.loads(line), dict)


@pytest.mark.parametrize("bad, message", [
    ("", "first line"),
    ("thpwork 2\n", "first line"),
    ("thpwork 1\nregion 0 0x10000000000 512 rw\nstep 0 parent frobnicate\n", "unknown op"),
    ("thpwork 1\nregion 0 0x10000000000 512 rw\nstep 0 parent touch 0 write 0-512\n",
     "range end"),
    ("thpwork 1\nregion 0 0x10000000000 512 rw\nstep 0 parent touch 0 write 9-3\n", "range end"),
    ("thpwork 1\nregion 0 0x10000000000 512 rw\nstep 0 parent touch 1 write 0-1\n", "region"),
    ("thpwork 1\nregion 0 0x10000000001 512 rw\nstep 0 parent checkpoint\n", "aligned"),
    ("thpwork 1\nregion 0 0x10000000000 99999999 rw\nstep 0 parent checkpoint\n", "pages"),
    ("thpwork 1\nset ../../etc/passwd x\nregion 0 0x10000000000 1 rw\nstep 0 parent checkpoint\n",
     "sysfs knob"),
    ("thpwork 1\nset enabled a;b\nregion 0 0x10000000000 1 rw\nstep 0 parent checkpoint\n",
     "sysfs value"),
    ("thpwork 1\nregion 0 0x10000000000 1 rw\nstep 1 parent checkpoint\n", "out of order"),
    ("thpwork 1\nregion 0 0x10000000000 1 rw\nstep 0 parent sleep -5\n", "sleep ms"),
    ("thpwork 1\nregion 0 0x10000000000 1 rw\nstep 0 parent checkpoint extra\n", "extra"),
    ("thpwork 1\nregion 0 0x10000000000 1 rw\n", "no region or no step"),
])
def test_bad_input_is_rejected_with_line(binary: Path, tmp_path: Path, bad: str,
                                         message: str) -> None:
    res = _run(binary, tmp_path, bad)
    assert res.returncode == 2, res.output
    last = json.loads(res.output.splitlines()[-1])
    assert last["event"] == "error" and message in last["message"]
    if bad.count("\n") >= 3:
        assert last["line"] >= 2


def test_child_step_before_fork_fails_cleanly(binary: Path, tmp_path: Path) -> None:
    text = "thpwork 1\nregion 0 0x10000000000 1 rw\nstep 0 child touch 0 write 0-0\n"
    res = _run(binary, tmp_path, text)
    assert res.returncode == 3
    assert json.loads(res.output.splitlines()[-1])["message"] == "child step before fork"


BUILTIN = sorted(WORKLOAD_SPECS_DIR.glob("*.toml"))


@pytest.mark.parametrize("path", BUILTIN, ids=[p.stem for p in BUILTIN])
def test_builtin_workloads_pass_the_c_parser(binary: Path, tmp_path: Path, path: Path) -> None:
    from orchestrator.spec import load_spec

    spec = load_spec(path)
    res = _run(binary, tmp_path, driver_input(spec), "--check")
    assert res.returncode == 0, res.output
    ok = json.loads(res.output.splitlines()[-1])
    assert ok == {"event": "input_ok", "regions": len(spec.regions), "steps": len(spec.steps)}
