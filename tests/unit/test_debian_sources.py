"""build/debian.py: the host's apt sources, the private apt config, debian:X.Y specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.build import debian, sources
from orchestrator.errors import UserError

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://disabled.example/debian
Suites: trixie
Components: main
Enabled: no
"""

NODESOURCE = """\
Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Architectures: amd64
"""


def test_parse_deb822_keeps_enabled_deb_stanzas() -> None:
    found = debian.parse_deb822_sources(DEB822)
    assert found == [
        debian.AptSource("http://deb.debian.org/debian", ("bookworm", "bookworm-updates"),
                         ("main",)),
        debian.AptSource("http://deb.debian.org/debian-security", ("bookworm-security",),
                         ("main",))]


def test_parse_one_line_sources_with_options_and_comments() -> None:
    text = ("# a comment\ndeb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian "
            "bookworm main contrib\ndeb-src http://ftp.de.debian.org/debian bookworm main\n"
            "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main # trailing\n")
    assert debian.parse_one_line_sources(text) == [
        debian.AptSource("http://ftp.de.debian.org/debian", ("bookworm",), ("main", "contrib")),
        debian.AptSource("https://packages.cloud.google.com/apt", ("cloud-sdk-bookworm",),
                         ("main",))]


def test_host_sources_reads_list_and_sources_files_only(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://mirror.example/debian bookworm main\n")
    (tmp_path / "sources.list.d/debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d/node.sources.disabled-by-farm").write_text(NODESOURCE)
    uris = [s.uri for s in debian.host_sources(tmp_path)]
    assert uris == ["http://mirror.example/debian", "http://deb.debian.org/debian",
                    "http://deb.debian.org/debian-security"]
    assert debian.host_sources(tmp_path / "missing") == []


def test_debian_sources_reuses_the_host_mirror_and_adds_unstable() -> None:
    found = debian.parse_deb822_sources(DEB822) + debian.parse_deb822_sources(NODESOURCE)
    picked = debian.debian_sources(found)
    assert [s.uri for s in picked] == ["http://deb.debian.org/debian"] * 2
    assert picked[-1].suites == ("unstable",)
    assert debian.debian_sources(debian.parse_deb822_sources(NODESOURCE)) == []


def test_sources_list_text(tmp_path: Path) -> None:
    keyring = tmp_path / "debian-archive-keyring.gpg"
    entries = [debian.AptSource("http://deb.debian.org/debian", ("bookworm", "unstable"),
                                ("main",))]
    assert debian.sources_list(entries, keyring) == (
        "deb http://deb.debian.org/debian bookworm main\n"
        "deb http://deb.debian.org/debian unstable main\n")
    keyring.write_text("k")
    assert debian.sources_list(entries, keyring).startswith(
        f"deb [signed-by={keyring}] http://deb.debian.org/debian bookworm main\n")


def test_apt_options_confine_apt_to_the_private_dir(tmp_path: Path) -> None:
    opts = debian.apt_options(tmp_path)
    settings = dict(o.split("=", 1) for o in opts if o != "-o")
    assert settings["Dir::Etc::SourceList"] == str(tmp_path / "sources.list")
    assert settings["Dir::Etc::SourceParts"] == "/dev/null"
    assert settings["Dir::State::Lists"] == str(tmp_path / "lists")
    assert settings["Dir::Cache"] == str(tmp_path / "cache")
    assert settings["Dir::State::status"] == "/dev/null"  # never the host's dpkg status
    assert all(v.startswith((str(tmp_path), "/dev/null")) for k, v in settings.items()
               if k.startswith("Dir::"))


@pytest.mark.parametrize("spec, version", [("debian:7.2", "7.2"), ("debian:6.1", "6.1"),
                                           ("/src/linux", None), ("debianish", None)])
def test_parse_spec(spec: str, version: str | None) -> None:
    assert debian.parse_spec(spec) == version


@pytest.mark.parametrize("spec", ["debian:", "debian:7", "debian:latest", "debian:7.2.13"])
def test_malformed_spec_is_a_user_error(spec: str) -> None:
    with pytest.raises(UserError, match="expected debian:MAJOR.MINOR"):
        sources.resolve_tree(Path(spec), None)


def test_debian_tree_with_rev_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--rev needs a git --tree"):
        sources.resolve_tree("debian:7.2", "HEAD")


def test_unreachable_mirror_is_a_user_error(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # real apt-get against a mirror that does not exist: exit 2 with the reason, no traceback
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(debian, "host_sources", lambda: [
        debian.AptSource(f"file://{tmp_path}/no-mirror", ("bookworm",), ("main",))])
    with pytest.raises(UserError, match=r"cannot download linux-source-9\.9") as info:
        sources.resolve_tree("debian:9.9", None)
    assert info.value.exit_code == 2 and "apt.log" in info.value.message
    assert not list((tmp_path / "cache" / "trees").glob("*"))


def test_no_debian_mirror_on_the_host_is_a_user_error(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(debian, "host_sources", lambda: [])
    with pytest.raises(UserError, match="no Debian mirror"):
        sources.resolve_tree("debian:9.9", None)


def test_a_cached_extraction_is_used_without_apt(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(debian, "fetch_package", lambda v: pytest.fail("fetched again"))
    done = tmp_path / "cache/trees/linux-source-9.9_9.9.1-1"
    (done / "linux-source-9.9/mm").mkdir(parents=True)
    (done / ".thpvm-complete").write_text("x\n")
    tree = sources.resolve_tree("debian:9.9", None)
    assert tree.path == done / "linux-source-9.9" and tree.kind == "debian-source"
    assert tree.identity == "debian:linux-source-9.9_9.9.1-1"


@pytest.mark.parametrize("src, ok", [
    (debian.AptSource("http://deb.debian.org/debian", ("bookworm", "bookworm-updates"),
                      ("main",)), True),
    (debian.AptSource("http://mirror.example/pub/debian", ("sid",), ("main", "contrib")), True),
    (debian.AptSource("http://deb.debian.org/debian-security", ("bookworm-security",),
                      ("main",)), False),
    (debian.AptSource("https://deb.nodesource.com/node_20.x", ("nodistro",), ("main",)), False),
    (debian.AptSource("https://packages.cloud.google.com/apt", ("cloud-sdk-bookworm",),
                      ("main",)), False),
    (debian.AptSource("http://deb.debian.org/debian", ("bookworm",), ("contrib",)), False),
])
def test_is_debian_archive(src: debian.AptSource, ok: bool) -> None:
    assert debian.is_debian_archive(src) is ok
