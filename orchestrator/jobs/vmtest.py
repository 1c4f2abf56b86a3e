"""The main job: build (or reuse) kernel and image, boot, run the khugepaged
selftest and the workloads, collect counters, compare with the model, and end
with result.json / junit.xml / report.html and an exit code.

`run_vm_test` is what `thpvm vm-test`, `thpvm bisect-step` and `thpvm validate`
call. It returns exit code 0 (all passed and matched) or 1 (a test failed, a
workload mismatched, or the kernel crashed or hung: during a test, or between
tests while thpvm uploads, samples or snapshots counters) and raises
UserError / InfraError otherwise, after writing what the run produced.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator import __version__, cache
from orchestrator.build import image, kernel
from orchestrator.build.kernel import KernelRequest
from orchestrator.errors import (
    EXIT_OK,
    EXIT_TEST_FAILED,
    GuestError,
    GuestLost,
    GuestTimeout,
    ThpvmError,
    UserError,
)
from orchestrator.judge.rundir import judge_workload
from orchestrator.machine import qemu, session
from orchestrator.machine.guest import signal_name
from orchestrator.machine.health import Diagnosis
from orchestrator.report import render as report
from orchestrator.report.progress import Progress
from orchestrator.report.resultfile import SCHEMA_VERSION
from orchestrator.spec import check_fits
from orchestrator.suites import counters
from orchestrator.suites.selftest import output as selftest_output
from orchestrator.suites.selftest import runner as selftest
from orchestrator.suites.workloads import runner as workload_suite

log = logging.getLogger(__name__)

ARTIFACTS = {"serial_log": "serial.log", "dmesg": "dmesg.txt", "config": "config",
             "counters": "counters.json"}



DEFAULT_SUITE = ("selftest", "workloads")


@dataclass
class VmTestRequest:
    """The one request type: the kernel to build and what to run on it, where to write.

    `vm-test` and `workload run` fill it from the command line; `bisect-step` and
    `validate` keep one as the template of every run and swap the tree (`for_tree`).
    """

    kernel: KernelRequest = field(default_factory=KernelRequest)
    suite: list[str] = field(default_factory=lambda: list(DEFAULT_SUITE))
    workload_files: list[Path] = field(default_factory=list)
    accel: str = "auto"
    append: str = ""
    out: Path | None = None
    isolation: str = "guest"  # "guest": a fresh guest per workload; "shared": one guest
    allow_warn: list[str] = field(default_factory=list)  # regexes of tolerated kernel warnings
    machine: str = "default"  # machine profile (machine/profiles/<name>.toml or a path)

    def for_tree(self, tree: Path, out: Path | None) -> VmTestRequest:
        """The same test of `tree` as checked out (no revision, no patches), into `out`."""
        kernel = replace(self.kernel, tree=tree, rev=None, patches=[])
        return replace(self, kernel=kernel, out=out)


ISOLATION_MODES = ("guest", "shared")


@dataclass
class VmTestOutcome:
    """The verdict of a run: its exit code, run directory and result dict."""

    exit_code: int
    run_dir: Path
    result: dict[str, Any]


@dataclass
class Suite:
    """Which parts to run. None = not at all."""

    selftest: list[str] | str | None = None  # "default", "full" or invocation ids
    workloads: list[str] | str | None = None  # "builtin" or names


def suite_items(values: list[str] | None) -> list[str]:
    """`--suite a,b --suite c` -> ['a', 'b', 'c'] (empty: the default suite is meant)."""
    return [s.strip() for v in values or [] for s in v.split(",") if s.strip()]


def parse_suite(items: list[str]) -> Suite:
    """Parse --suite values: selftest, selftest-full, selftest:ID,..., workloads,
    workloads:NAME,..., all (= selftest + workloads)."""
    s = Suite()
    for item in suite_items(items):
        name, colon, rest = item.partition(":")
        if colon and name in ("all", "selftest-full"):
            raise UserError(f"--suite {item}: {name} takes no ':' list")
        if name == "all":
            s.selftest, s.workloads = "default", "builtin"
        elif name == "selftest" and colon:
            s.selftest = (s.selftest if isinstance(s.selftest, list) else []) + _names(item, rest)
        elif name in ("selftest", "selftest-full"):
            s.selftest = "full" if name.endswith("full") else "default"
        elif name == "workloads" and colon:
            s.workloads = (s.workloads if isinstance(s.workloads, list) else []) \
                + _names(item, rest)
        elif name == "workloads":
            s.workloads = "builtin"
        else:
            raise UserError(f"--suite {item}: expected selftest, selftest-full, "
                            "selftest:ID[+ID], workloads, workloads:NAME[+NAME] or all")
    return s


def _names(item: str, rest: str) -> list[str]:
    names = rest.split("+")
    if not all(names):
        raise UserError(f"--suite {item}: expected a '+'-separated list of names after ':'")
    return names


def check_inputs(req: VmTestRequest) -> Suite:
    """Every input that can be checked before a build or boot (UserError naming the file
    and key): the suite, selftest ids, workload names and specs (and that they fit the
    guest), kconfig fragments, patches. vm-test, bisect and validate call it first."""
    suite = parse_suite(req.suite)
    if isinstance(suite.selftest, list):
        selftest.check_ids(selftest.load_matrix(), suite.selftest)
    memory_mb = qemu.load_machine_profile(req.machine).memory_mb
    for spec in workload_suite.select(suite.workloads, req.workload_files):
        check_fits(spec, memory_mb)
    kernel.load_fragments(req.kernel.fragments, req.kernel.configs)
    compile_allow_warn(req.allow_warn)
    for p in req.kernel.patches:
        if not p.is_file():
            raise UserError(f"--patch {p}: no such file")
    return suite


class Run:
    """The run directory and the result being assembled in it."""

    def __init__(self, out: Path | None, display: Progress | None) -> None:
        self.dir = out if out else cache.new_run_dir("vm-test")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.display = display
        self.progress: Callable[[str], None] = display.update if display else (lambda t: None)
        self.durations: dict[str, float] = {}
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.meta: dict[str, Any] = {
            "tree": "", "tree_kind": "plain", "revision": None, "kernel_release": "",
            "config_hash": "", "kernel_key": "", "image_hash": "", "qemu_version": "",
            "accel": "tcg", "accel_reason": "", "host": socket.gethostname(),
            "thpvm_version": __version__, "started": self.started, "finished": "",
            "durations": self.durations,
        }
        self.selftest: dict[str, Any] | None = None
        self.workloads: list[dict[str, Any]] = []
        self.counters: dict[str, Any] = {"before": {}, "after": {}, "delta": {}}
        self.series: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.failures: list[str] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage into metadata.durations (and show it on the display)."""
        start = time.monotonic()
        try:
            if self.display is None:
                yield
            else:
                with self.display.stage(name):
                    yield
        finally:
            self.durations[name] = round(self.durations.get(name, 0) + time.monotonic() - start, 2)


def run_vm_test(req: VmTestRequest, progress: Progress | None = None) -> VmTestOutcome:
    """Run the whole job; see the module docstring for the exit-code contract.
    `progress` is a display for stage lines and a moving status line, or None."""
    suite = check_inputs(req)
    allowed = compile_allow_warn(req.allow_warn)
    run = Run(req.out, progress)
    try:
        _pipeline(req, suite, run)
        _judge_warnings(run, allowed)
    except ThpvmError as e:
        verdict = "bad-input" if isinstance(e, UserError) else "could-not-test"
        _finish(run, verdict, e.exit_code, e.message, e.detail)
        raise
    code = EXIT_TEST_FAILED if run.failures else EXIT_OK
    verdict = "fail" if run.failures else "pass"
    reason = "; ".join(run.failures) if run.failures else "every test passed and matched"
    result = _finish(run, verdict, code, reason)
    return VmTestOutcome(code, run.dir, result)


def _pipeline(req: VmTestRequest, suite: Suite, run: Run) -> None:
    with run.stage("build"):
        art = kernel.build_kernel(req.kernel, run.progress)
        run.meta.update(tree=str(art.tree.path), tree_kind=art.tree.kind,
                        revision=art.tree.revision, kernel_release=art.release,
                        config_hash=str(art.metadata.get("config_hash", "")), kernel_key=art.key)
        (run.dir / "config").write_text(art.config.read_text())
        invocations, st_bin = _prepare_selftest(art, suite)
        workloads = workload_suite.for_kernel(_prepare_workloads(suite, req.workload_files),
                                              art.release)
    with run.stage("image"):
        img = image.build_image()
        run.meta.update(image_hash=img.sha256, qemu_version=qemu.qemu_version())
    if req.isolation not in ISOLATION_MODES:
        raise UserError(f"--isolation {req.isolation}: expected one of {ISOLATION_MODES}")
    shared = req.isolation == "shared"
    if invocations or (workloads and shared):
        with _guest(req, run, art.bzimage, img, run.dir, "the guest") as g:
            _run_first_guest(g, st_bin, invocations, workloads if shared else [], run)
    if workloads and not shared and not run.meta.get("crashed"):
        with run.stage("workloads"):
            _run_isolated_workloads(req, run, art.bzimage, img, workloads)


@contextmanager
def _guest(req: VmTestRequest, run: Run, bzimage: Path, img: image.Image, where: Path,
           what: str) -> Iterator[session.Guest]:
    """Boot a fresh guest for `what` with its files in `where`; record its boot
    time (the first guest's into metadata) and its console events."""
    if run.display:
        run.display.message(f"[boot] booting {what}")
    where.mkdir(parents=True, exist_ok=True)
    with session.guest(bzimage, img, where, req.accel, req.append, req.machine) as g:
        boot = round(g.boot_seconds + g.ssh_seconds, 2)
        run.meta.setdefault("guest_boots", []).append(boot)
        if "boot_seconds" not in run.meta:
            if run.display:
                run.display.message(f"[boot] {g.accel} guest ready in {g.boot_seconds:.1f} s, "
                                    f"SSH in {g.ssh_seconds:.1f} s ({g.accel_reason})")
            run.durations["boot"] = boot
            run.meta.update(accel=g.accel, accel_reason=g.accel_reason,
                            boot_seconds=round(g.boot_seconds, 2),
                            ssh_seconds=round(g.ssh_seconds, 2))
        try:
            yield g
        except GuestError as e:  # from setup steps (uploads, snapshots): ask the authority
            d = g.diagnose()
            if not d.kernel_failure:
                raise _lost(e, d) from e
            # the kernel died between tests: a test failure (1), not infrastructure
            why = e.message if d.summary in e.message else f"{d.summary} ({e.message})"
            run.failures.append(f"kernel {d.kind} in {what}, outside a test: {why}")
            run.meta["crashed"] = True
        finally:
            run.events += [e.to_json() for e in g.vm.console.events] if g.vm.console else []
            if g.lost is not None:
                run.meta["guest_lost"] = g.lost.to_json()


def _run_first_guest(g: session.Guest, st_bin: Path | None,
                     invocations: list[selftest.Invocation], workloads: list[Any],
                     run: Run) -> None:
    """The selftest (and, with --isolation shared, the workloads) in one guest."""
    before = None
    try:
        before = _snapshot(g)
        if invocations:
            with run.stage("selftest"), _sampling(g, run, "selftest"):
                _run_selftest(g, st_bin, invocations, run, before)
        if workloads and not run.meta.get("crashed"):
            with run.stage("workloads"):
                _run_workloads(g, workloads, run)
    finally:
        _record_counters(run, before, _snapshot(g))  # after the selftest entries exist


def _run_isolated_workloads(req: VmTestRequest, run: Run, bzimage: Path, img: image.Image,
                            specs: list[Any]) -> None:
    """Each workload in a guest of its own: khugepaged starts with an empty mm_slot
    list, no history from the selftest or an earlier workload (a slot left at the
    scan cursor by an exited process adds a pass the model cannot know about)."""
    for spec in specs:
        where = run.dir / "workloads" / spec.name
        with _guest(req, run, bzimage, img, where, f"a fresh guest for {spec.name}") as g:
            _run_workloads(g, [spec], run)
        workload_suite.drop_guest_disks(where)
        if run.meta.get("crashed"):
            break


@contextmanager
def _sampling(g: session.Guest, run: Run, label: str) -> Iterator[None]:
    """A 250 ms counter time series in the guest while the block runs (not during
    workloads: their checkpoints are their time series, and the sampler's processes
    would perturb the timing the model reasons about)."""

    sampler = counters.start_sampler(g.shell)
    try:
        yield
    finally:
        if g.usable():
            try:
                run.series[label] = counters.stop_sampler(g.shell, sampler)
            except (GuestError, counters.CounterFormatError) as e:
                log.warning("counter time series lost: %s", e.message)


def _snapshot(g: session.Guest) -> Any:

    if not g.usable():
        return None
    try:
        return counters.snapshot(g.shell)
    except GuestError as e:
        log.warning("counter snapshot failed: %s", e.message)
        return None


def _record_counters(run: Run, before: Any, after: Any) -> None:

    if before is None or after is None:
        return
    delta = counters.delta(before, after)
    run.counters = {"before": before.counters(), "after": after.counters(), "delta": delta,
                    "mthp": counters.mthp_summary(delta)}
    deltas = {"run": delta}
    for inv in (run.selftest or {}).get("invocations", []):
        deltas["selftest " + " ".join(inv["argv"][1:])] = inv["counter_deltas"]
    counters.write_counters_json(run.dir / "counters.json",
                                 {"before": before, "after": after}, deltas, run.series)


def _prepare_selftest(art: kernel.KernelArtifacts, suite: Suite
                      ) -> tuple[list[selftest.Invocation], Path | None]:
    if suite.selftest is None:
        return [], None
    iface = selftest.detect_interface(art.tree.path, art.config.read_text())
    matrix = selftest.load_matrix()
    if suite.selftest == "default":
        ids: list[str] | None = selftest.default_ids(matrix, art.tree.path, iface)
    elif suite.selftest == "full":
        ids = None
    else:
        ids = list(suite.selftest)
    return selftest.select(matrix, iface, ids), selftest.build_selftest(art)


def _run_selftest(g: session.Guest, binary: Path | None, invocations: list[selftest.Invocation],
                  run: Run, before: Any) -> None:

    assert binary is not None
    selftest.prepare_guest(g.shell, binary, invocations)
    results, parsed_runs = [], []
    for inv in invocations:
        run.progress(f"selftest {inv.id}")
        outcome, parsed, retries = _invoke_with_retries(g, inv, before, run)
        before = outcome.after  # back to back: the next invocation's starting point
        parsed_runs.append(parsed)
        entry = _invocation_entry(outcome, parsed, f"selftest-{inv.id}.log")
        if retries:
            entry["retries"] = retries
        results.append(entry)
        if entry["status"] in ("fail", "crash"):
            why = outcome.error or (entry.get("explanation", "")
                                    if signal_name(outcome.exit_code) else "")
            run.failures.append(f"selftest {' '.join(outcome.argv)}: {entry['status']}"
                                + (f" ({why})" if why else ""))
        if outcome.error:
            run.meta["crashed"] = True
            break
    run.selftest = {"invocations": results,
                    "summary": selftest_output.summarize(parsed_runs)}


def _invoke_with_retries(g: session.Guest, inv: selftest.Invocation, before: Any, run: Run
                         ) -> tuple[selftest.InvocationOutcome, Any, list[dict[str, Any]]]:
    """Run an invocation; while it fails only by one of its known selftest races, run it
    again (each earlier attempt's log is kept and recorded). The last attempt counts."""
    retries: list[dict[str, Any]] = []
    attempt = 0
    while True:
        attempt += 1
        outcome = _invoke(g, inv, before)
        before = outcome.after
        (run.dir / f"selftest-{inv.id}.log").write_text(outcome.output)
        parsed = selftest_output.parse_selftest(outcome.output, outcome.exit_code, outcome.argv)
        race = None if outcome.error else selftest.known_race(inv, parsed, outcome.output)
        if race is None or attempt >= race.attempts:
            if race is not None:
                parsed.notes.append(f"known selftest race {race.id} on all {attempt} "
                                    f"attempts: {race.why}")
            return outcome, parsed, retries
        failed = next(c for c in parsed.cases if c.status in ("fail", "crash"))
        log_name = f"selftest-{inv.id}.attempt{attempt}.log"
        (run.dir / f"selftest-{inv.id}.log").rename(run.dir / log_name)
        log.warning("selftest %s: %s (%s) failed with %r, a known race in the selftest "
                    "(%s): running it again", inv.id, failed.name, failed.context,
                    race.message, race.id)
        retries.append({"attempt": attempt, "log": log_name, "case": failed.name,
                        "context": failed.context, "race": race.id, "why": race.why})


def _invocation_entry(outcome: selftest.InvocationOutcome, parsed: Any,
                      log_name: str) -> dict[str, Any]:
    """The result.json entry of an invocation's last attempt."""
    entry = parsed.to_invocation_json()
    entry.update(duration=round(outcome.duration, 2), log=log_name,
                 counter_deltas=counters.delta(outcome.before, outcome.after)
                 if outcome.before and outcome.after else {})
    if parsed.notes:
        entry["notes"] = list(parsed.notes)
    if outcome.error:
        entry["status"] = "crash"
    elif signal_name(outcome.exit_code):  # the test program crashed: a test failure
        entry["status"] = "fail"
        entry["explanation"] = f"killed by {signal_name(outcome.exit_code)} " \
                               f"(exit status {outcome.exit_code})"
    return entry


def _invoke(g: session.Guest, inv: selftest.Invocation,
            before: Any = None) -> selftest.InvocationOutcome:
    """One invocation; a kernel crash during it becomes a failed outcome, not an error."""
    start = time.monotonic()
    try:
        outcome = selftest.run_invocation(g.shell, inv, before)
    except GuestError as e:
        d = g.diagnose()
        if d.kernel_failure:
            why = d.summary
        elif isinstance(e, GuestTimeout) and d.alive:
            why = e.message  # the guest answers but the test never finished: a failure
        else:
            raise _lost(e, d) from e  # QEMU gone or stopped, SSH lost: infrastructure
        return selftest.InvocationOutcome(inv, selftest.guest_argv(inv), None, e.detail,
                                          time.monotonic() - start, error=why)
    crash = g.kernel_failure()
    if crash is not None:
        outcome.error = f"kernel {crash.kind}: {crash.lines[0]}"
    return outcome


def _lost(e: GuestError, d: Diagnosis) -> GuestError:
    """The infrastructure error for a guest lost without a kernel failure."""
    if d.alive or isinstance(e, GuestLost):
        return e
    why = d.kind if d.summary in e.message else f"{d.kind}: {d.summary}"
    return GuestLost(f"{e.message}: guest lost ({why})",
                      "\n".join(d.lines) or e.detail)


def _prepare_workloads(suite: Suite, files: list[Path]) -> list[Any]:
    if suite.workloads is None and not files:
        return []

    specs = workload_suite.select(suite.workloads, files)
    if specs:
        workload_suite.prepare_driver()
    return specs


def _run_workloads(g: session.Guest, specs: list[Any], run: Run) -> None:

    remote = workload_suite.upload(g.shell)
    for spec in specs:
        run.progress(f"workload {spec.name}")
        try:
            started = time.monotonic()
            out = run.dir / "workloads" / spec.name
            obs = workload_suite.run_one(g.shell, spec, out, remote)
            entry = judge_workload(spec, obs, out, run.meta["kernel_release"], started)
        except GuestError as e:
            d = g.diagnose()
            if not (d.kernel_failure or d.alive):
                raise _lost(e, d) from e  # guest lost without a kernel failure: infra
            entry = workload_suite.error_entry(spec, f"{e.message}\n{e.detail}".strip())
        run.workloads.append(entry)
        if entry["verdict"] != "match":
            why = entry["explanation"].splitlines()[0][:200] if entry["verdict"] == "error" \
                else ""
            run.failures.append(f"workload {spec.name}: {entry['verdict']}"
                                + (f" ({why})" if why else ""))
        if g.kernel_failure() is not None:
            run.failures.append(f"kernel crashed during workload {spec.name}")
            run.meta["crashed"] = True
            break


def compile_allow_warn(patterns: list[str]) -> list[re.Pattern[str]]:
    """--allow-warn regexes, compiled (a bad one is a UserError naming it)."""
    try:
        return [re.compile(p) for p in patterns]
    except re.error as e:
        raise UserError(f"--allow-warn {e.pattern!r}: not a regular expression: {e}") from e


def _judge_warnings(run: Run, allowed: list[re.Pattern[str]]) -> None:
    """A kernel warning on the console (WARN, lockdep, UBSAN: reports that let the run go
    on) fails the run, naming the first one, unless an --allow-warn regex matches one of
    its lines. Crashes (panic, oops/BUG, KASAN, lockups) already failed the test they hit."""
    warnings = [e for e in run.events if e.get("kind") == "warning"]
    failing = [e for e in warnings
               if not any(p.search(line) for p in allowed for line in e.get("lines", []))]
    for e in warnings:
        if e not in failing:
            log.info("kernel warning tolerated by --allow-warn: %s", e["lines"][0][:200])
    if failing:
        more = f" (and {len(failing) - 1} more)" if len(failing) > 1 else ""
        run.failures.append(f"kernel warning: {failing[0]['lines'][0][:200]}{more}")


def _finish(run: Run, verdict: str, code: int, reason: str, detail: str = "") -> dict[str, Any]:

    run.meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run.meta.pop("crashed", None)
    artifacts = {key: name for key, name in ARTIFACTS.items() if (run.dir / name).exists()}
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": run.dir.name, "verdict": verdict,
        "exit_code": code, "reason": reason, "metadata": run.meta, "workloads": run.workloads,
        "counters": run.counters, "console": {"events": run.events},
        "artifacts": artifacts,
    }
    if detail:
        result["detail"] = detail
    if run.selftest is not None:
        result["selftest"] = run.selftest
    report.write_reports(run.dir, result)
    return result

