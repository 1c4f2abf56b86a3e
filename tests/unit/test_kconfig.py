"""kconfig.py: fragment parsing, merging, and the survival check on real `.config` text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.build import kconfig
from orchestrator.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parent.parent.parent

# The head of a realistic olddefconfig output (6.12, x86_64, tinyconfig + thpvm fragments),
# with what olddefconfig does to the requested options: some survive, some were dropped.
FINAL_CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.12.57 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14) 12.2.0"
CONFIG_CC_IS_GCC=y
CONFIG_GCC_VERSION=120200
CONFIG_CLANG_VERSION=0
CONFIG_AS_IS_GNU=y
CONFIG_BUILDTIME_TABLE_SORT=y

#
# General setup
#
CONFIG_INIT_ENV_ARG_LIMIT=32
# CONFIG_COMPILE_TEST is not set
CONFIG_LOCALVERSION=""
# CONFIG_LOCALVERSION_AUTO is not set
CONFIG_DEFAULT_HOSTNAME="(none)"
# CONFIG_KERNEL_GZIP is not set
CONFIG_KERNEL_LZ4=y
CONFIG_64BIT=y
CONFIG_X86_64=y
CONFIG_SMP=y
CONFIG_NR_CPUS=64
CONFIG_LOG_BUF_SHIFT=17
CONFIG_CMDLINE=""

#
# Memory Management options
#
CONFIG_SWAP=y
CONFIG_COMPACTION=y
CONFIG_MIGRATION=y
CONFIG_TRANSPARENT_HUGEPAGE=y
# CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS is not set
CONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y
# CONFIG_READ_ONLY_THP_FOR_FS is not set
# CONFIG_USERFAULTFD is not set
# end of Memory Management options
# CONFIG_IPV6 is not set
CONFIG_HZ=250
"""


# ---------------------------------------------------------------- parsing

def test_parse_set_unset_comments_and_blank_lines() -> None:
    text = ("# a comment\n\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n"
            'CONFIG_D="quoted value"\nCONFIG_E=0x1000\n  CONFIG_F=y  \n# end of X\n')
    assert kconfig.parse_config_text(text, "f") == {
        "CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "m", "CONFIG_D": '"quoted value"',
        "CONFIG_E": "0x1000", "CONFIG_F": "y"}


def test_near_miss_unset_lines_are_comments_like_in_kconfig() -> None:
    # scripts/kconfig/confdata.c also skips any '#' line that is not exactly
    # '# CONFIG_X is not set'
    assert kconfig.parse_config_text("#CONFIG_A is not set\n# CONFIG_B is not\n", "f") == {}


def test_parse_later_line_wins_within_a_fragment() -> None:
    assert kconfig.parse_config_text("CONFIG_A=y\n# CONFIG_A is not set\n", "f") == {
        "CONFIG_A": "n"}


def test_parse_real_config_text() -> None:
    opts = kconfig.parse_config_text(FINAL_CONFIG, ".config")
    assert opts["CONFIG_CC_VERSION_TEXT"] == '"gcc (Debian 12.2.0-14) 12.2.0"'
    assert opts["CONFIG_LOCALVERSION"] == '""'
    assert opts["CONFIG_READ_ONLY_THP_FOR_FS"] == "n"
    assert opts["CONFIG_HZ"] == "250"
    assert "CONFIG_DEBUG_VM" not in opts


@pytest.mark.parametrize("bad", ["CONFIG_A y", "CONFIG_A", "A=y", "config_a=y",
                                 "CONFIG_A-B=y", "garbage", "; CONFIG_A=y"])
def test_malformed_line_names_file_and_line(bad: str) -> None:
    with pytest.raises(UserError) as info:
        kconfig.parse_config_text(f"CONFIG_OK=y\n# comment\n{bad}\n", "frag.config")
    assert info.value.message.startswith("frag.config:3: not a kconfig line")
    assert repr(bad) in info.value.message


def test_load_fragment_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.config"
    path.write_text("CONFIG_A=y\n# CONFIG_B is not set\n")
    frag = kconfig.load_fragment(path)
    assert frag.source == str(path) and frag.options == {"CONFIG_A": "y", "CONFIG_B": "n"}
    with pytest.raises(UserError, match=r"cannot read kconfig fragment .*missing.config"):
        kconfig.load_fragment(tmp_path / "missing.config")
    (tmp_path / "bad.config").write_text("CONFIG_A=y\nnonsense\n")
    with pytest.raises(UserError, match=r"bad.config:2:"):
        kconfig.load_fragment(tmp_path / "bad.config")


def test_shipped_fragments_parse() -> None:
    for name in ("base.config", "thp.config", "debug.config"):
        frag = kconfig.load_fragment(REPO / "kconfigs" / name)
        assert frag.options, name
    thp = kconfig.load_fragment(REPO / "kconfigs" / "thp.config")
    assert thp.options["CONFIG_TRANSPARENT_HUGEPAGE"] == "y"


def test_fragment_text_round_trips() -> None:
    frag = kconfig.Fragment("f", {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"s"'})
    assert frag.text() == 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="s"\n'
    assert kconfig.parse_config_text(frag.text(), "t") == frag.options


@given(st.dictionaries(st.from_regex(r"CONFIG_[A-Z0-9_]{1,12}", fullmatch=True),
                       st.sampled_from(["y", "m", "n", "0", '"x y"', "0x10", "-1"])))
def test_fragment_text_round_trip_property(options: dict[str, str]) -> None:
    frag = kconfig.Fragment("f", options)
    assert kconfig.parse_config_text(frag.text(), "f") == options


@given(st.text(max_size=200))
def test_parser_never_raises_anything_but_user_error(text: str) -> None:
    try:
        kconfig.parse_config_text(text, "fuzz")
    except UserError as e:
        assert e.message.startswith("fuzz:")


# ---------------------------------------------------------------- --config one-offs

def test_fragment_from_options() -> None:
    frag = kconfig.fragment_from_options(
        ["CONFIG_A=y", "B=m", "# CONFIG_C is not set", 'CONFIG_D="x"'])
    assert frag.source == "--config"
    assert frag.options == {"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_C": "n",
                            "CONFIG_D": '"x"'}


def test_fragment_from_options_bad_value_names_option() -> None:
    with pytest.raises(UserError, match=r"--config CONFIG_A y:1: not a kconfig line"):
        kconfig.fragment_from_options(["CONFIG_A y"])
    with pytest.raises(UserError, match=r"--config NOEQUALS"):
        kconfig.fragment_from_options(["NOEQUALS"])


# ---------------------------------------------------------------- merging

def test_merge_keeps_first_source_and_allows_agreeing_repeats() -> None:
    a = kconfig.Fragment("base.config", {"CONFIG_A": "y", "CONFIG_B": "n"})
    b = kconfig.Fragment("thp.config", {"CONFIG_A": "y", "CONFIG_C": "m"})
    assert kconfig.merge_fragments([a, b]) == {
        "CONFIG_A": ("y", "base.config"), "CONFIG_B": ("n", "base.config"),
        "CONFIG_C": ("m", "thp.config")}
    assert kconfig.merge_fragments([]) == {}


def test_merge_conflict_names_both_sources_and_every_conflict() -> None:
    a = kconfig.Fragment("kconfigs/thp.config", {"CONFIG_SWAP": "y", "CONFIG_X": "1"})
    b = kconfig.Fragment("--config", {"CONFIG_SWAP": "n", "CONFIG_X": "2"})
    with pytest.raises(ConfigError) as info:
        kconfig.merge_fragments([a, b])
    msg = info.value.message
    assert "CONFIG_SWAP: y in kconfigs/thp.config but n in --config" in msg
    assert "CONFIG_X: 1 in kconfigs/thp.config but 2 in --config" in msg
    assert info.value.exit_code == 2


def test_merge_conflict_is_against_the_first_setter() -> None:
    frags = [kconfig.Fragment("one", {"CONFIG_A": "y"}), kconfig.Fragment("two", {"CONFIG_A": "y"}),
             kconfig.Fragment("three", {"CONFIG_A": "n"})]
    with pytest.raises(ConfigError, match="CONFIG_A: y in one but n in three"):
        kconfig.merge_fragments(frags)


# ---------------------------------------------------------------- survival

def requested(**opts: str) -> dict[str, tuple[str, str]]:
    return {f"CONFIG_{k}": (v, "kconfigs/thp.config") for k, v in opts.items()}


def test_survival_on_real_config_text() -> None:
    final = kconfig.parse_config_text(FINAL_CONFIG, ".config")
    req = requested(TRANSPARENT_HUGEPAGE="y", TRANSPARENT_HUGEPAGE_MADVISE="y", SWAP="y",
                    IPV6="n", NINEP_FS="n", READ_ONLY_THP_FOR_FS="y", USERFAULTFD="y",
                    KERNEL_LZ4="y", HZ="1000", DEBUG_VM="y")
    dropped = kconfig.check_survival(req, final)
    assert [(d.symbol, d.wanted, d.got) for d in dropped] == [
        ("CONFIG_READ_ONLY_THP_FOR_FS", "y", "n"), ("CONFIG_USERFAULTFD", "y", "n"),
        ("CONFIG_HZ", "1000", "250"), ("CONFIG_DEBUG_VM", "y", "n")]
    # an absent option requested "n" survived (NINEP_FS is in no config at all)
    assert all(d.hint == "" for d in dropped)
    assert dropped[0].describe() == \
        "CONFIG_READ_ONLY_THP_FOR_FS=y (from kconfigs/thp.config) ended up n"


def test_module_is_not_builtin() -> None:
    dropped = kconfig.check_survival(requested(EXT4_FS="y"), {"CONFIG_EXT4_FS": "m"})
    assert [(d.symbol, d.got) for d in dropped] == [("CONFIG_EXT4_FS", "m")]


@pytest.fixture
def kconfig_tree(tmp_path: Path) -> Path:
    """A tiny fake Kconfig tree."""
    (tmp_path / "mm").mkdir()
    (tmp_path / "init").mkdir()
    (tmp_path / "Kconfig").write_text('source "mm/Kconfig"\nsource "init/Kconfig"\n')
    (tmp_path / "mm" / "Kconfig").write_text("""\
menu "Memory Management options"

config READ_ONLY_THP_FOR_FS
\tbool "Read-only THP for filesystems (EXPERIMENTAL)"
\tdepends on TRANSPARENT_HUGEPAGE && SHMEM
\thelp
\t  Allow khugepaged to put read-only file-backed pages in THP.

config USERFAULTFD
\tbool "Enable userfaultfd() system call"
\tdepends on MMU
\tdepends on !UML

menuconfig TRANSPARENT_HUGEPAGE
\tbool "Transparent Hugepage Support"
\tdepends on HAVE_ARCH_TRANSPARENT_HUGEPAGE && !PREEMPT_RT
\tselect COMPACTION

config HAVE_ARCH_TRANSPARENT_HUGEPAGE
\tbool

endmenu
""")
    (tmp_path / "init" / "Kconfig").write_text("""\
config HZ
\tint
\tdefault 250
""")
    (tmp_path / "mm" / "Kconfig.debug").write_text("""\
config DEBUG_VM
\tbool "Debug VM"
\tdepends on DEBUG_KERNEL
""")
    return tmp_path


def test_dropped_option_hints_from_kconfig_tree(kconfig_tree: Path) -> None:
    final = kconfig.parse_config_text(FINAL_CONFIG, ".config")
    req = requested(READ_ONLY_THP_FOR_FS="y", USERFAULTFD="y", HZ="1000", DEBUG_VM="y",
                    THPVM_NO_SUCH_SYMBOL="y", TRANSPARENT_HUGEPAGE="y")
    hints = {d.symbol: d.hint for d in kconfig.check_survival(req, final, kconfig_tree)}
    assert hints == {
        "CONFIG_READ_ONLY_THP_FOR_FS":
            "unmet dependency? depends on TRANSPARENT_HUGEPAGE && SHMEM",
        "CONFIG_USERFAULTFD": "unmet dependency? depends on MMU; depends on !UML",
        "CONFIG_HZ": "probably unmet dependency",  # defined, no depends on
        "CONFIG_DEBUG_VM": "unmet dependency? depends on DEBUG_KERNEL",  # Kconfig.debug
        "CONFIG_THPVM_NO_SUCH_SYMBOL": "unknown symbol in this tree",
    }
    # the survivor (TRANSPARENT_HUGEPAGE=y) is not listed
    text = kconfig.format_dropped(kconfig.check_survival(req, final, kconfig_tree))
    assert text.splitlines()[0] == ("  CONFIG_READ_ONLY_THP_FOR_FS=y (from kconfigs/thp.config)"
                                    " ended up n [unmet dependency? depends on "
                                    "TRANSPARENT_HUGEPAGE && SHMEM]")
    assert len(text.splitlines()) == 6  # five options and the note on version annotations
    assert "'CONFIG_X=y  # until: X.Y'" in text.splitlines()[-1]


def test_menuconfig_symbol_hint(kconfig_tree: Path) -> None:
    assert kconfig.dependency_hint(kconfig_tree, "CONFIG_TRANSPARENT_HUGEPAGE") == \
        "unmet dependency? depends on HAVE_ARCH_TRANSPARENT_HUGEPAGE && !PREEMPT_RT"


def test_hint_does_not_match_symbol_prefixes(kconfig_tree: Path) -> None:
    # HAVE_ARCH_TRANSPARENT_HUGEPAGE and TRANSPARENT_HUGEPAGE share a suffix / prefix
    assert kconfig.dependency_hint(kconfig_tree, "CONFIG_TRANSPARENT") == \
        "unknown symbol in this tree"
    assert kconfig.dependency_hint(kconfig_tree, "CONFIG_HAVE_ARCH_TRANSPARENT_HUGEPAGE") == \
        "probably unmet dependency"


def test_shipped_fragments_merge_without_conflict() -> None:
    frags = [kconfig.load_fragment(REPO / "kconfigs" / n)
             for n in ("base.config", "thp.config", "debug.config")]
    merged = kconfig.merge_fragments(frags)
    assert merged["CONFIG_TRANSPARENT_HUGEPAGE"][1].endswith("thp.config")
    assert merged["CONFIG_IPV6"] == ("n", str(REPO / "kconfigs" / "base.config"))


def test_dependency_hint_names_enclosing_if_blocks(tmp_path) -> None:
    (tmp_path / "Kconfig").write_text(
        "menuconfig RUNTIME_TESTING_MENU\n\tbool \"tests\"\n\nif RUNTIME_TESTING_MENU\n\n"
        "config LKDTM\n\ttristate \"lkdtm\"\n\tdepends on DEBUG_FS\n\nendif\n\n"
        "config OTHER\n\tbool \"x\"\n")
    hint = kconfig.dependency_hint(tmp_path, "CONFIG_LKDTM")
    assert "depends on DEBUG_FS" in hint and "inside 'if RUNTIME_TESTING_MENU'" in hint
    assert "inside" not in kconfig.dependency_hint(tmp_path, "CONFIG_OTHER")


# ---------------------------------------------------------------- version annotations

def test_version_annotations_parse_and_filter() -> None:
    frag = kconfig.parse_fragment_text(
        "CONFIG_OLD=y  # until: 7.1\n# CONFIG_MID is not set # since: 6.6 until: 7.1\n"
        "CONFIG_NEW=m\t# since: 7.2\nCONFIG_ALL=y\n", "f")
    assert frag.options == {"CONFIG_OLD": "y", "CONFIG_MID": "n", "CONFIG_NEW": "m",
                            "CONFIG_ALL": "y"}
    assert frag.applies["CONFIG_MID"] == kconfig.Applies((6, 6), (7, 1))
    assert frag.for_version((7, 2)).options == {"CONFIG_NEW": "m", "CONFIG_ALL": "y"}
    assert frag.for_version((7, 1)).options == {"CONFIG_OLD": "y", "CONFIG_MID": "n",
                                                "CONFIG_ALL": "y"}
    assert frag.for_version((6, 1)).options == {"CONFIG_OLD": "y", "CONFIG_ALL": "y"}
    assert frag.for_version(None).options == frag.options  # unknown version: everything


def test_a_later_unannotated_line_clears_the_annotation() -> None:
    frag = kconfig.parse_fragment_text("CONFIG_A=y # until: 7.1\nCONFIG_A=y\n", "f")
    assert frag.for_version((7, 2)).options == {"CONFIG_A": "y"}


@pytest.mark.parametrize("bad", ["CONFIG_A=y # since 7.2", "CONFIG_A=y # until: 7",
                                 "CONFIG_A=y # since: 7.2 since: 7.3",
                                 "CONFIG_A=y # since: 7.2 until: 7.1"])
def test_malformed_annotations_are_errors(bad: str) -> None:
    with pytest.raises(UserError, match=r"^f:1: "):
        kconfig.parse_fragment_text(bad + "\n", "f")


def test_quoted_values_may_contain_hashes() -> None:
    assert kconfig.parse_config_text('CONFIG_S="a # b"\n', "f") == {"CONFIG_S": '"a # b"'}


def test_shipped_thp_fragment_knows_versions() -> None:
    thp = kconfig.load_fragment(REPO / "kconfigs" / "thp.config")
    on_72 = thp.for_version((7, 2)).options
    on_612 = thp.for_version((6, 12)).options
    assert "CONFIG_READ_ONLY_THP_FOR_FS" not in on_72  # removed in 7.2
    assert on_612["CONFIG_READ_ONLY_THP_FOR_FS"] == "y"
    assert on_72["CONFIG_XFS_FS"] == "y" and on_72["CONFIG_BLK_DEV_LOOP"] == "y"
    assert "CONFIG_XFS_FS" not in on_612  # 6.12 builds (and cache keys) stay as they were


def test_out_of_range_option_does_not_conflict_with_a_command_line_value() -> None:
    thp = kconfig.load_fragment(REPO / "kconfigs" / "thp.config")
    cli = kconfig.fragment_from_options(["CONFIG_READ_ONLY_THP_FOR_FS=n"])
    merged = kconfig.merge_fragments([thp.for_version((7, 2)), cli.for_version((7, 2))])
    assert merged["CONFIG_READ_ONLY_THP_FOR_FS"] == ("n", "--config")
    with pytest.raises(ConfigError, match="conflict"):
        kconfig.merge_fragments([thp.for_version((6, 12)), cli.for_version((6, 12))])
