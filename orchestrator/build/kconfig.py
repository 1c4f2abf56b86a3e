"""Kconfig fragments: parse, merge (conflicts are errors), and check survival.

A fragment is a plain `.config` file: `CONFIG_X=value` lines and
`# CONFIG_X is not set` lines; other `#` lines are comments. After the kernel's
`merge_config.sh` and `olddefconfig`, every option a thpvm fragment asked for
must be in the final `.config` with the requested value; an option that did not
survive (an unmet dependency, an unknown symbol, a symbol of another arch)
fails the build with a list, the way kunit.py reports dropped options.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ConfigError, UserError

log = logging.getLogger(__name__)

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Fragment:
    """A parsed fragment: where it came from and the options it requests."""

    source: str
    options: dict[str, str]

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
    options: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        m = _SET.match(line)
        if m:
            options[m.group(1)] = m.group(2)
            continue
        m = _UNSET.match(line)
        if m:
            options[m.group(1)] = "n"
            continue
        if line.startswith("#"):
            continue
        raise UserError(f"{source}:{lineno}: not a kconfig line: {raw!r} "
                        "(expected CONFIG_NAME=value or '# CONFIG_NAME is not set')")
    return options


def load_fragment(path: Path) -> Fragment:
    """Read a fragment file (error names the file if it is missing)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read kconfig fragment {path}: {e.strerror}") from e
    return Fragment(str(path), parse_config_text(text, str(path)))


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
    """A multi-line list of dropped options for error output."""
    return "\n".join("  " + d.describe() for d in dropped)
