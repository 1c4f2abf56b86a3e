"""Run a workload spec in the guest: the driver's input, its static build, upload and run.

Flow: `driver_input(spec)` turns the spec into the driver's line format (page
selectors already expanded to ``A-B`` runs, so the PRNG lives only in spec.py);
`driver_binary()` builds `driver/thpwork.c` once per (source, gcc) into the
cache; `upload_driver` copies it into the guest; `run_workload` uploads the
input, runs the driver as root, saves its output (``driver.jsonl``), the trace
(``trace.txt``) and ``observed.json`` into the run directory, and returns the
parsed `Observation`.

A driver that crashes, times out or stops early raises `GuestError`; a
madvise that failed is a result (`StepResult.result`), not an exception.
"""

from __future__ import annotations

import logging
import math
import posixpath
import shlex
from pathlib import Path

from orchestrator import proc
from orchestrator.cache import cache_dir, digest, locked, seal, verify, write_json
from orchestrator.data import DRIVER_SOURCE
from orchestrator.errors import BuildError, GuestError
from orchestrator.machine.guest import GuestShell, signal_name
from orchestrator.spec import (
    MTHP_KNOB_DEFAULTS,
    SETTINGS_WRITE_ORDER,
    WorkloadSpec,
    layout_addresses,
)
from orchestrator.suites.workloads.observation import Observation, parse_driver_output
from orchestrator.suites.workloads.trace import format_dump_command

log = logging.getLogger(__name__)

CFLAGS = ("-static", "-O2", "-Wall", "-Wextra")
DEFAULT_REMOTE = "/root/thpwork"
INPUT_VERSION = "thpwork 1"

#: spec knob -> path under /sys/kernel/mm/transparent_hugepage/ (the driver's whitelist)
KNOB_PATHS: dict[str, str] = {
    "enabled": "enabled",
    "defrag": "defrag",
    "use_zero_page": "use_zero_page",
    "khugepaged_defrag": "khugepaged/defrag",
    "pages_to_scan": "khugepaged/pages_to_scan",
    "scan_sleep_millisecs": "khugepaged/scan_sleep_millisecs",
    "alloc_sleep_millisecs": "khugepaged/alloc_sleep_millisecs",
    "max_ptes_none": "khugepaged/max_ptes_none",
    "max_ptes_swap": "khugepaged/max_ptes_swap",
    "max_ptes_shared": "khugepaged/max_ptes_shared",
    **{k: k for k in MTHP_KNOB_DEFAULTS},  # hugepages-<N>kB/enabled
}


# --------------------------------------------------------------------------- input


def page_runs(pages: list[int]) -> str:
    """Sorted page indices as the driver's RANGES token: "0-3,8-8", or "-" if empty."""
    runs: list[tuple[int, int]] = []
    for p in pages:
        if runs and p == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return ",".join(f"{a}-{b}" for a, b in runs) or "-"


def _knob_tokens(settings: dict[str, str | int]) -> list[tuple[str, str]]:
    """(sysfs path, value) in spec.SETTINGS_WRITE_ORDER, the order the model assumes."""
    unknown = set(settings) - set(SETTINGS_WRITE_ORDER)
    if unknown or set(SETTINGS_WRITE_ORDER) - set(KNOB_PATHS):
        raise ValueError(f"settings {sorted(unknown)} have no sysfs path known to the driver")
    return [(KNOB_PATHS[k], str(settings[k])) for k in SETTINGS_WRITE_ORDER if k in settings]


def _step_line(spec: WorkloadSpec, i: int) -> str:
    step = spec.steps[i]
    head = f"step {i} {step.proc} {step.op}"
    a = step.args
    if step.region is not None:
        ridx = [r.name for r in spec.regions].index(step.region)
        ranges = page_runs(spec.step_pages(step))
        mid = {"touch": a.get("access"), "madvise": a.get("advice"),
               "mprotect": a.get("prot"), "munmap": None, "mmap": None}[step.op]
        return " ".join(x for x in (head, str(ridx), mid, ranges) if x is not None)
    if step.op == "sleep":
        return f"{head} {int(a['ms'])}"
    if step.op == "wait_scans":
        return f"{head} {int(a['count'])} {max(1, math.ceil(float(a['timeout_s']) * 1000))}"
    if step.op == "set":
        pairs = " ".join(f"{p} {v}" for p, v in _knob_tokens(dict(a["set"])))
        return f"{head} {pairs}"
    return head  # fork, checkpoint


def driver_input(spec: WorkloadSpec) -> str:
    """The driver's input for `spec` (format in the header of driver/thpwork.c)."""
    lines = [INPUT_VERSION]
    lines += [f"set {p} {v}" for p, v in _knob_tokens(dict(spec.settings))]
    addrs = layout_addresses(spec)
    for i, r in enumerate(spec.regions):
        later = "" if r.mapped else " later"
        lines.append(f"region {i} {addrs[r.name]:#x} {r.pages} {r.prot}{later}")
    lines += [_step_line(spec, i) for i in range(len(spec.steps))]
    return "\n".join(lines) + "\n"


# The driver's own alarm is a last resort against a stuck driver, never the deadline a slow
# guest meets first: each wait_scans has its timeout_s, and the margins below are for the
# rest. Measured: a 7.2 debug kernel under TCG at host load 16 took 15 s for one
# MADV_COLLAPSE beacon and 35 s from start to the first step (the old 30 s + 2 s a step
# killed dontneed-empty-table's driver with SIGALRM mid-wait).
BUDGET_BASE_S = 120.0
BUDGET_PER_STEP_S = 15.0


def time_budget(spec: WorkloadSpec) -> float:
    """Seconds the driver may run: every wait's timeout and sleep, plus a margin."""
    total = BUDGET_BASE_S + BUDGET_PER_STEP_S * len(spec.steps)
    for s in spec.steps:
        if s.op == "wait_scans":
            total += float(s.args["timeout_s"])
        elif s.op == "sleep":
            total += int(s.args["ms"]) / 1000
    return total


# --------------------------------------------------------------------------- build


def _gcc_version() -> str:
    res = proc.run(["gcc", "--version"], timeout=30, error=BuildError)
    return res.output.splitlines()[0] if res.output else "unknown"


def driver_binary(source: Path = DRIVER_SOURCE) -> Path:
    """The static driver binary, built with gcc on first use and cached by
    (source, gcc version, flags) under cache_dir("tools", ...)."""
    try:
        src = source.read_bytes()
    except OSError as e:
        raise BuildError(f"{source}: cannot read the driver source: {e}") from e
    key = digest(src, _gcc_version(), " ".join(CFLAGS))
    out_dir = cache_dir("tools", f"thpwork-{key}")
    binary = out_dir / "thpwork"
    bad = verify(out_dir)
    if bad is None:
        return binary
    with locked(out_dir.with_name(out_dir.name + ".lock")):  # one builder; others reuse it
        bad = verify(out_dir)
        if bad is None:
            return binary
        if binary.exists():
            log.warning("workload driver cache entry is bad (%s): rebuilding it", bad)
        tmp = out_dir / "thpwork.tmp"
        proc.run(["gcc", *CFLAGS, "-o", tmp, source], log_path=out_dir / "build.log",
                 timeout=300, error=BuildError)
        tmp.replace(binary)
        seal(out_dir, ["thpwork"])
    log.info("built workload driver %s", binary)
    return binary


def upload_driver(shell: GuestShell, remote: str = DEFAULT_REMOTE) -> str:
    """Build (or reuse) the driver and copy it into the guest; returns its remote path."""
    shell.put(driver_binary(), remote, 0o755)
    return remote


# --------------------------------------------------------------------------- run


def _keep_spec(spec: WorkloadSpec, out_dir: Path) -> None:
    """Copy the spec file into the run directory (spec.toml) for offline compare."""
    src = Path(spec.source)
    try:
        if src.is_file():
            (out_dir / "spec.toml").write_bytes(src.read_bytes())
    except OSError as e:
        log.warning("%s: cannot keep a copy of the spec: %s", src, e)


def _driver_failure(obs: Observation, exit_code: int, stdout: str, stderr: str) -> GuestError:
    sig = signal_name(exit_code)
    why = "; ".join(obs.errors) or (
        f"exit status {exit_code}" if exit_code else "output ended before the 'end' event")
    if sig:  # the driver itself crashed (SEGV, OOM kill): name the signal first
        why = f"killed by {sig}; {why}"
    tail = "\n".join((stdout.splitlines() + stderr.splitlines())[-30:])
    return GuestError(f"workload {obs.spec_name!r}: driver failed: {why} (exit {exit_code})",
                      tail)


def run_workload(shell: GuestShell, spec: WorkloadSpec, out_dir: Path,
                 driver_remote: str = DEFAULT_REMOTE) -> Observation:
    """Run `spec` in the guest with the uploaded driver; write spec.toml,
    driver-input.txt, driver.jsonl, trace.txt (when traced) and observed.json
    into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    remote_dir = posixpath.dirname(driver_remote) or "/root"
    remote_in = posixpath.join(remote_dir, f"thpwork-{spec.name}.in")
    remote_trace = posixpath.join(remote_dir, f"thpwork-{spec.name}.trace")
    local_in = out_dir / "driver-input.txt"
    local_in.write_text(driver_input(spec))
    _keep_spec(spec, out_dir)
    shell.put(local_in, remote_in, 0o644)
    budget = time_budget(spec)
    cmd = " ".join(shlex.quote(x) for x in (
        driver_remote, "--timeout", str(math.ceil(budget)), "--trace-out", remote_trace,
        remote_in))
    log.info("workload %s: running driver (budget %.0f s)", spec.name, budget)
    res = shell.run(cmd, timeout=budget + 30)
    (out_dir / "driver.jsonl").write_text(res.stdout)
    if res.stderr:
        (out_dir / "driver.stderr").write_text(res.stderr)
    obs = parse_driver_output(res.stdout, spec)
    if obs.unparsed:
        log.warning("workload %s: %d driver lines not understood", spec.name, len(obs.unparsed))
    if res.exit_code != 0 or not obs.complete:
        raise _driver_failure(obs, res.exit_code, res.stdout, res.stderr)
    if obs.trace_saved:
        shell.get(remote_trace, out_dir / "trace.txt")
        _save_trace_format(shell, out_dir)
    write_json(out_dir / "observed.json", obs.to_dict())
    return obs


def _save_trace_format(shell: GuestShell, out_dir: Path) -> None:
    """The guest's huge_memory tracefs format files beside trace.txt (trace-format.txt):
    the trace is parsed by the kernel's own event formats, not assumed ones."""
    res = shell.run(format_dump_command(), timeout=60)
    if res.ok and res.stdout.strip():
        (out_dir / "trace-format.txt").write_text(res.stdout)
    else:
        log.warning("trace formats not read from the guest: %s", res.stderr.strip()[-200:])
