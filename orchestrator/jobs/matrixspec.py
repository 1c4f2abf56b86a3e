"""Matrix files (TOML, format 1): many kernels x suites x repeats, validated up front.

Like workload specs, every error is a `UserError` naming the file and the key path
(``kernels[1].source``) and what was expected. File shape (anything else is an error)::

    format = 1                       # required, must be 1
    name = "thp-smoke"               # required, [a-z0-9][a-z0-9._-]*
    description = "..."              # optional
    repeats = 2                      # optional, 1..100 (default 1)
    machine = "default"              # optional machine profile (machine/profiles/<name>.toml)
    accel = "auto"                   # optional: auto | kvm | tcg
    suites = ["selftest:anon", "workloads:full-pmd-collapse+thp-never"]  # one job column each
    workloads = ["my-spec.toml"]     # optional spec files (relative to this file): one more
                                     # column, "files"

    [[kernels]]                      # at least one
    name = "6.12-debug"              # optional label, default derived from source/rev
    source = "debian:6.12"           # debian:6.1 | debian:6.12 | debian:7.2 | a tree path
    rev = "v6.12"                    # optional git revision of a tree path
    fragments = ["kconfigs/debug.config"]   # optional, relative to this file (or cwd)
    configs = ["CONFIG_X=y"]         # optional one-off options
    patches = ["fix.patch"]          # optional, relative to this file

Paths are resolved relative to the matrix file; a path that does not exist there is
tried relative to the working directory (so `kconfigs/debug.config` works from a checkout).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.data import MACHINE_PROFILES_DIR, MATRICES_DIR
from orchestrator.errors import UserError
from orchestrator.jobs.vmtest import parse_suite
from orchestrator.spec import shipped_workloads
from orchestrator.suites.selftest.runner import load_matrix as load_invocations

FORMAT_VERSION = 1
DEBIAN_SOURCES = ("debian:6.1", "debian:6.12", "debian:7.2")
DEFAULT_SOURCE = "debian:6.12"  # what `vm-test` builds with no --tree
ACCELS = ("auto", "kvm", "tcg")
MAX_REPEATS = 100
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_TOP_KEYS = {"format", "name", "description", "repeats", "machine", "accel", "suites",
             "workloads", "kernels"}
_KERNEL_KEYS = {"name", "source", "rev", "fragments", "configs", "patches"}
_CONFIG_RE = re.compile(r"^CONFIG_[A-Za-z0-9_]+=.*$")


@dataclass(frozen=True)
class MatrixKernel:
    """One kernel column: where its source comes from and how it is configured."""

    name: str
    source: str  # "debian:<version>" or an absolute tree path
    rev: str | None
    fragments: tuple[Path, ...]
    configs: tuple[str, ...]
    patches: tuple[Path, ...]

    def vmtest_args(self) -> list[str]:
        """The `thpvm vm-test` options that build this kernel."""
        args: list[str] = []
        if self.source != DEFAULT_SOURCE:
            args += ["--tree", self.source]
        if self.rev:
            args += ["--rev", self.rev]
        for f in self.fragments:
            args += ["--fragment", str(f)]
        for c in self.configs:
            args += ["--config", c]
        for p in self.patches:
            args += ["--patch", str(p)]
        return args


@dataclass(frozen=True)
class MatrixSpec:
    """A validated matrix file."""

    name: str
    description: str
    repeats: int
    machine: str
    accel: str
    suites: tuple[str, ...]
    workload_files: tuple[Path, ...]
    kernels: tuple[MatrixKernel, ...]
    source: str


class _Ctx:
    def __init__(self, source: str, base: Path) -> None:
        self.source, self.base = source, base

    def fail(self, path: str, expected: str) -> UserError:
        return UserError(f"{self.source}: {path}: {expected}")

    def path(self, value: str, where: str) -> Path:
        """A file named in the matrix: relative to the matrix file, else to the cwd."""
        p = Path(value).expanduser()
        for candidate in ([p] if p.is_absolute() else [self.base / p, Path.cwd() / p]):
            if candidate.exists():
                return candidate.resolve()
        raise self.fail(where, f"no such file {value!r} (relative to {self.base} or the cwd)")


def shipped_matrices() -> dict[str, Path]:
    """The example matrices shipped in the package, by file stem."""
    return {p.stem: p for p in sorted(MATRICES_DIR.glob("*.toml"))}


def load_matrix(ref: str | Path) -> MatrixSpec:
    """Load a matrix file by path, or a shipped matrix by name."""
    path = Path(ref)
    if not path.exists() and str(ref) in shipped_matrices():
        path = shipped_matrices()[str(ref)]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        known = ", ".join(shipped_matrices())
        raise UserError(f"{ref}: cannot read matrix file ({e}); shipped: {known}") from e
    return parse_matrix(text, str(path), path.resolve().parent)


def parse_matrix(text: str, source: str, base: Path) -> MatrixSpec:
    """Parse and validate matrix TOML; `source` names it in errors, `base` anchors paths."""
    ctx = _Ctx(source, base)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ctx.fail("(toml)", f"not valid TOML: {e}") from e
    _no_unknown(ctx, doc, "", _TOP_KEYS)
    if doc.get("format") != FORMAT_VERSION:
        raise ctx.fail("format", f"expected format = {FORMAT_VERSION}, got {doc.get('format')!r}")
    name = _name(ctx, doc.get("name"), "name")
    repeats = doc.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not (
            1 <= repeats <= MAX_REPEATS):
        raise ctx.fail("repeats", f"expected an integer in 1..{MAX_REPEATS}, got {repeats!r}")
    machine = _string(ctx, doc, "machine", "default")
    if not (MACHINE_PROFILES_DIR / f"{machine}.toml").is_file():
        raise ctx.fail("machine", f"no machine profile {machine!r}")
    accel = _string(ctx, doc, "accel", "auto")
    if accel not in ACCELS:
        raise ctx.fail("accel", f"expected one of {list(ACCELS)}, got {accel!r}")
    files = tuple(ctx.path(v, f"workloads[{i}]")
                  for i, v in enumerate(_str_list(ctx, doc, "workloads", "workloads")))
    suites = _suites(ctx, doc.get("suites"), bool(files))
    kernels = _kernels(ctx, doc.get("kernels"))
    return MatrixSpec(name, _string(ctx, doc, "description", ""), repeats, machine, accel,
                      suites, files, kernels, source)


def _no_unknown(ctx: _Ctx, table: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    for k in table:
        if k not in allowed:
            raise ctx.fail(f"{path}.{k}" if path else k,
                           f"unknown key; expected one of {sorted(allowed)}")


def _name(ctx: _Ctx, value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ctx.fail(where, f"expected a name matching [a-z0-9][a-z0-9._-]*, got {value!r}")
    return value


def _string(ctx: _Ctx, table: Mapping[str, Any], key: str, default: str,
            where: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ctx.fail(where or key, f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _str_list(ctx: _Ctx, table: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ctx.fail(where, f"expected a list of non-empty strings, got {value!r}")
    return list(value)


def _suites(ctx: _Ctx, value: Any, have_files: bool) -> tuple[str, ...]:
    if value is None and have_files:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ctx.fail("suites", f"expected a non-empty list of suite strings, got {value!r}")
    for i, item in enumerate(value):
        try:
            parsed = parse_suite([item])
        except UserError as e:
            raise ctx.fail(f"suites[{i}]", e.message.removeprefix("--suite ")) from e
        if parsed.selftest is None and parsed.workloads is None:
            raise ctx.fail(f"suites[{i}]", "empty suite")
        _check_names(ctx, f"suites[{i}]", parsed.selftest, parsed.workloads)
    if len(set(value)) != len(value):
        raise ctx.fail("suites", f"duplicate suites in {value}")
    return tuple(value)


def _check_names(ctx: _Ctx, where: str, selftest: Any, workloads: Any) -> None:
    """Selftest invocation ids and workload names exist (a typo fails at plan time)."""
    if isinstance(selftest, list):
        known = {i.id for i in load_invocations()}
        unknown = [i for i in selftest if i not in known]
        if unknown:
            raise ctx.fail(where, f"unknown selftest invocation(s) {unknown}; "
                                  f"known: {sorted(known)}")
    if isinstance(workloads, list):
        shipped = set(shipped_workloads())  # file stem = workload name
        unknown = [w for w in workloads if w not in shipped]
        if unknown:
            raise ctx.fail(where, f"unknown workload(s) {unknown}; shipped: {sorted(shipped)}")


def _kernels(ctx: _Ctx, value: Any) -> tuple[MatrixKernel, ...]:
    if not isinstance(value, list) or not value:
        raise ctx.fail("kernels", "expected at least one [[kernels]] table")
    kernels = tuple(_kernel(ctx, t, f"kernels[{i}]") for i, t in enumerate(value))
    names = [k.name for k in kernels]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ctx.fail("kernels", f"kernel names must be unique, duplicated: {dupes} "
                                  "(give each [[kernels]] a name)")
    return kernels


def _kernel(ctx: _Ctx, t: Any, where: str) -> MatrixKernel:
    if not isinstance(t, dict):
        raise ctx.fail(where, "expected a table")
    _no_unknown(ctx, t, where, _KERNEL_KEYS)
    raw = _string(ctx, t, "source", "", f"{where}.source")
    if raw.startswith("debian:"):
        if raw not in DEBIAN_SOURCES:
            raise ctx.fail(f"{where}.source", f"expected one of {list(DEBIAN_SOURCES)} "
                                              f"or a tree path, got {raw!r}")
        source = raw
    elif raw:
        source = str(ctx.path(raw, f"{where}.source"))
    else:
        raise ctx.fail(f"{where}.source", "missing; expected debian:<version> or a tree path")
    rev = t.get("rev")
    if rev is not None and (not isinstance(rev, str) or not rev or source.startswith("debian:")):
        raise ctx.fail(f"{where}.rev", "expected a git revision string of a tree path source")
    configs = _str_list(ctx, t, "configs", f"{where}.configs")
    for j, c in enumerate(configs):
        if not _CONFIG_RE.match(c):
            raise ctx.fail(f"{where}.configs[{j}]", f"expected CONFIG_NAME=value, got {c!r}")
    frags = tuple(ctx.path(v, f"{where}.fragments[{j}]")
                  for j, v in enumerate(_str_list(ctx, t, "fragments", f"{where}.fragments")))
    patches = tuple(ctx.path(v, f"{where}.patches[{j}]")
                    for j, v in enumerate(_str_list(ctx, t, "patches", f"{where}.patches")))
    name = t.get("name") or _default_name(source, rev, frags)
    return MatrixKernel(_name(ctx, name, f"{where}.name"), source, rev, frags,
                        tuple(configs), patches)


def _default_name(source: str, rev: str | None, frags: tuple[Path, ...]) -> str:
    base = source.removeprefix("debian:") if source.startswith("debian:") else Path(source).name
    if rev:
        base += "-" + rev
    for f in frags:
        base += "-" + f.stem
    return re.sub(r"[^a-z0-9._-]", "-", base.lower()).lstrip("-._") or "kernel"
