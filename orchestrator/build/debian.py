"""Debian's linux-source packages as kernel trees: `--tree debian:6.1|6.12|7.2`.

The host's installed `/usr/src/linux-source-X.Y.tar.xz` is used when present.
Otherwise the package is fetched with `apt-get download` through a private apt
configuration under the cache (`<cache>/apt/`): its own sources.list, lists,
archives and no dpkg status, so the host's apt state is never read for
packages nor changed. The mirror is the host's own Debian mirror (from
/etc/apt/sources.list and sources.list.d/*.list / *.sources), with the host's
suites plus `unstable` for versions the host's release lacks (7.2 today).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator import cache, proc
from orchestrator.errors import InfraError, UserError

log = logging.getLogger(__name__)

DEFAULT_VERSION = "6.12"
EXTRA_SUITE = "unstable"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
APT_TIMEOUT = 1800.0  # a 164 MB download on a slow mirror
_SPEC = re.compile(r"^debian:(\d+\.\d+)$")


@dataclass(frozen=True)
class AptSource:
    """One `deb` entry of the host's apt sources."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_spec(tree: str) -> str | None:
    """'debian:7.2' → '7.2'; None for anything that is not a debian: spec.

    A malformed `debian:` spec (`debian:latest`, `debian:7`) is a UserError.
    """
    if not tree.startswith("debian:"):
        return None
    m = _SPEC.match(tree)
    if not m:
        raise UserError(f"--tree {tree}: expected debian:MAJOR.MINOR, e.g. debian:7.2")
    return m.group(1)


def package_name(version: str) -> str:
    return f"linux-source-{version}"


# ---------------------------------------------------------------- host sources

def parse_one_line_sources(text: str) -> list[AptSource]:
    """`deb [opts] URI SUITE COMPONENT...` lines of a sources.list (deb-src, comments skipped)."""
    found = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # [signed-by=... arch=...]
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "deb":
            found.append(AptSource(parts[1], (parts[2],), tuple(parts[3:])))
    return found


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Stanzas of a deb822 `.sources` file with `Types: deb` (and not `Enabled: no`)."""
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key:  # continuation line
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            found.append(AptSource(uri, tuple(fields.get("suites", "").split()),
                                   tuple(fields.get("components", "").split())))
    return found


def host_sources(etc: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every `deb` entry of the host's apt configuration under `etc`."""
    found: list[AptSource] = []
    main = etc / "sources.list"
    if main.is_file():
        found += parse_one_line_sources(main.read_text(errors="replace"))
    parts = etc / "sources.list.d"
    if parts.is_dir():
        for f in sorted(parts.iterdir()):
            if f.suffix == ".list":
                found += parse_one_line_sources(f.read_text(errors="replace"))
            elif f.suffix == ".sources":
                found += parse_deb822_sources(f.read_text(errors="replace"))
    return found


_DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                  "oldstable", "stable", "testing", "unstable", "experimental"}


def is_debian_archive(src: AptSource) -> bool:
    """A Debian archive mirror entry (Debian suite names, a `main` component), not security."""
    return ("main" in src.components and "security" not in src.uri
            and bool(src.suites)
            and all(x.split("-")[0] in _DEBIAN_SUITES and not x.endswith("-security")
                    for x in src.suites))


def debian_sources(found: list[AptSource]) -> list[AptSource]:
    """The host's Debian archive entries plus the same mirror's `unstable` suite."""
    debian = [s for s in found if is_debian_archive(s)]
    if not debian:
        return []
    mirror = debian[0].uri
    if not any(EXTRA_SUITE in s.suites for s in debian if s.uri == mirror):
        debian.append(AptSource(mirror, (EXTRA_SUITE,), ("main",)))
    return debian


def sources_list(entries: list[AptSource], keyring: Path | None = KEYRING) -> str:
    """The private sources.list text for `entries` (signed by the Debian keyring if present)."""
    opts = f"[signed-by={keyring}] " if keyring and keyring.is_file() else ""
    return "".join(f"deb {opts}{s.uri} {suite} main\n" for s in entries for suite in s.suites)


def apt_options(aptdir: Path) -> list[str]:
    """`-o` options that confine apt-get to `aptdir` (never the host's lists or status)."""
    return [
        "-o", f"Dir::Etc::SourceList={aptdir / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={aptdir / 'lists'}",
        "-o", f"Dir::Cache={aptdir / 'cache'}",
        "-o", "Dir::State::status=/dev/null",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
        "-o", "Acquire::Retries=2",
    ]


# ---------------------------------------------------------------- trees

@dataclass(frozen=True)
class DebianSource:
    """An extracted linux-source tree and the package it came from."""

    path: Path
    label: str  # e.g. linux-source-7.2_7.2.13-1 (names the cache entries)


def installed_tarball(version: str) -> Path | None:
    """The host's /usr/src/linux-source-X.Y.tar.xz (THPVM_LINUX_SOURCE overrides the default)."""
    env = os.environ.get("THPVM_LINUX_SOURCE")
    if env and version == DEFAULT_VERSION:
        return Path(env)
    path = Path(f"/usr/src/{package_name(version)}.tar.xz")
    return path if path.is_file() else None


def source_tree(version: str) -> DebianSource:
    """The extracted tree of Debian's linux-source-`version` (installed, cached or fetched)."""
    tarball = installed_tarball(version)
    if tarball is not None:
        return _from_installed(tarball)
    done = _extracted(version)
    if done is not None:
        return done
    with cache.locked(cache.cache_dir("apt") / "lock"):
        done = _extracted(version)  # another thpvm may have fetched it meanwhile
        if done is not None:
            return done
        start = time.monotonic()
        deb = fetch_package(version)
        fetched = time.monotonic()
        label = deb.name.removesuffix(".deb").rsplit("_", 1)[0].replace("%3a", "_")
        dest = cache.cache_dir("trees") / label
        _extract(deb, version, dest)
        deb.unlink()
        log.info("%s: fetched in %.0f s, extracted in %.0f s", label, fetched - start,
                 time.monotonic() - fetched)
        return DebianSource(_single_subdir(dest), label)


def _from_installed(tarball: Path) -> DebianSource:
    if not tarball.is_file():
        raise UserError(f"kernel source {tarball} not found: run 'make setup' or pass --tree")
    st = tarball.stat()
    tag = cache.digest(str(tarball), str(st.st_size), str(st.st_mtime_ns), length=10)
    label = f"{tarball.name.split('.tar')[0]}-{tag}"
    dest = cache.cache_root() / "trees" / label
    if not (dest / ".thpvm-complete").exists():
        with cache.locked(cache.cache_dir("trees") / f"{label}.lock"):
            if not (dest / ".thpvm-complete").exists():
                _untar(tarball, dest)
    return DebianSource(_single_subdir(dest), label)


def _extracted(version: str) -> DebianSource | None:
    """The newest complete cached extraction of linux-source-`version`, if any."""
    trees = cache.cache_root() / "trees"
    done = sorted(trees.glob(f"{package_name(version)}_*/.thpvm-complete"),
                  key=lambda p: p.stat().st_mtime)
    return DebianSource(_single_subdir(done[-1].parent), done[-1].parent.name) if done else None


def fetch_package(version: str) -> Path:
    """`apt-get download linux-source-X.Y` through the private apt config; the .deb's path."""
    aptdir = cache.cache_dir("apt")
    entries = debian_sources(host_sources())
    if not entries:
        raise UserError(f"cannot fetch {package_name(version)}: no Debian mirror in the "
                        "host's /etc/apt sources; install it or pass --tree PATH")
    (aptdir / "sources.list").write_text(sources_list(entries))
    for sub in ("lists/partial", "cache/archives/partial", "debs"):
        (aptdir / sub).mkdir(parents=True, exist_ok=True)
    opts = apt_options(aptdir)
    apt_log = aptdir / "apt.log"
    log.info("fetching %s from %s (log: %s)", package_name(version), entries[0].uri, apt_log)
    update = proc.run(["apt-get", *opts, "-q", "update"], log_path=apt_log, check=False,
                      timeout=APT_TIMEOUT, error=InfraError)
    debs = aptdir / "debs"
    for old in debs.glob("*.deb"):
        old.unlink()
    res = proc.run(["apt-get", *opts, "-q", "download", package_name(version)], cwd=debs,
                   log_path=apt_log, check=False, timeout=APT_TIMEOUT, error=InfraError)
    found = sorted(debs.glob(f"{package_name(version)}_*.deb"))
    if res.returncode != 0 or not found:
        why = "no network or mirror unreachable" if update.returncode != 0 else \
            "no such package in the mirror's suites"
        raise UserError(f"--tree debian:{version}: cannot download {package_name(version)} "
                        f"({why}; log: {apt_log})",
                        "\n".join((update.output + res.output).strip().splitlines()[-12:]))
    return found[-1]


def _extract(deb: Path, version: str, dest: Path) -> None:
    """The tarball inside the .deb, unpacked into `dest` (complete or absent)."""
    unpack = dest.with_name(dest.name + ".deb-unpack")
    proc.run(["rm", "-rf", "--", unpack])
    proc.run(["dpkg-deb", "-x", deb, unpack], error=InfraError)
    tarballs = sorted((unpack / "usr/src").glob(f"{package_name(version)}.tar.*"))
    if not tarballs:
        raise InfraError(f"{deb.name} holds no usr/src/{package_name(version)}.tar.*")
    _untar(tarballs[0], dest)
    proc.run(["rm", "-rf", "--", unpack])


def _untar(tarball: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".partial")
    proc.run(["rm", "-rf", "--", tmp, dest])
    tmp.mkdir(parents=True)
    log.info("extracting %s into %s", tarball, dest)
    proc.run(["tar", "-xf", tarball, "-C", tmp], timeout=APT_TIMEOUT, error=InfraError)
    tmp.rename(dest)
    (dest / ".thpvm-complete").write_text(f"{tarball}\n")


def _single_subdir(path: Path) -> Path:
    subdirs = [p for p in path.iterdir() if p.is_dir()]
    return subdirs[0] if len(subdirs) == 1 else path
