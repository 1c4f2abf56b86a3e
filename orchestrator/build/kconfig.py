"""Kconfig fragments: parse, merge (conflicts are errors), and check survival.

A fragment is a plain `.config` file: `CONFIG_X=value` lines and
`# CONFIG_X is not set` lines; other `#` lines are comments. An option line may
end with a version annotation saying which kernel versions it applies to
(inclusive, major.minor):

    CONFIG_READ_ONLY_THP_FOR_FS=y  # until: 7.1
    CONFIG_XFS_FS=y  # since: 7.2
    # CONFIG_X is not set  # since: 6.6 until: 7.1

For a tree outside the range the option is not requested at all (it may not
exist there); inside the range it is checked like any other. After the kernel's
`merge_config.sh` and `olddefconfig`, every option a thpvm fragment asked for
must be in the final `.config` with the requested value; an option that did not
survive (an unmet dependency, an unknown symbol, a symbol of another arch)
fails the build with a list, the way kunit.py reports dropped options.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import ConfigError, UserError

log = logging.getLogger(__name__)

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_ANNOTATION = re.compile(r"\s+#\s*((?:(?:since|until):\s*\d+\.\d+[\s,]*)+)$")
_BOUND = re.compile(r"(since|until):\s*(\d+)\.(\d+)")

Version = tuple[int, int]


@dataclass(frozen=True)
class Applies:
    """The kernel versions an annotated option applies to (inclusive bounds)."""

    since: Version | None = None
    until: Version | None = None

    def covers(self, version: Version) -> bool:
        return ((self.since is None or version >= self.since)
                and (self.until is None or version <= self.until))

    def describe(self) -> str:
        parts = [f"{k}: {v[0]}.{v[1]}" for k, v in (("since", self.since),
                                                    ("until", self.until)) if v]
        return " ".join(parts)


@dataclass(frozen=True)
class Fragment:
    """A parsed fragment: where it came from and the options it requests."""

    source: str
    options: dict[str, str]
    applies: dict[str, Applies] = field(default_factory=dict)

    def for_version(self, version: Version | None) -> Fragment:
        """The options that apply to a tree of `version` (all of them when unknown)."""
        if version is None:
            return Fragment(self.source, dict(self.options))
        kept = {sym: val for sym, val in self.options.items()
                if sym not in self.applies or self.applies[sym].covers(version)}
        for sym in self.options.keys() - kept.keys():
            log.debug("%s: %s (%s) does not apply to %d.%d", self.source, sym,
                      self.applies[sym].describe(), *version)
        return Fragment(self.source, kept)

    def text(self) -> str:
        """The fragment as `.config` text (what merge_config.sh reads)."""
        lines = []
        for sym, val in self.options.items():
            lines.append(f"# {sym} is not set" if val == "n" else f"{sym}={val}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Dropped:
    """A requested option that is not in the final config with its value."""

    symbol: str
    wanted: str
    got: str  # "n" when absent
    source: str
    hint: str = ""

    def describe(self) -> str:
        hint = f" [{self.hint}]" if self.hint else ""
        return f"{self.symbol}={self.wanted} (from {self.source}) ended up {self.got}{hint}"


def parse_config_text(text: str, source: str) -> dict[str, str]:
    """Parse `.config`-style text into {CONFIG_X: value}; `is not set` becomes "n".

    Accepts `CONFIG_X=value`, `# CONFIG_X is not set`, blank lines and other
    `#` comments; anything else is an error naming `source` and the line.
    """
    return parse_fragment_text(text, source).options


def parse_fragment_text(text: str, source: str) -> Fragment:
    """Parse fragment text: `.config` lines, each optionally with a version annotation."""
    options: dict[str, str] = {}
    applies: dict[str, Applies] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        line, bounds = _split_annotation(line, f"{source}:{lineno}")
        parsed = _option(line)
        if parsed is None:
            if line.startswith("#"):
                continue
            raise UserError(f"{source}:{lineno}: not a kconfig line: {raw!r} "
                            "(expected CONFIG_NAME=value or '# CONFIG_NAME is not set', "
                            "optionally followed by '# since: X.Y' and/or 'until: X.Y')")
        sym, val = parsed
        options[sym] = val
        if bounds is None:
            applies.pop(sym, None)
        else:
            applies[sym] = bounds
    return Fragment(source, options, applies)


def _option(line: str) -> tuple[str, str] | None:
    """(symbol, value) of a `CONFIG_X=v` or `# CONFIG_X is not set` line, else None."""
    m = _SET.match(line)
    if m:
        if not m.group(2).startswith('"') and re.search(r"\s#", m.group(2)):
            return None  # a trailing comment that is not a version annotation
        return m.group(1), m.group(2)
    m = _UNSET.match(line)
    return (m.group(1), "n") if m else None


def _split_annotation(line: str, where: str) -> tuple[str, Applies | None]:
    """`CONFIG_X=y  # since: 7.2` → ("CONFIG_X=y", Applies(since=(7, 2)))."""
    m = _ANNOTATION.search(line)
    if not m or not (_SET.match(line[:m.start()]) or _UNSET.match(line[:m.start()])):
        return line, None
    found: dict[str, Version] = {}
    for key, major, minor in _BOUND.findall(m.group(1)):
        if key in found:
            raise UserError(f"{where}: '{key}:' given twice in {m.group(0).strip()!r}")
        found[key] = (int(major), int(minor))
    bounds = Applies(found.get("since"), found.get("until"))
    if bounds.since and bounds.until and bounds.since > bounds.until:
        raise UserError(f"{where}: empty version range {bounds.describe()!r}")
    return line[:m.start()], bounds


def load_fragment(path: Path) -> Fragment:
    """Read a fragment file (error names the file if it is missing)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read kconfig fragment {path}: {e.strerror}") from e
    return parse_fragment_text(text, str(path))


def fragment_from_options(options: list[str], source: str = "--config") -> Fragment:
    """One-off `CONFIG_X=y` options from the command line as a fragment."""
    parsed: dict[str, str] = {}
    for opt in options:
        parsed.update(parse_config_text(opt if opt.startswith(("CONFIG_", "#"))
                                        else f"CONFIG_{opt}", f"{source} {opt}"))
    return Fragment(source, parsed)


def merge_fragments(fragments: list[Fragment]) -> dict[str, tuple[str, str]]:
    """Merge fragments into {symbol: (value, source)}.

    Two fragments that set one symbol to different values are an error naming both.
    """
    merged: dict[str, tuple[str, str]] = {}
    conflicts = []
    for frag in fragments:
        for sym, val in frag.options.items():
            if sym in merged and merged[sym][0] != val:
                prev_val, prev_src = merged[sym]
                conflicts.append(f"{sym}: {prev_val} in {prev_src} but {val} in {frag.source}")
                continue
            merged.setdefault(sym, (val, frag.source))
    if conflicts:
        raise ConfigError("kconfig fragments conflict: " + "; ".join(conflicts))
    return merged


def check_survival(requested: dict[str, tuple[str, str]], final: dict[str, str],
                   tree: Path | None = None) -> list[Dropped]:
    """Options requested but not present with the same value in the final config.

    With `tree`, each dropped option gets a hint: its `depends on` lines from
    the tree's Kconfig files, or "unknown symbol" if no Kconfig defines it.
    """
    dropped = []
    for sym, (want, source) in requested.items():
        got = final.get(sym, "n")
        if got != want:
            hint = dependency_hint(tree, sym) if tree else ""
            dropped.append(Dropped(sym, want, got, source, hint))
    return dropped


def dependency_hint(tree: Path, symbol: str) -> str:
    """`depends on` lines of `symbol` in the tree's Kconfig files, or 'unknown symbol'."""
    name = symbol.removeprefix("CONFIG_")
    pattern = re.compile(rf"^\s*(?:menu)?config\s+{re.escape(name)}\s*$")
    deps: list[str] = []
    found = False
    for kc in sorted(tree.rglob("Kconfig*")):
        lines = kc.read_text(errors="replace").splitlines()
        open_ifs: list[str] = []  # enclosing `if EXPR` blocks are dependencies too
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped.startswith("if "):
                open_ifs.append(stripped)
            elif stripped == "endif" and open_ifs:
                open_ifs.pop()
            elif pattern.match(line):
                found = True
                deps += _depends_block(lines, i + 1) + [f"inside '{c}'" for c in open_ifs]
    if not found:
        return "unknown symbol in this tree"
    return ("unmet dependency? " + "; ".join(deps)) if deps else "probably unmet dependency"


def _depends_block(lines: list[str], start: int) -> list[str]:
    deps = []
    for line in lines[start:]:
        stripped = line.strip()
        if re.match(r"^(config|menuconfig|menu|endmenu|choice|endchoice|if|endif|source)\b",
                     stripped):
            break
        if stripped.startswith("depends on"):
            deps.append(stripped)
    return deps


def format_dropped(dropped: list[Dropped]) -> str:
    """A multi-line list of dropped options for error output (with a note on version
    annotations when a symbol is unknown to the tree)."""
    lines = ["  " + d.describe() for d in dropped]
    if any(d.hint.startswith("unknown symbol") for d in dropped):
        lines.append("  (an option only some kernel versions have can say so in its fragment: "
                     "'CONFIG_X=y  # until: X.Y' or '# since: X.Y')")
    return "\n".join(lines)
