"""Judging an imported LAVA job offline: the same parsers, model and report as vm-test.

The result is assembled in a `vmtest.Run` and written by vmtest's own `_finish`, so an
imported run directory is indistinguishable in shape from a local one (result.json
validated against the schema, junit.xml, report.html).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from orchestrator import cache
from orchestrator.errors import EXIT_COULD_NOT_TEST, EXIT_OK, EXIT_TEST_FAILED, UserError
from orchestrator.jobs import vmtest
from orchestrator.judge import compare, rundir
from orchestrator.judge.entry import result_entry
from orchestrator.lava import results
from orchestrator.lava.job import JOB_NAME
from orchestrator.lava.results import Block, LavaLog, snapshot_of
from orchestrator.machine.console import classify_log
from orchestrator.model import predict
from orchestrator.spec import load_workload
from orchestrator.suites import counters
from orchestrator.suites.selftest import output as selftest_output
from orchestrator.suites.workloads import runner
from orchestrator.suites.workloads.observation import parse_driver_output

log = logging.getLogger(__name__)


def judge(run_dir: Path, job: dict[str, Any], found: list[Block], lg: LavaLog,
          events: list[dict[str, Any]]) -> dict[str, Any]:
    """Build and write result.json for an imported job; returns the result."""
    run = vmtest.Run(run_dir, None)
    meta = job.get("metadata") or {}
    run.meta.update(tree=str(meta.get("thpvm.tree", "")), tree_kind="debian-source",
                    kernel_release=str(meta.get("thpvm.kernel_release", "")),
                    config_hash=str(meta.get("thpvm.config_hash", "")),
                    kernel_key=str(meta.get("thpvm.kernel_key", "")),
                    image_hash=str(meta.get("thpvm.image_hash", "")), accel=None,
                    accel_reason=f"LAVA device type {job.get('device_type', '?')}",
                    host="lava")
    run.events = events
    snaps = {b.name: snapshot_of(b) for b in found if b.kind == "snapshot"}
    _selftest(run, [b for b in found if b.kind == "selftest"], snaps)
    _workloads(run, [b for b in found if b.kind == "workload"], run.meta["kernel_release"])
    _counters(run, [s for s in snaps.values() if s is not None])
    if not found:
        why = "; ".join(lg.errors[-3:]) or "the LAVA log has no thpvm test output"
        return vmtest._finish(run, "could-not-test", EXIT_COULD_NOT_TEST,
                              f"LAVA job did not run thpvm's tests: {why}")
    if run.failures:
        return vmtest._finish(run, "fail", EXIT_TEST_FAILED, "; ".join(run.failures))
    return vmtest._finish(run, "pass", EXIT_OK, "every test passed and matched")


def _selftest(run: vmtest.Run, found: list[Block], snaps: dict[str, Any]) -> None:
    if not found:
        return
    entries, parsed_runs = [], []
    for b in found:
        argv = ["./khugepaged", *b.args.split()]
        text = "\n".join(b.lines) + "\n"
        log_name = f"selftest-{b.name}.log"
        (run.dir / log_name).write_text(text)
        parsed = selftest_output.parse_selftest(text, b.rc, argv)
        parsed_runs.append(parsed)
        before, after = snaps.get(f"before-{b.name}"), snaps.get(f"after-{b.name}")
        entry = parsed.to_invocation_json()
        entry.update(duration=round(b.seconds, 2), log=log_name,
                     counter_deltas=counters.delta(before, after) if before and after else {})
        if not b.closed:
            entry["status"] = "crash"
        entries.append(entry)
        run.durations["selftest"] = round(run.durations.get("selftest", 0) + b.seconds, 2)
        if entry["status"] in ("fail", "crash"):
            run.failures.append(f"selftest {' '.join(argv)}: {entry['status']}")
    run.selftest = {"invocations": entries, "summary": selftest_output.summarize(parsed_runs)}


def _workloads(run: vmtest.Run, found: list[Block], version: str) -> None:
    for b in found:
        try:
            spec = load_workload(b.name)
        except UserError as e:
            log.warning("workload %s: %s", b.name, e.message)
            continue
        out = run.dir / "workloads" / spec.name
        out.mkdir(parents=True, exist_ok=True)
        (out / "spec.toml").write_bytes(Path(spec.source).read_bytes())
        text = "\n".join(b.lines) + "\n"
        (out / "driver.jsonl").write_text(text)
        obs = parse_driver_output(text, spec)
        if not b.closed or b.rc != 0 or not obs.complete:
            entry = runner.error_entry(spec, "; ".join(obs.errors) or
                                       f"driver ended without 'end' (rc {b.rc})")
        else:
            pred = predict(spec, version=version or "6.12")
            verdict = compare.compare(pred, obs, spec, None)
            rundir.write_verdict(out, pred, verdict)
            entry = result_entry(spec, obs, pred, verdict, round(b.seconds, 2))
        run.workloads.append(entry)
        run.durations["workloads"] = round(run.durations.get("workloads", 0) + b.seconds, 2)
        if entry["verdict"] != "match":
            run.failures.append(f"workload {spec.name}: {entry['verdict']}")


def _counters(run: vmtest.Run, snaps: list[Any]) -> None:
    if len(snaps) < 2:
        return
    before, after = snaps[0], snaps[-1]
    delta = counters.delta(before, after)
    run.counters = {"before": before.counters(), "after": after.counters(), "delta": delta}
    counters.write_counters_json(run.dir / "counters.json", {"before": before, "after": after},
                                 {"run": delta}, {})


def import_results(results_dir: Path, out: Path | None = None) -> tuple[int, Path]:
    """Turn RESULTS_DIR into a judged run directory; (exit code, run directory)."""
    job_path, log_path = results_dir / JOB_NAME, results_dir / results.LOG_NAME
    if not log_path.is_file():
        raise UserError(f"{results_dir}: no {results.LOG_NAME} (the LAVA job log)")
    job = results.load_yaml(job_path) if job_path.is_file() else {}
    lg = results.read_log(log_path)
    run_dir = out or cache.new_run_dir("lava-import")
    run_dir.mkdir(parents=True, exist_ok=True)
    serial = "\n".join(line for _, line in lg.target) + "\n"
    (run_dir / "serial.log").write_text(serial)
    found = results.blocks(lg.target)
    events = [e.to_json() for e in classify_log(serial)]
    result = judge(run_dir, job, found, lg, events)
    code = {"pass": EXIT_OK, "fail": EXIT_TEST_FAILED}.get(result["verdict"],
                                                          EXIT_COULD_NOT_TEST)
    return code, run_dir
