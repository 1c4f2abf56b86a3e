"""`thpvm lava import RESULTS_DIR`: a LAVA job's results as a thpvm run directory.

RESULTS_DIR holds what LAVA keeps of a job:

* ``output.yaml``: the job log, one entry per line, ``{dt, lvl, msg}`` (lava-server
  stores it as a YAML list, ``- {...}``; `lava-run` prints the bare mappings). Serial
  console lines are ``lvl: target``; test cases are ``lvl: results`` with
  ``msg: {definition, case, result, ...}``;
* ``job.yaml``: the job definition `thpvm lava job` wrote (its ``metadata`` names the
  kernel); optional ``result.yaml`` (lava-run's job result).

From the console lines between ``@@thpvm-lava begin|end`` markers (see lava/job.py) the
selftest output, the counter snapshots and each workload's driver output are recovered
and judged exactly as a vm-test judges them: the selftest parser, and the model's
prediction compared with the driver output. The run directory then holds result.json,
junit.xml and report.html like any other run.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import UserError
from orchestrator.lava.job import MARK
from orchestrator.suites import counters

log = logging.getLogger(__name__)

LOG_NAME = "output.yaml"
# searched, not matched: on a serial console a marker can follow the shell's prompt ("# ")
_BEGIN = re.compile(rf"{re.escape(MARK)} begin (\w+) (\S+)(?: (.*))?$")
_END = re.compile(rf"{re.escape(MARK)} end (\w+) (.+?)(?: rc=(\d+))?$")
_PRINTK = re.compile(r"^\[\s*\d+\.\d+\] ")


@dataclass
class Block:
    """Console output between one begin and end marker."""

    kind: str
    name: str
    args: str
    lines: list[str] = field(default_factory=list)
    rc: int | None = None
    start: str = ""
    end: str = ""
    closed: bool = False

    @property
    def seconds(self) -> float:

        try:
            return max(0.0, (datetime.fromisoformat(self.end)
                             - datetime.fromisoformat(self.start)).total_seconds())
        except ValueError:
            return 0.0


@dataclass
class LavaLog:
    """The parts of a LAVA job log thpvm reads."""

    target: list[tuple[str, str]]  # (dt, console line)
    results: list[dict[str, Any]]
    errors: list[str]


def _entries(text: str) -> Iterator[dict[str, Any]]:
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        line = line[2:] if line.startswith("- ") else line
        try:
            entry = json.loads(line)
        except ValueError:
            try:
                entry = yaml.safe_load(line)
            except yaml.YAMLError:
                log.warning("%s line %d: not a log entry", LOG_NAME, n)
                continue
        if isinstance(entry, dict) and "lvl" in entry:
            yield entry


def read_log(path: Path) -> LavaLog:
    """Target lines, results and errors of a LAVA job log."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the LAVA job log: {exc}") from exc
    lg = LavaLog([], [], [])
    for entry in _entries(text):
        msg = entry.get("msg")
        if entry["lvl"] == "target" and isinstance(msg, str):
            lg.target.append((str(entry.get("dt", "")), msg.rstrip("\r")))
        elif entry["lvl"] == "results" and isinstance(msg, dict):
            lg.results.append(msg)
        elif entry["lvl"] in ("error", "exception"):
            lg.errors.append(str(msg))
    return lg


def blocks(target: list[tuple[str, str]]) -> list[Block]:
    """Every marker block in console order; an unclosed block (crash) stays open."""
    out: list[Block] = []
    cur: Block | None = None
    for dt, line in target:
        m = _BEGIN.search(line)
        if m:
            cur = Block(m.group(1), m.group(2), m.group(3) or "", start=dt)
            out.append(cur)
            continue
        m = _END.search(line)
        if m and cur is not None and m.group(1) == cur.kind:
            cur.rc = int(m.group(3)) if m.group(3) else None
            cur.end, cur.closed, cur = dt, True, None
            continue
        if cur is not None and not _PRINTK.match(line):
            cur.lines.append(line)
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path}: not a LAVA job definition: {e}") from e
    return data if isinstance(data, dict) else {}


def snapshot_of(block: Block) -> counters.Snapshot | None:
    """A counter snapshot block, or None if it is cut or malformed."""
    if not block.closed:
        return None
    try:
        return counters.parse_snapshot("\n".join(block.lines) + "\n")
    except counters.CounterFormatError as e:
        log.warning("snapshot %s unreadable: %s", block.name, e.message)
        return None
