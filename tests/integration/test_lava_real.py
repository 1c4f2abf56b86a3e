"""LAVA end to end, as far as this host allows (see docs/scale.md, "LAVA here"):

`thpvm lava job` builds kernel, image and tools disk and writes a job that lava_common's
schema and `lava-run --validate` accept. The job's test definitions then run on a real
thpvm guest the way LAVA's test shell runs them: each step's output goes to the serial
console, `lava-test-case` prints LAVA's TESTCASE signal, and the console lines become a
LAVA job log (`output.yaml`, lvl target/results entries). `thpvm lava import` turns that
into a run directory that the model judges.

THPVM_RECORD_LAVA=DIR keeps the results directory (it is tests/data/lava/real-guest/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from orchestrator.build import image, kernel
from orchestrator.cli import main
from orchestrator.lava.job import TOOLS_MOUNT
from orchestrator.machine import session
from orchestrator.report.resultfile import load_result

SUITE = ["--suite", "selftest:anon", "--suite", "workloads:thp-never+full-pmd-collapse"]
STUB = """#!/bin/sh
# LAVA's lava-test-case, reduced to the signal it prints on the console
echo "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=$1 RESULT=$3>"
"""
_SIGNAL = re.compile(r"<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=(\S+) RESULT=(\w+)>")


class SerialTail:
    """Time-stamps serial.log lines as they appear (LAVA's `dt` of each target line)."""

    def __init__(self, path: Path) -> None:
        self.path, self.lines, self.done = path, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pos, buf = 0, ""
        while not self.done.is_set() or pos < self.path.stat().st_size:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
            buf += chunk
            *full, buf = buf.split("\n")
            now = datetime.now(UTC).replace(tzinfo=None).isoformat()
            self.lines += [(now, line.rstrip("\r")) for line in full]
            if not chunk:
                time.sleep(0.2)


def lava_log(lines: list[tuple[str, str]], definitions: list[str]) -> str:
    """output.yaml as lava-server stores it: '- {dt, lvl, msg}' per line, a results entry
    per TESTCASE signal (definition '<n>_<name>', as the dispatcher numbers them)."""
    out = []
    for dt, line in lines:
        out.append({"dt": dt, "lvl": "target", "msg": line})
        m = _SIGNAL.search(line)
        if m:
            n = 0 if m.group(1).startswith("selftest-") else 1
            name = definitions[min(n, len(definitions) - 1)]
            out.append({"dt": dt, "lvl": "results",
                        "msg": {"definition": name, "case": m.group(1),
                                "result": m.group(2)}})
    out.append({"dt": lines[-1][0], "lvl": "results",
                "msg": {"definition": "lava", "case": "job", "result": "pass"}})
    return "".join(f"- {json.dumps(e)}\n" for e in out)


def test_lava_job_validates_then_runs_on_a_real_guest_and_imports(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    assert main(["lava", "job", *SUITE, "--out", str(job_dir), "--lava-run-validate"]) == 0
    job = yaml.safe_load((job_dir / "job.yaml").read_text())
    defs = job["actions"][2]["test"]["definitions"]
    names = [f"{i + 1}_{d['name']}" for i, d in enumerate(defs)]

    run_dir = tmp_path / "guest"
    run_dir.mkdir()
    art = kernel.build_kernel(kernel.KernelRequest())
    with session.guest(art.bzimage, image.build_image(), run_dir) as g:
        g.shell.run(f"mkdir -p {TOOLS_MOUNT}")
        for f in sorted((job_dir / "tools").iterdir()):
            g.shell.put(f, f"{TOOLS_MOUNT}/{f.name}", 0o755)
        stub = tmp_path / "lava-test-case"
        stub.write_text(STUB)
        g.shell.put(stub, "/usr/local/bin/lava-test-case", 0o755)
        tail = SerialTail(run_dir / "serial.log")
        tail.thread.start()
        for d in defs:
            for step in d["repository"]["run"]["steps"][1:]:  # [0] mounts LAVA's tools disk
                res = g.shell.run(f"({step}) > /dev/ttyS0 2>&1", timeout=900)
                assert res.exit_code == 0, res.stderr
        time.sleep(1.0)  # the console monitor writes serial.log asynchronously
        tail.done.set()
        tail.thread.join(timeout=30)

    results = Path(os.environ.get("THPVM_RECORD_LAVA") or tmp_path / "results")
    results.mkdir(parents=True, exist_ok=True)
    shutil.copy(job_dir / "job.yaml", results / "job.yaml")
    (results / "output.yaml").write_text(lava_log(tail.lines, names))

    out = tmp_path / "imported"
    code = main(["lava", "import", str(results), "--out", str(out)])
    result = load_result(out)
    assert code == result["exit_code"] == (0 if result["verdict"] == "pass" else 1)
    inv = result["selftest"]["invocations"][0]
    assert inv["argv"] == ["./khugepaged"] and inv["status"] in ("pass", "fail")
    assert inv["counter_deltas"].get("full_scans", 0) >= 0 and inv["cases"]
    assert {w["name"] for w in result["workloads"]} == {"thp-never", "full-pmd-collapse"}
    assert all(w["verdict"] in ("match", "mismatch") for w in result["workloads"])
