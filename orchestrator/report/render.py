"""The reports of a run directory: result.json, junit.xml and report.html.

`write_reports` is the pipeline's last step; `regenerate` rebuilds all three
from RUN_DIR/result.json alone (`thpvm report RUN_DIR`); `list_runs` backs
`thpvm runs`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.cache import cache_root, write_json
from orchestrator.errors import UserError
from orchestrator.report.html import render_html
from orchestrator.report.junit import to_junit_xml
from orchestrator.report.resultfile import (
    RESULT_NAME,
    ResultSchemaError,
    load_result,
    validate_result,
    write_result,
)

log = logging.getLogger(__name__)

JUNIT_NAME = "junit.xml"
HTML_NAME = "report.html"
INVALID_NAME = "result.invalid.json"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_reports(run_dir: Path, result: dict[str, Any]) -> None:
    """Validate `result`, then write result.json, junit.xml and report.html into `run_dir`.

    An invalid result (a thpvm bug) is kept as result.invalid.json for
    debugging and `ResultSchemaError` is raised; nothing else is written.
    """
    run_dir = Path(run_dir)
    try:
        validate_result(result)
    except ResultSchemaError:
        write_json(run_dir / INVALID_NAME, result)
        log.error("invalid result kept in %s", run_dir / INVALID_NAME)
        raise
    write_result(run_dir, result)
    _write_text(run_dir / JUNIT_NAME, to_junit_xml(result))
    _write_text(run_dir / HTML_NAME, render_html(result, run_dir))
    log.info("reports written: %s/{%s,%s,%s}", run_dir, RESULT_NAME, JUNIT_NAME, HTML_NAME)


def regenerate(run_dir: Path) -> dict[str, Any]:
    """Rebuild junit.xml and report.html from RUN_DIR/result.json; returns the result.

    `UserError` naming the path when result.json is missing or invalid.
    """
    run_dir = Path(run_dir)
    result = load_result(run_dir)
    _write_text(run_dir / JUNIT_NAME, to_junit_xml(result))
    _write_text(run_dir / HTML_NAME, render_html(result, run_dir))
    return result


@dataclass
class RunInfo:
    """One run directory as `thpvm runs` lists it.

    `verdict` is the result's verdict, or 'incomplete' (no result.json: the run
    was interrupted or is still going) or 'invalid' (unreadable result.json).
    """

    run_id: str
    path: Path
    verdict: str
    exit_code: int | None
    started: str
    kernel_release: str
    reason: str
    mtime: float


    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for `thpvm runs --json`)."""
        return {"run_id": self.run_id, "path": str(self.path), "verdict": self.verdict,
                "exit_code": self.exit_code, "started": self.started,
                "kernel_release": self.kernel_release, "reason": self.reason}


def resolve_run_dir(name: str | Path, root: Path | None = None) -> Path:
    """A run directory given as a path, or as a run id under `root` (the
    cache's runs/ by default, as `thpvm runs` lists them); `UserError` if neither."""
    path = Path(name)
    if path.is_dir():
        return path
    if root is None:
        root = cache_root() / "runs"
    candidate = root / str(name)
    if path.name == str(name) and candidate.is_dir():
        return candidate
    raise UserError(f"no run directory {name} (neither a directory nor a run id under {root})")


def _run_info(path: Path) -> RunInfo:
    mtime = path.stat().st_mtime
    base = RunInfo(path.name, path, "incomplete", None, "", "", "", mtime)
    result_path = path / RESULT_NAME
    if not result_path.is_file():
        return base
    try:
        data = json.loads(result_path.read_text(encoding="utf-8"))
        meta = data.get("metadata") or {}
        return RunInfo(path.name, path, str(data["verdict"]),
                       data.get("exit_code"), str(meta.get("started") or ""),
                       str(meta.get("kernel_release") or ""), str(data.get("reason") or ""),
                       result_path.stat().st_mtime)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.debug("unreadable %s: %s", result_path, e)
        base.verdict = "invalid"
        base.reason = f"unreadable {RESULT_NAME}"
        return base


def list_runs(root: Path, limit: int | None = None) -> list[RunInfo]:
    """Run directories under `root` (cache_dir("runs") by default), newest first."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"no runs directory: {root}")
    with os.scandir(root) as entries:
        dirs = [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]
    runs = sorted((_run_info(d) for d in dirs), key=lambda r: (r.mtime, r.run_id), reverse=True)
    return runs[:limit] if limit is not None else runs


def format_runs(runs: list[RunInfo]) -> str:
    """A table of runs for the terminal."""
    if not runs:
        return "no runs yet"
    rows = [("RUN", "VERDICT", "EXIT", "KERNEL", "STARTED", "REASON")]
    for r in runs:
        exit_code = "-" if r.exit_code is None else str(r.exit_code)
        rows.append((r.run_id, r.verdict, exit_code, r.kernel_release or "-",
                     r.started[:19].replace("T", " ") or "-", r.reason[:60]))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True))
             + "  " + row[5] for row in rows]
    return "\n".join(line.rstrip() for line in lines)
