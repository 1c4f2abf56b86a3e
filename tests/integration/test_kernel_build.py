"""Real kernel builds of the default Debian 6.12 tree with the shipped fragments."""

from __future__ import annotations

from pathlib import Path

from orchestrator.build import kconfig, kernel
from orchestrator.cli import main


def test_default_kernel_has_every_thp_option(default_kernel):
    final = kconfig.parse_config_text(default_kernel.config.read_text(), "config")
    for frag in ("thp.config", "base.config"):
        fragment = kconfig.load_fragment(kernel.KCONFIG_DIR / frag)
        requested = fragment.for_version(default_kernel.tree.version).options
        missing = {k: v for k, v in requested.items() if final.get(k, "n") != v}
        assert not missing, f"{frag} options not in the built config: {missing}"
    assert default_kernel.bzimage.stat().st_size > 1_000_000
    assert (default_kernel.headers / "usr/include/linux/mman.h").is_file()
    assert default_kernel.release.startswith("6.12")


def test_second_build_is_a_cache_hit(default_kernel):
    again = kernel.build_kernel(kernel.KernelRequest())
    assert again.cached  # config check only, no make (its speed is a bench figure)
    assert again.key == default_kernel.key


def test_unsatisfiable_option_exits_2_and_names_it(tmp_path: Path, capsys, default_kernel):
    frag = tmp_path / "bad.config"
    # DRM is off in tinyconfig, so the virtio GPU driver cannot be enabled
    frag.write_text("CONFIG_DRM_VIRTIO_GPU=y\n")
    code = main(["kernel", "build", "--fragment", str(frag)])
    err = capsys.readouterr().err
    assert code == 2
    assert "CONFIG_DRM_VIRTIO_GPU=y" in err
    assert str(frag) in err
    assert "depends on" in err


def test_conflicting_fragments_exit_2_naming_both(tmp_path: Path, capsys, default_kernel):
    a, b = tmp_path / "a.config", tmp_path / "b.config"
    a.write_text("CONFIG_SWAP=y\n")
    b.write_text("# CONFIG_SWAP is not set\n")
    code = main(["kernel", "build", "--fragment", str(a), "--fragment", str(b)])
    err = capsys.readouterr().err
    assert code == 2
    assert "CONFIG_SWAP" in err and "kconfigs/thp.config" in err and str(b) in err
