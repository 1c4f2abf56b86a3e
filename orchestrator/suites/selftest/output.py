"""Parse the output of one run of the kernel's khugepaged selftest.

Three output forms exist (KHUGEPAGED_MODEL_SPEC.md section 8.5):

``legacy`` (6.2 ... 6.x, including 6.12.117, ``selftests/mm/khugepaged``)
    ``Run test: <name> (<context>:<mem>)`` headers; steps ``<message>...`` followed by
    progress dots and a verdict `` \\e[32mOK\\e[0m`` / `` \\e[31mFail\\e[0m`` (also
    ``Timeout``, ``Fail: Bad return value``, ``Fail: check_huge()``) / `` \\e[33mSkip\\e[0m``.
``context`` (6.1, ``selftests/vm/khugepaged``)
    ``*** Testing context: <ctx> ***`` headers, anonymous memory only and no per-test
    header, so each context block becomes one case named ``context``.
``ktap`` (2026 mm tree)
    ``TAP version 13``, plan ``1..N``, ``# ``-prefixed messages, one ``ok N name`` /
    ``not ok N name`` line (with ``# SKIP``) per case and ``# Totals: pass:...``.

Output captured under run_vmtests.sh (banner, every line prefixed ``# ``, ``[PASS]``,
TAP lines of the runner) is unwrapped first (`split_runner_output`).

The grammar, one parser function per rule (each documents the shape it accepts)::

    output        := (runner-line | ktap-line | header | note | progress-line)*
    header        := "Run test: " NAME " (" CTX ":" MEM ")" | "*** Testing context: " CTX " ***"
    progress-line := segment ("\\r" segment)*          (a carriage return overwrites a step)
    segment       := (step | text)* verdict?
    step          := MESSAGE "..." "."*                 (the extra dots are wait ticks)
    verdict       := " " [colour] WORD [reset]          (OK | Fail[: why] | Timeout | Skip)

Steps are written without newlines (``setbuf(stdout, NULL)``, ``printf("%s...")``), so a
physical line may carry several steps, the verdict of a step may come from a forked child
and a message may be followed directly by the next one (e.g. the settings restore after a
signal): the parser works on tokens and uses newlines only as boundaries.

Aggregation (never lets a later skip hide a failure):

* step outcome: ok | fail | skip | timeout | incomplete (a message without a verdict).
* case status: ``crash`` if it was running when the output ended without an exit status;
  else ``fail`` if any step is fail/timeout/incomplete or its KTAP line says ``not ok``;
  else ``skip`` if any step or its KTAP line skipped (a selftest ``Skip`` abandons the rest
  of the case, so setup steps that passed before it do not make it a pass);
  else ``pass`` if a step passed or its KTAP line says ``ok``; a case with no evidence
  at all is ``fail`` (a step ``(no steps)``).
* run status: ``crash`` if the exit code is unknown (None); else ``fail`` if any case
  failed; else ``skip`` for exit 4 (KSFT_SKIP) when every case skipped or none ran (e.g.
  "Transparent Hugepages not available"); else ``fail`` with a synthetic case
  ``(exit status)`` if the exit code is nonzero; else ``fail`` with ``(no tests)`` if no
  case ran; else ``skip`` if every case skipped; else ``pass``.

The guest is untrusted input: garbage never raises, it ends up in ``unparsed`` and in a
status that is not ``pass`` unless real evidence of passing exists.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

STEP_OUTCOMES = ("ok", "fail", "skip", "timeout", "incomplete")
CASE_STATUSES = ("pass", "fail", "skip", "crash")
RUN_STATUSES = ("pass", "fail", "skip", "crash")
KSFT_SKIP = 4

_PENDING = "pending"  # outcome of a step while its verdict is still awaited
MID_TEST = "output ended mid-test"
NO_VERDICT = "no verdict printed"


@dataclass
class StepOutcome:
    """One step: the message before ``...`` and its verdict.

    `detail` is the verdict text when it is not plain OK (``Fail: check_huge()``,
    ``Timeout``, ``Skip``) plus any text the step printed, one item per line.
    """

    message: str
    outcome: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain dict (result.json step)."""
        return {"message": self.message, "outcome": self.outcome, "detail": self.detail}


@dataclass
class SelftestCase:
    """One test case: a ``Run test:`` block, a KTAP result, or a setup/synthetic block.

    `context`/`mem_type` are None for setup blocks (``alloc_at_fault``) and synthetic
    cases (``(exit status)``, ``(setup)``, ``(restore)``, ``(no tests)``); `order` is the
    ``-s`` order of the invocation (0 when absent); `result` is the KTAP verdict
    (pass/fail/skip) when the form has one.
    """

    name: str
    context: str | None
    mem_type: str | None
    order: int
    status: str = "fail"
    steps: list[StepOutcome] = field(default_factory=list)
    result: str | None = None
    number: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain dict in the result.json ``case`` shape (order null for the default 0)."""
        return {
            "name": self.name,
            "context": self.context,
            "mem_type": self.mem_type,
            "order": self.order or None,
            "status": self.status,
            "steps": [s.to_json() for s in self.steps],
        }


@dataclass
class SelftestRun:
    """The parsed output of one selftest invocation."""

    argv: list[str]
    exit_code: int | None
    cases: list[SelftestCase]
    preamble_steps: list[StepOutcome]
    unparsed: list[str]
    status: str
    form: str = "legacy"
    epilogue_steps: list[StepOutcome] = field(default_factory=list)
    explanation: str = ""
    notes: list[str] = field(default_factory=list)
    plan: int | None = None
    totals: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        """Everything as plain dicts (for logs and debugging)."""
        data = asdict(self)
        data["cases"] = [c.to_json() for c in self.cases]
        data["summary"] = summarize([self])
        return data

    def to_invocation_json(self) -> dict[str, Any]:
        """The result.json ``invocation`` fields this parser knows (argv, exit_code, status,
        cases); the caller adds duration, counter_deltas and log."""
        return {
            "argv": list(self.argv),
            "exit_code": self.exit_code,
            "status": self.status,
            "cases": [c.to_json() for c in self.cases],
        }


def summarize(runs: Iterable[SelftestRun]) -> dict[str, int]:
    """Case counts over runs: passed, failed (a crashed case counts as failed), skipped."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    key = {"pass": "passed", "fail": "failed", "crash": "failed", "skip": "skipped"}
    for run in runs:
        for case in run.cases:
            counts[key.get(case.status, "failed")] += 1
    return counts


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Msg:
    text: str


@dataclass(frozen=True)
class _Verdict:
    outcome: str
    detail: str


@dataclass(frozen=True)
class _Text:
    text: str
    inline: bool  # printed on the same line right after a step message


@dataclass(frozen=True)
class _CarriageReturn:
    pass


@dataclass(frozen=True)
class _Newline:
    pass


@dataclass(frozen=True)
class _Header:
    name: str
    context: str | None
    mem_type: str | None


@dataclass(frozen=True)
class _Result:
    status: str  # pass | fail | skip
    number: int
    name: str
    reason: str


@dataclass(frozen=True)
class _Plan:
    count: int
    skip_reason: str | None


@dataclass(frozen=True)
class _Totals:
    counts: dict[str, int]


@dataclass(frozen=True)
class _Note:
    kind: str  # bailout | unavailable | usage | ktap
    text: str


_Token = (_Msg | _Verdict | _Text | _CarriageReturn | _Newline | _Header | _Result | _Plan
          | _Totals | _Note)

# ------------------------------------------------------------------- grammar rules

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_COLOURED = re.compile(r"\x1b\[(?P<code>[0-9;]*)m(?P<text>[^\x1b\n]*?)\x1b\[0?m")
_PLAIN_VERDICT = re.compile(r"(?:^|(?<=\s))(?P<text>OK|Skip|Timeout|Fail(?::[^\n]*)?)\s*$")
_DOTS = re.compile(r"\.{3,}")
_SETTINGS_STEP = re.compile(r"(?:Save|Restore) THP and khugepaged settings")
_RUN_TEST = re.compile(r"Run test: (?P<name>\S+) \((?P<ctx>[^():\s]*):(?P<mem>[^()\s]*)\)")
_CONTEXT = re.compile(r"\*\*\* Testing context: (?P<ctx>\S+) \*\*\*")
_CONTEXTS = ("khugepaged", "madvise", "")  # the selftest's collapse contexts (none: setup)
_TAP_VERSION = re.compile(r"^TAP version (\d+)\s*$")
_TAP_PLAN = re.compile(r"^1\.\.(?P<n>\d+)(?:\s*#\s*(?P<dir>\w+)\s*(?P<why>.*))?$")
_TAP_RESULT = re.compile(r"^(?P<ok>not ok|ok)\s+(?P<n>\d+)\b\s*(?:-\s+)?(?P<rest>.*)$")
_TAP_TOTALS = re.compile(r"^# Totals:((?:\s+\w+:\d+)+)\s*$")
_BAIL_OUT = re.compile(r"Bail out!\s*(?P<why>.*)$")
_UNAVAILABLE = re.compile(r"Transparent Hugepages not available")
_USAGE = re.compile(r"^Usage: \S*khugepaged")
_DIGITS = re.compile(r"\d+")
_MAX_INT = 2**31 - 1


def parse_verdict(text: str, colour: str | None = None) -> tuple[str, str]:
    """``OK`` | ``Skip`` | ``Timeout`` | ``Fail`` | ``Fail: <why>``, optionally inside a
    colour (32 green, 31 red, 33 yellow) -> (outcome, detail).

    An unknown word is judged by its colour (green ok, yellow skip, otherwise fail) and
    kept in the detail.
    """
    word = " ".join(text.split())
    if word == "OK":
        return "ok", ""
    if word in ("Skip", "Timeout"):
        return word.lower(), word
    if word.startswith("Fail"):
        return "fail", word
    last = (colour or "").split(";")[-1]
    by_colour = {"32": "ok", "33": "skip"}.get(last, "fail")
    return by_colour, f"unrecognised verdict {word!r}"


def parse_body(body: str, has_verdict: bool) -> list[_Token]:
    """``(MESSAGE "..." "."*)* [tail]``: the text of a segment before its verdict.

    Each run of three or more dots ends a message (the message text keeps no dots, its
    spaces are normalised). A non-empty tail becomes the verdict's message when a
    verdict follows (6.1 prints ``Re-collapse PMD-mapped hugepage OK`` without dots),
    otherwise it is plain text. A settings step (``Save/Restore THP and khugepaged
    settings``) always starts a new token, even glued to earlier text.
    """
    start = _SETTINGS_STEP.search(body)
    if start and start.start() > 0 and body[: start.start()].strip():
        return parse_body(body[: start.start()], False) + parse_body(body[start.start():],
                                                                      has_verdict)
    tokens: list[_Token] = []
    last = 0
    for dots in _DOTS.finditer(body):
        message = " ".join(body[last:dots.start()].split())
        if message:
            tokens.append(_Msg(message))
        last = dots.end()
    tail = " ".join(body[last:].split())
    if tail:
        tokens.append(_Msg(tail) if has_verdict else _Text(tail, inline=False))
    return tokens


def parse_segment(segment: str) -> list[_Token]:
    """``(step | text)* verdict?`` with coloured verdicts anywhere and an uncoloured one
    only at the end of the segment (`` OK``, `` Fail: ...``, `` Timeout``, `` Skip``)."""
    tokens: list[_Token] = []
    pos = 0
    for match in _COLOURED.finditer(segment):
        tokens += parse_body(_ANSI.sub("", segment[pos:match.start()]), True)
        tokens.append(_Verdict(*parse_verdict(match["text"], match["code"])))
        pos = match.end()
    rest = _ANSI.sub("", segment[pos:])
    plain = _PLAIN_VERDICT.search(rest)
    if plain:
        tokens += parse_body(rest[:plain.start()], True)
        tokens.append(_Verdict(*parse_verdict(plain["text"])))
    else:
        tokens += parse_body(rest, False)
    return tokens


def parse_progress_line(line: str) -> list[_Token]:
    """``segment ("\\r" segment)*``: text after a carriage return overwrites the line
    (collapse_compound_extreme counts ``1/512 ... 512/512`` this way). Text following a
    step message on the same line is marked inline (it belongs to that step)."""
    tokens: list[_Token] = []
    for n, segment in enumerate(line.split("\r")):
        if n:
            tokens.append(_CarriageReturn())
        tokens += parse_segment(segment)
    seen_msg = False
    for i, token in enumerate(tokens):
        if isinstance(token, _Msg):
            seen_msg = True
        elif isinstance(token, _Text) and seen_msg:
            tokens[i] = _Text(token.text, inline=True)
    return tokens


def parse_header(line: str) -> tuple[int, _Header] | None:
    """``Run test: NAME (CTX:MEM)`` (6.2+) or ``*** Testing context: CTX ***`` (6.1),
    found anywhere in the line -> (start position, header)."""
    match = _RUN_TEST.search(line)
    if match and match["ctx"] in _CONTEXTS:
        return match.start(), _Header(match["name"], match["ctx"] or None, match["mem"] or None)
    match = _CONTEXT.search(line)
    if match and match["ctx"] in _CONTEXTS:
        return match.start(), _Header("context", match["ctx"], "anon")
    return None  # an unknown context word is not a header (the guest is untrusted)


def parse_ktap_result(line: str) -> _Result | None:
    """``ok N name``, ``not ok N name``, ``ok N name # SKIP why``, ``ok N # SKIP name``
    (older kselftest.h), ``ok N # XFAIL name``, ``not ok N name # exit=R`` (runner)."""
    match = _TAP_RESULT.match(line)
    if not match:
        return None
    rest = match["rest"].strip()
    directive, reason = "", ""
    lead = re.match(r"^#\s*(?P<d>SKIP|XFAIL|TODO|error)\b\s*(?P<r>.*)$", rest, re.I)
    if lead:
        directive, name = lead["d"].upper(), lead["r"].strip()
    else:
        name, _, tail = rest.partition(" #")
        name = name.strip()
        word, _, reason = tail.strip().partition(" ")
        directive = word.upper()
    status = "fail" if match["ok"] == "not ok" else "pass"
    if status == "pass" and directive == "SKIP":
        status = "skip"
    return _Result(status, min(int(match["n"]), _MAX_INT), name, reason.strip())


def parse_ktap_line(line: str) -> _Token | None:
    """``TAP version N``, ``1..N [# SKIP why]``, a result line, ``# Totals: k:v ...``."""
    if _TAP_VERSION.match(line):
        return _Note("ktap", line.strip())
    plan = _TAP_PLAN.match(line)
    if plan:
        skip = plan["why"].strip() if (plan["dir"] or "").upper() == "SKIP" else None
        return _Plan(min(int(plan["n"]), _MAX_INT), skip)
    totals = _TAP_TOTALS.match(line)
    if totals:
        pairs = (p.split(":") for p in totals.group(1).split())
        return _Totals({k: min(int(v), _MAX_INT) for k, v in pairs})
    return parse_ktap_result(line)


def parse_note(line: str) -> _Note | None:
    """Whole-line diagnostics with a meaning: ``Bail out! why`` (fatal, kselftest.h),
    ``Transparent Hugepages not available`` (skip), ``Usage: ./khugepaged ...``."""
    bail = _BAIL_OUT.search(line)
    if bail and not line[: bail.start()].strip():
        return _Note("bailout", f"Bail out! {bail['why']}".strip())
    if _UNAVAILABLE.search(line):
        return _Note("unavailable", line.strip())
    if _USAGE.match(line.strip()):
        return _Note("usage", line.strip())
    return None


def tokenize(lines: Iterable[str], form: str) -> Iterator[_Token]:
    """All tokens of the (unwrapped) output, a `_Newline` after every line."""
    for line in lines:
        if form == "ktap":
            token = parse_ktap_line(line)
            if token is not None:
                yield token
                yield _Newline()
                continue
            line = _strip_prefix(line)
        yield from _line_tokens(line)
        yield _Newline()


def _line_tokens(line: str) -> list[_Token]:
    """One physical line: an optional header (text before it is parsed first), a note,
    or a progress line."""
    header = parse_header(line)
    if header:
        start, token = header
        return parse_progress_line(line[:start]) + [token]
    note = parse_note(_ANSI.sub("", line))
    if note:
        return [note]
    return parse_progress_line(line)


def _strip_prefix(line: str) -> str:
    """``# text`` -> ``text`` and ``#`` -> empty (one level of TAP diagnostic prefix)."""
    if line.startswith("# "):
        return line[2:]
    return "" if line.rstrip() == "#" else line


# ------------------------------------------------------------- runner wrapping


@dataclass
class RunnerSection:
    """One test run by run_vmtests.sh: ``running <cmd>`` between dashed lines, the test's
    output (each line prefixed ``# `` in TAP mode), then ``[PASS]``/``[SKIP]``/``[FAIL]``
    and the runner's TAP line. `exit_code` is None when the section is cut off."""

    title: str
    argv: list[str]
    text: str
    exit_code: int | None


_RUNNER_TITLE = re.compile(r"^(?P<p>(?:# )?)running (?P<cmd>.+)$")
_RUNNER_VERDICT = re.compile(r"(?P<p>(?:# )?)\[(?P<v>PASS|SKIP|FAIL)\]\s*$")
_RUNNER_EXIT = re.compile(r"#\s*exit=(?P<r>-?\d+)")


def split_runner_output(text: str) -> list[RunnerSection]:
    """Sections of run_vmtests.sh output: ``P----`` / ``Prunning CMD`` / ``P----``, the
    prefixed output lines, ``P[PASS|SKIP|FAIL]`` and optionally ``[not ]ok N name [# SKIP |
    # exit=R]`` (P is ``# `` in TAP mode, empty with ``-n``)."""
    lines = _normalise(text).split("\n")
    sections: list[RunnerSection] = []
    i = 0
    while i < len(lines):
        title = _RUNNER_TITLE.match(lines[i])
        if title and _is_dash_line(lines, i - 1, title) and _is_dash_line(lines, i + 1, title):
            section, i = _read_section(lines, i + 2, title)
            sections.append(section)
        else:
            i += 1
    return sections


def _is_dash_line(lines: list[str], i: int, title: re.Match[str]) -> bool:
    if not 0 <= i < len(lines):
        return False
    line = lines[i]
    prefix = title["p"]
    return line.startswith(prefix) and set(line[len(prefix):].strip()) == {"-"}


def _read_section(lines: list[str], i: int, title: re.Match[str]) -> tuple[RunnerSection, int]:
    """The output lines of one section up to its verdict line -> (section, next index).

    The verdict may be glued to the last output line when that line had no newline."""
    prefix = title["p"]
    body: list[str] = []
    exit_code: int | None = None
    while i < len(lines):
        line = lines[i]
        i += 1
        verdict = _RUNNER_VERDICT.search(line)
        if not (verdict and verdict["p"] == prefix):
            body.append(_unprefix(line, prefix))
            continue
        head = line[:verdict.start()]
        if head.strip():
            body.append(_unprefix(head, prefix))
        exit_code = {"PASS": 0, "SKIP": KSFT_SKIP}.get(verdict["v"], 1)
        if i < len(lines) and _TAP_RESULT.match(lines[i]):
            exit_match = _RUNNER_EXIT.search(lines[i])
            if verdict["v"] == "FAIL" and exit_match:
                exit_code = int(exit_match["r"])
            i += 1
        break
    return RunnerSection(title["cmd"], title["cmd"].split(), "\n".join(body), exit_code), i


def _unprefix(line: str, prefix: str) -> str:
    """Remove the runner's line prefix (``# ``; sed turns an empty line into ``# ``)."""
    if not prefix:
        return line
    if line.startswith(prefix):
        return line[len(prefix):]
    return "" if line.rstrip() == prefix.strip() else line


# ------------------------------------------------------------------ the builder


class _Builder:
    """Consumes tokens and assembles cases, steps and the preamble/epilogue."""

    def __init__(self, order: int) -> None:
        self.order = order
        self.cases: list[SelftestCase] = []
        self.preamble: list[StepOutcome] = []
        self.epilogue: list[StepOutcome] = []
        self.loose: list[StepOutcome] = []
        self.current: SelftestCase | None = None
        self.pending: list[tuple[StepOutcome, list[StepOutcome]]] = []
        self.line_steps: list[StepOutcome] = []
        self.unparsed: list[str] = []
        self.notes: list[str] = []
        self.last_text: int | None = None  # index in unparsed of a whole-line text
        self.restored = False
        self.plan: int | None = None
        self.totals: dict[str, int] | None = None
        self.skip_reason: str | None = None
        self.diagnostics: list[str] = []  # bail-out / usage lines

    def feed(self, token: _Token) -> None:
        """Apply one token."""
        match token:
            case _Msg(text):
                self._on_message(text)
            case _Verdict(outcome, detail):
                self._on_verdict(outcome, detail)
            case _Text(text, inline):
                self._on_text(text, inline)
            case _CarriageReturn():
                self._on_carriage_return()
            case _Newline():
                self.line_steps.clear()
                return
            case _Header():
                self._on_header(token)
            case _Result():
                self._on_result(token)
            case _Plan(count, skip_reason):
                self.plan = count
                self.skip_reason = skip_reason or self.skip_reason
            case _Totals(counts):
                self.totals = counts
            case _Note():
                self._on_note(token)
        if not isinstance(token, _Text):
            self.last_text = None

    def _target(self, message: str) -> list[StepOutcome]:
        if message.startswith("Save THP and khugepaged settings"):
            return self.preamble
        if message.startswith("Restore THP and khugepaged settings"):
            self.restored = True
            return self.epilogue
        return self.current.steps if self.current is not None else self.loose

    def _on_message(self, text: str) -> None:
        self._drop_counter_update(text)
        target = self._target(text)
        step = StepOutcome(text, _PENDING)
        target.append(step)
        self.pending.append((step, target))
        self.line_steps.append(step)

    def _on_verdict(self, outcome: str, detail: str) -> None:
        if self.pending:
            step, _ = self.pending.pop()
            step.outcome = outcome
            step.detail = _join(detail, step.detail)
            return
        message = "(unnamed step)"
        if self.last_text is not None:
            message = self.unparsed.pop(self.last_text)
        self._target(message).append(StepOutcome(message, outcome, detail))

    def _on_text(self, text: str, inline: bool) -> None:
        open_steps = [s for s in self.line_steps if s.outcome == _PENDING]
        if inline and open_steps:
            open_steps[-1].detail = _join(open_steps[-1].detail, text)
            return
        self.unparsed.append(text)
        self.last_text = len(self.unparsed) - 1

    def _on_carriage_return(self) -> None:
        """The line is overwritten: drop the step it started if still unanswered."""
        if not (self.line_steps and self.pending):
            return
        step, target = self.pending[-1]
        if step is self.line_steps[-1] and not step.detail:
            self.pending.pop()
            self.line_steps.pop()
            _remove(target, step)

    def _drop_counter_update(self, text: str) -> None:
        """A progress counter (``... 1/512`` then ``... 2/512``) rewrites its line with
        ``\\r``; when the output went through newline translation the ``\\r`` became a
        line break, so an unanswered step followed by the same message with other
        numbers is dropped as overwritten too."""
        if not self.pending:
            return
        step, target = self.pending[-1]
        if step.detail or not re.search(r"\d", text):
            return
        if _DIGITS.sub("#", step.message) == _DIGITS.sub("#", text):
            self.pending.pop()
            _remove(target, step)
            if self.line_steps and self.line_steps[-1] is step:
                self.line_steps.pop()

    def _on_header(self, header: _Header) -> None:
        self._close_current(NO_VERDICT)
        self._adopt_preamble()
        case = SelftestCase(header.name, header.context, header.mem_type, self.order)
        case.steps.extend(self.loose)
        self.loose = []
        self.cases.append(case)
        self.current = case
        self.restored = False

    def _adopt_preamble(self, reason: str = NO_VERDICT) -> None:
        """Steps before the first header form the ``alloc_at_fault`` setup case."""
        if self.cases or not self.loose:
            return
        case = SelftestCase("alloc_at_fault", None, None, self.order)
        case.steps, self.loose = self.loose, []
        if reason:
            self._settle(case.steps, reason)
        self.cases.append(case)

    def _on_result(self, result: _Result) -> None:
        case = self.current
        if case is None or case.result is not None:
            case = SelftestCase(result.name or f"test {result.number}", None, None, self.order)
            case.steps, self.loose = self.loose, []
            self.cases.append(case)
        elif result.name and result.name != case.name:
            self.notes.append(f"result line {result.number} names {result.name!r} "
                              f"but the running test is {case.name!r}")
        case.result, case.number = result.status, result.number
        if result.reason:
            self.notes.append(f"{case.name}: {result.reason}")
        self._settle(case.steps, "no verdict before its result line")
        self.current = None

    def _on_note(self, note: _Note) -> None:
        if note.kind == "unavailable":
            self.skip_reason = note.text
        elif note.kind in ("bailout", "usage"):
            self.diagnostics.append(note.text)
            open_steps = [s for s in self.line_steps if s.outcome == _PENDING]
            if open_steps:
                open_steps[-1].detail = _join(open_steps[-1].detail, note.text)

    def _close_current(self, reason: str) -> None:
        if self.current is not None:
            self._settle(self.current.steps, reason)
        self.current = None

    def _settle(self, steps: list[StepOutcome], reason: str) -> None:
        """Steps of `steps` still awaiting a verdict become incomplete."""
        for step in steps:
            if step.outcome == _PENDING:
                step.outcome = "incomplete"
                step.detail = _join(step.detail, reason)
        self.pending = [(s, t) for s, t in self.pending if s.outcome == _PENDING]


def _remove(steps: list[StepOutcome], step: StepOutcome) -> None:
    """Remove `step` itself (not an equal step) from `steps`."""
    for i, other in enumerate(steps):
        if other is step:
            del steps[i]
            return


def _join(*parts: str) -> str:
    return "\n".join(p for p in parts if p)


# ------------------------------------------------------------------ finishing


def _running_case(b: _Builder, form: str) -> SelftestCase | None:
    """The case that was executing when the output stopped, if any."""
    if b.pending:
        step, target = b.pending[-1]
        for case in b.cases:
            if case.steps is target:
                return case
    if b.current is not None and b.current.result is None:
        if form == "ktap" or not b.restored:
            return b.current
    return None


def _finish(b: _Builder, exit_code: int | None, form: str) -> None:
    """Settle open steps and cases once the output has ended."""
    crashed = exit_code is None
    b._adopt_preamble(reason="")
    running = _running_case(b, form)
    reason = MID_TEST if crashed else NO_VERDICT
    for steps in [c.steps for c in b.cases] + [b.preamble, b.epilogue, b.loose]:
        b._settle(steps, reason)
    b.epilogue.extend(b.loose)
    b.loose = []
    if running is not None and crashed:
        if not any(s.outcome == "incomplete" for s in running.steps):
            running.steps.append(StepOutcome("(end of output)", "incomplete", MID_TEST))
    elif running is not None and form == "ktap":
        why = _join("no result line", *b.diagnostics[-1:])
        running.steps.append(StepOutcome("(no result line)", "incomplete", why))
    for case in b.cases:
        if not case.steps and case.result is None:
            case.steps.append(StepOutcome("(no steps)", "incomplete", "the case printed no step"))
        case.status = "crash" if case is running and crashed else case_status(case)
    _add_setup_cases(b, crashed)


def case_status(case: SelftestCase) -> str:
    """fail > skip > pass over the steps and the KTAP result (see the module docstring);
    no evidence at all (no step, no result) is a failure."""
    outcomes = {s.outcome for s in case.steps}
    if case.result == "fail" or outcomes & {"fail", "timeout", "incomplete", _PENDING}:
        return "fail"
    if case.result == "skip" or "skip" in outcomes:
        return "skip"
    if case.result == "pass" or "ok" in outcomes:
        return "pass"
    return "fail"


def _add_setup_cases(b: _Builder, crashed: bool) -> None:
    """Synthetic ``(setup)``/``(restore)`` cases carry a non-ok settings step."""
    for name, steps, where in (("(setup)", b.preamble, 0), ("(restore)", b.epilogue, None)):
        bad = [s for s in steps if s.outcome not in ("ok", "skip")]
        if not bad:
            continue
        case = SelftestCase(name, None, None, b.order, steps=list(steps))
        case.status = "crash" if crashed and any(s.outcome == "incomplete" for s in bad) \
            else "fail"
        b.cases.insert(len(b.cases) if where is None else where, case)


def _judge(b: _Builder, exit_code: int | None) -> tuple[str, str]:
    """Run status and a one-line explanation (adds synthetic cases where needed)."""
    failed = [c for c in b.cases if c.status in ("fail", "crash")]
    if exit_code is None:
        where = [c.name for c in b.cases if c.status == "crash"]
        return "crash", "output ended without an exit status" + (
            f" during {where[0]}" if where else "")
    if failed:
        return "fail", f"{len(failed)} case(s) failed: " + ", ".join(_ids(failed[:5]))
    all_skipped = all(c.status == "skip" for c in b.cases)
    if exit_code == KSFT_SKIP and all_skipped:
        return "skip", b.skip_reason or "exit status 4 (KSFT_SKIP)"
    if exit_code != 0:
        why = _join(f"exit status {exit_code} without a failing step", *b.diagnostics[-2:])
        _synthetic(b, "(exit status)", why)
        return "fail", why.replace("\n", "; ")
    if not b.cases:
        _synthetic(b, "(no tests)", "exit status 0 but no test case was reported")
        return "fail", "exit status 0 but no test case was reported"
    if b.plan is not None and b.plan > sum(c.result is not None for c in b.cases):
        why = f"planned {b.plan} tests, {sum(c.result is not None for c in b.cases)} reported"
        _synthetic(b, "(plan)", why)
        return "fail", why
    if all_skipped:
        return "skip", b.skip_reason or "every case skipped"
    return "pass", f"{sum(c.status == 'pass' for c in b.cases)} case(s) passed"


def _synthetic(b: _Builder, name: str, detail: str) -> None:
    step = StepOutcome(detail.split("\n")[0], "fail", detail)
    b.cases.append(SelftestCase(name, None, None, b.order, "fail", [step]))


def _ids(cases: list[SelftestCase]) -> list[str]:
    return [f"{c.name}({c.context}:{c.mem_type})" if c.context else c.name for c in cases]


# --------------------------------------------------------------------- entry


def _normalise(text: str) -> str:
    """CR LF (serial consoles, ptys) -> LF; other lone CRs stay meaningful."""
    return re.sub(r"\r+\n", "\n", text.replace("\x00", ""))


def detect_form(lines: list[str]) -> str:
    """``ktap`` if a TAP version/plan/result line exists, else ``context`` (6.1) if a
    ``*** Testing context`` header exists, else ``legacy``."""
    for line in lines:
        if _TAP_VERSION.match(line) or _TAP_PLAN.match(line) or _TAP_RESULT.match(line):
            return "ktap"
    if any(_CONTEXT.search(line) for line in lines):
        return "context"
    return "legacy"


def parse_order(argv: list[str]) -> int:
    """The ``-s N`` / ``-sN`` option of the selftest (atoi semantics: leading digits, else
    0; the last one wins); 0 when absent."""
    order = 0
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if arg == "-s" and i + 1 < len(argv):
            order = _atoi(argv[i + 1])
            i += 1
        elif arg.startswith("-s") and len(arg) > 2:
            order = _atoi(arg[2:])
        i += 1
    return order


def _atoi(text: str) -> int:
    match = re.match(r"\s*([+-]?\d+)", text)
    if not match:
        return 0
    return max(0, min(int(match.group(1)), _MAX_INT))


def _unwrap(text: str, argv: list[str], exit_code: int | None,
            notes: list[str]) -> tuple[list[str], int | None]:
    """Remove run_vmtests.sh wrapping: pick the section that ran `argv` (else the first)
    and take its exit status; or strip a ``# `` prefix present on every line."""
    sections = split_runner_output(text)
    if sections:
        wanted = argv[1:] if argv and "khugepaged" in argv[0] else argv
        chosen = next((s for s in sections if s.argv[1:] == wanted), sections[0])
        if len(sections) > 1:
            notes.append(f"{len(sections)} run_vmtests.sh sections; parsed {chosen.title!r}")
        if chosen.exit_code is not None:
            exit_code = chosen.exit_code
        return _normalise(chosen.text).split("\n"), exit_code
    lines = _normalise(text).split("\n")
    content = [line for line in lines if line.strip()]
    if content and all(line.startswith("#") for line in content):
        lines = [_strip_prefix(line) for line in lines]
    return lines, exit_code


def parse_selftest(text: str, exit_code: int | None, argv: list[str]) -> SelftestRun:
    """Parse one invocation's combined stdout+stderr.

    `exit_code` is the binary's exit status, None if it never exited (crash, hang, lost
    guest); `argv` is its command line (``-s N`` gives the cases' order). Output captured
    under run_vmtests.sh is accepted (the section for `argv` is used, with its exit status).
    """
    notes: list[str] = []
    lines, exit_code = _unwrap(text, list(argv), exit_code, notes)
    form = detect_form(lines)
    builder = _Builder(parse_order(list(argv)))
    for token in tokenize(lines, form):
        builder.feed(token)
    _finish(builder, exit_code, form)
    _check_exit_count(builder, exit_code, form)
    status, explanation = _judge(builder, exit_code)
    run = SelftestRun(
        argv=list(argv), exit_code=exit_code, cases=builder.cases,
        preamble_steps=builder.preamble, unparsed=builder.unparsed, status=status,
        form=form, epilogue_steps=builder.epilogue, explanation=explanation,
        notes=notes + builder.notes, plan=builder.plan, totals=builder.totals,
    )
    log.debug("selftest %s: %s (%s)", " ".join(argv), status, explanation)
    return run


def _check_exit_count(b: _Builder, exit_code: int | None, form: str) -> None:
    """≤ 6.x exits with the number of fail() calls: note when the output disagrees."""
    if form == "ktap" or exit_code is None:
        return
    real = [c for c in b.cases if not c.name.startswith("(")]
    steps = [s for c in real for s in c.steps] + b.preamble + b.epilogue
    fails = sum(s.outcome in ("fail", "timeout") for s in steps)
    if exit_code not in (fails % 256, 1, KSFT_SKIP) and fails:
        b.notes.append(f"exit status {exit_code} but {fails} failing step(s) in the output")
