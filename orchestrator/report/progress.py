"""Console progress for long stages, and the final summary table.

On a terminal a stage prints its start, one moving status line (`update`) and
its end with the elapsed time. In CI (`CI` set to true/1/yes) or when the
stream is not a TTY it is quiet: only the start and end lines of each stage,
so logs stay short and free of carriage returns.

    progress = Progress()
    with progress.stage("build"):
        build_kernel(req, progress.update)   # 'CC mm/khugepaged.o [1234 files]'
    print(format_summary(result))
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from orchestrator.report import resultdata as rd

log = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")


def is_quiet(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """True in CI (CI=true/1/yes) or when `stream` is not a terminal."""
    env = os.environ if env is None else env
    if env.get("CI", "").strip().lower() in _TRUE:
        return True
    isatty = getattr(stream, "isatty", None)
    return not (isatty and isatty())


@dataclass
class StageRecord:
    """A stage that ran: its name, 'running'/'ok'/'failed', and elapsed seconds."""

    name: str
    status: str = "running"
    elapsed: float = 0.0


class Progress:
    """Stage lines and a moving status line; see the module docstring."""

    def __init__(self, stream: TextIO | None = None, quiet: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, min_interval: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = is_quiet(self.stream) if quiet is None else quiet
        self.stages: list[StageRecord] = []
        self._clock = clock
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._current: StageRecord | None = None
        self._started = 0.0
        self._last_update = float("-inf")
        self._line_shown = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _clear_line(self) -> None:
        if self._line_shown:
            self._write("\r\x1b[K")
            self._line_shown = False

    def clear(self) -> None:
        """Erase the moving line (call before printing anything else to the terminal)."""
        with self._lock:
            self._clear_line()

    def message(self, text: str) -> None:
        """Print a permanent line (above the moving line on a TTY)."""
        with self._lock:
            self._clear_line()
            self._write(text + "\n")

    @contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        """Print '[name] started', run the block, print '[name] done in <elapsed>'
        (or 'FAILED after', re-raising). Yields the `StageRecord`."""
        record = StageRecord(name)
        self.stages.append(record)
        start = self._clock()
        self.message(f"[{name}] started")
        previous, previous_start = self._current, self._started
        self._current, self._started = record, start
        try:
            yield record
        except BaseException as e:
            record.status, record.elapsed = "failed", self._clock() - start
            self.message(f"[{name}] FAILED after {rd.format_duration(record.elapsed)} "
                         f"({type(e).__name__})")
            raise
        else:
            record.status, record.elapsed = "ok", self._clock() - start
            self.message(f"[{name}] done in {rd.format_duration(record.elapsed)}")
        finally:
            self._current, self._started = previous, previous_start

    def update(self, text: str) -> None:
        """Replace the moving status line (TTY only, at most every `min_interval` s)."""
        if self.quiet:
            return
        now = self._clock()
        with self._lock:
            if now - self._last_update < self._min_interval:
                return
            self._last_update = now
            line = f"  {text}"
            if self._current:
                elapsed = rd.format_duration(now - self._started)
                line = f"  {self._current.name} {elapsed}  {text}"
            width = shutil.get_terminal_size((100, 24)).columns - 1
            self._write("\r\x1b[K" + line[:width])
            self._line_shown = True

    def durations(self) -> dict[str, float]:
        """Elapsed seconds per finished stage (for result metadata.durations)."""
        out: dict[str, float] = {}
        for s in self.stages:
            if s.status != "running":
                out[s.name] = out.get(s.name, 0.0) + round(s.elapsed, 3)
        return out


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _selftest_lines(result: Mapping[str, Any], width: int, limit: int) -> list[str]:
    summary = (result.get("selftest") or {}).get("summary")
    if not summary:
        return ["selftest   did not run"]
    lines = [f"selftest   {summary['passed']} passed   {summary['failed']} failed   "
             f"{summary['skipped']} skipped"]
    bad = [r for r in rd.iter_cases(result) if r.case["status"] in ("fail", "crash")]
    for ref in bad[:limit]:
        status = ref.case["status"].upper()
        lines.append(_fit(f"  {status:<8} {ref.case_id}  {rd.failure_message(ref.case)}", width))
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more (see report.html)")
    return lines


def _workload_lines(result: Mapping[str, Any], width: int, limit: int) -> list[str]:
    workloads = result["workloads"]
    if not workloads:
        return ["workloads  none ran"]
    c = rd.workload_counts(result)
    lines = [f"workloads  {c['match']} match   {c['mismatch']} mismatch   {c['error']} error"]
    for w in workloads[:limit]:
        verdict = w["verdict"] if w["verdict"] == "match" else w["verdict"].upper()
        note = "" if w["verdict"] == "match" else "  " + w["explanation"]
        lines.append(_fit(f"  {verdict:<8} {w['name']}{note}", width))
    if len(workloads) > limit:
        lines.append(f"  ... and {len(workloads) - limit} more")
    return lines


def _counter_lines(result: Mapping[str, Any]) -> list[str]:
    """Key counter deltas, two per line."""
    deltas = rd.key_counters(result["counters"]["delta"])
    if not deltas:
        return ["counters   not read"]
    width = max(len(name) for name, _ in deltas)
    cells = [f"{name:<{width}} {value:>7}" for name, value in deltas]
    lines = []
    for i in range(0, len(cells), 2):
        head = "counters   " if i == 0 else " " * 11
        lines.append(head + "   ".join(cells[i:i + 2]))
    return lines


def format_summary(result: Mapping[str, Any], run_dir: Path | None = None,
                   width: int = 100, limit: int = 10, detail_lines: int = 8) -> str:
    """The final summary table of a run: selftest counts and failures, workload
    verdicts, key counter deltas, console events, verdict and exit code."""
    meta = result["metadata"]
    title = rd.VERDICT_TITLES[result["verdict"]]
    stages = ", ".join(f"{k} {rd.format_duration(v)}"
                       for k, v in rd.ordered_durations(meta["durations"]))
    revision = (meta.get("revision") or "")[:12]
    lines = ["-" * min(width, 72),
             f"thpvm run {result['run_id']}: {title} (exit code {result['exit_code']})"]
    reason, detail = rd.reason_parts(result)
    if reason:
        lines.append(_fit(f"  {reason}", width))
    lines += [_fit(f"  | {line}", width) for line in detail.splitlines()[-detail_lines:]]
    lines.append(_fit(f"kernel     {meta.get('kernel_release') or 'not built'}  "
                      f"{meta['tree_kind']} {revision}  accel {meta.get('accel') or '-'}", width))
    lines.append(_fit(f"time       {stages or '-'}", width))
    lines += _selftest_lines(result, width, limit)
    lines += _workload_lines(result, width, limit)
    lines += _counter_lines(result)
    for event in rd.console_events(result)[:limit]:
        lines.append(_fit(f"console    {event['kind']}: {rd.event_headline(event)}", width))
    if run_dir is not None:
        lines.append(f"report     {Path(run_dir) / 'report.html'}")
    lines.append(f"verdict    {title}, exit code {result['exit_code']}")
    return "\n".join(lines)
