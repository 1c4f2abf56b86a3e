"""qemu.py: the argv of a boot, machine profiles, and the accelerator choice (no QEMU runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.build import image
from orchestrator.errors import UserError
from orchestrator.machine import qemu

PROFILE = qemu.MachineProfile("test", 2048, 2, "q35", "", 512,
                              "console=ttyS0 panic=-1 loglevel=5")


def request(tmp_path: Path, **kw: object) -> qemu.BootRequest:
    fields: dict[str, object] = dict(kernel=tmp_path / "bzImage",
                                     image=image.Image(tmp_path / "img", "x"),
                                     run_dir=tmp_path / "run", profile=PROFILE)
    fields.update(kw)
    return qemu.BootRequest(**fields)  # type: ignore[arg-type]


def opt(argv: list[str], flag: str) -> list[str]:
    """Every value that follows `flag` in argv."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


DISKS = {"root": Path("/r/rootfs-overlay.qcow2"), "swap": Path("/r/swap.img")}


def test_argv_basics(tmp_path: Path) -> None:
    socks = tmp_path / "s"
    argv = qemu.build_argv(request(tmp_path), DISKS, 41095, socks, "THPVM-READY-0123456789ab")
    assert argv[0] == "qemu-system-x86_64"
    assert "-no-reboot" in argv and "-nodefaults" in argv and "-no-user-config" in argv
    assert opt(argv, "-display") == ["none"]
    assert opt(argv, "-machine") == ["q35"]
    assert opt(argv, "-m") == ["2048"] and opt(argv, "-smp") == ["2"]
    assert opt(argv, "-kernel") == [str(tmp_path / "bzImage")]
    assert opt(argv, "-chardev") == [
        f"socket,id=ser0,path={socks / 'serial.sock'},server=on,wait=on"]
    assert opt(argv, "-serial") == ["chardev:ser0"]
    assert opt(argv, "-qmp") == [f"unix:{socks / 'qmp.sock'},server=on,wait=off"]
    assert "-bios" not in argv  # profile without firmware: QEMU's default


def test_hostfwd_only_on_loopback(tmp_path: Path) -> None:
    argv = qemu.build_argv(request(tmp_path), DISKS, 41095, tmp_path, "M")
    (netdev,) = opt(argv, "-netdev")
    assert netdev == "user,id=n0,hostfwd=tcp:127.0.0.1:41095-:22"
    assert opt(argv, "-device")[0] == "virtio-net-pci,netdev=n0"


def test_append_has_profile_root_ip_marker_swap_and_extra(tmp_path: Path) -> None:
    argv = qemu.build_argv(request(tmp_path, append="transparent_hugepage=always"), DISKS,
                           1, tmp_path, "THPVM-READY-0123456789ab")
    (cmdline,) = opt(argv, "-append")
    words = cmdline.split()
    assert words[:3] == ["console=ttyS0", "panic=-1", "loglevel=5"]  # the profile first
    assert "root=/dev/vda" in words and "init=/sbin/thpvm-init" in words
    assert "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off" in words
    assert "thpvm.marker=THPVM-READY-0123456789ab" in words
    assert "thpvm.swap=/dev/vdb" in words
    assert words[-1] == "transparent_hugepage=always"  # the user's append last: it wins
    assert "  " not in cmdline


def test_swap_disk_only_when_present(tmp_path: Path) -> None:
    with_swap = qemu.build_argv(request(tmp_path), DISKS, 1, tmp_path, "M")
    assert opt(with_swap, "-drive") == [
        "file=/r/rootfs-overlay.qcow2,if=none,id=root,format=qcow2,cache=unsafe",
        "file=/r/swap.img,if=none,id=swap,format=raw,cache=unsafe"]
    assert opt(with_swap, "-device")[1:] == ["virtio-blk-pci,drive=root",
                                             "virtio-blk-pci,drive=swap"]

    root_only = qemu.build_argv(request(tmp_path), {"root": DISKS["root"]}, 1, tmp_path, "M")
    assert opt(root_only, "-drive") == [
        "file=/r/rootfs-overlay.qcow2,if=none,id=root,format=qcow2,cache=unsafe"]
    (cmdline,) = opt(root_only, "-append")
    assert "thpvm.swap" not in cmdline
    assert "id=swap" not in " ".join(root_only)


@pytest.mark.parametrize("accel, want, cpu", [
    ("kvm", ["kvm"], ["host"]),
    ("tcg", ["tcg,thread=multi"], []),
])
def test_accel_args(tmp_path: Path, accel: str, want: list[str], cpu: list[str]) -> None:
    argv = qemu.build_argv(request(tmp_path, accel=accel), DISKS, 1, tmp_path, "M")
    assert opt(argv, "-accel") == want
    assert opt(argv, "-cpu") == cpu


def test_firmware_found_or_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fw = tmp_path / "fw"
    fw.mkdir()
    (fw / "qboot.rom").write_bytes(b"\0")
    monkeypatch.setattr(qemu, "FIRMWARE_DIRS", (tmp_path / "none", fw))
    prof = qemu.MachineProfile("p", 512, 1, "pc", "qboot.rom", 0, "")
    argv = qemu.build_argv(request(tmp_path, profile=prof), {}, 1, tmp_path, "M")
    assert opt(argv, "-bios") == [str(fw / "qboot.rom")]
    prof = qemu.MachineProfile("p", 512, 1, "pc", "missing.rom", 0, "")
    argv = qemu.build_argv(request(tmp_path, profile=prof), {}, 1, tmp_path, "M")
    assert "-bios" not in argv


def test_argv_is_pure_and_all_strings(tmp_path: Path) -> None:
    req = request(tmp_path)
    a = qemu.build_argv(req, DISKS, 5, tmp_path, "M")
    assert a == qemu.build_argv(req, DISKS, 5, tmp_path, "M")
    assert all(isinstance(x, str) for x in a)
    assert not (tmp_path / "run").exists()
    json.dumps(a)


USERNET = ("Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port "
           "RecvQ SendQ\r\n  TCP[HOST_FORWARD]   8       127.0.0.1 38585       10.0.2.15    22"
           "     0     0\r\n")  # recorded from QEMU 7.2 with hostfwd=tcp:127.0.0.1:0-:22


def test_hostfwd_port_is_read_from_info_usernet() -> None:
    assert qemu.parse_hostfwd_port(USERNET) == 38585
    assert qemu.parse_hostfwd_port("Hub -1 (n0):\r\n") is None
    other = USERNET.replace("    22 ", "    80 ")
    assert qemu.parse_hostfwd_port(other) is None  # only the SSH forward counts


def test_keys_disk_holds_the_host_key_pair_owned_by_root(tmp_path: Path) -> None:
    import tarfile

    img = image.Image(tmp_path / "img", "x")
    img.dir.mkdir()
    assert qemu.make_keys_disk(img, tmp_path / "k.tar") is None  # an image with keys inside
    img.host_key.write_text("PRIVATE")
    img.host_key_pub.write_text("ssh-ed25519 AAAA thpvm-host-key")
    disk = qemu.make_keys_disk(img, tmp_path / "k.tar")
    assert disk is not None and disk.stat().st_mode & 0o777 == 0o600
    assert disk.stat().st_size % 512 == 0  # a raw disk is whole sectors
    with tarfile.open(disk) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"}
        key = members["ssh_host_ed25519_key"]
        assert (key.mode, key.uid, key.gid) == (0o600, 0, 0)
        assert tar.extractfile(key).read() == b"PRIVATE"  # type: ignore[union-attr]


def test_keys_disk_is_read_only_with_its_serial(tmp_path: Path) -> None:
    disks = {**DISKS, "keys": Path("/s/keys.tar")}
    argv = qemu.build_argv(request(tmp_path), disks, 0, tmp_path, "M")
    assert "file=/s/keys.tar,if=none,id=keys,format=raw,readonly=on" in opt(argv, "-drive")
    assert "virtio-blk-pci,drive=keys,serial=thpvm-keys" in opt(argv, "-device")
    # root and swap keep their order (vda, vdb): the keys disk comes last
    assert opt(argv, "-drive")[-1].startswith("file=/s/keys.tar")


# ---------------------------------------------------------------- profiles

def test_load_shipped_default_profile() -> None:
    p = qemu.load_machine_profile()
    assert p == qemu.MachineProfile(
        "default", 2048, 2, "q35", "qboot.rom", 512,
        "console=ttyS0 panic=-1 loglevel=5 random.trust_cpu=on i8042.noaux=1 i8042.nokbd=1 "
        "no_timer_check tsc=unstable trace_event=huge_memory:mm_khugepaged_scan_pmd,"
        "huge_memory:mm_collapse_huge_page,huge_memory:mm_collapse_huge_page_isolate,"
        "huge_memory:mm_collapse_huge_page_swapin,huge_memory:mm_khugepaged_scan",
        "max")


def test_load_profile_by_path_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "small.toml"
    path.write_text('name = "small"\nmemory_mb = 512\ncpus = 1\nmachine = "pc"\n')
    want = qemu.MachineProfile("small", 512, 1, "pc", "", 0, "")
    assert qemu.load_machine_profile(str(path)) == want


def test_load_profile_missing_names_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"machine profile .*nope.toml"):
        qemu.load_machine_profile(str(tmp_path / "nope.toml"))
    with pytest.raises(UserError, match=r"profiles/no-such-profile.toml"):
        qemu.load_machine_profile("no-such-profile")


@pytest.mark.parametrize("text, what", [
    ('name = "x"\ncpus = 1\nmachine = "pc"\n', "memory_mb"),
    ('name = "x"\nmemory_mb = "lots"\ncpus = 1\nmachine = "pc"\n', "lots"),
    ("name = \n", "bad or missing key"),
])
def test_load_profile_bad_content_names_file(tmp_path: Path, text: str, what: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        qemu.load_machine_profile(str(path))
    assert str(path) in info.value.message and what in info.value.message


# ---------------------------------------------------------------- accelerator

@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("THPVM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(qemu, "qemu_version", lambda: "QEMU emulator version 7.2.0 (fake)")
    return tmp_path / "cache"


def kvm_access(monkeypatch: pytest.MonkeyPatch, ok: bool) -> list[str]:
    asked: list[str] = []
    real = os.access

    def fake_access(path: object, mode: int, *a: object, **kw: object) -> bool:
        if str(path) == "/dev/kvm":
            asked.append(str(path))
            assert mode == os.R_OK | os.W_OK
            return ok
        return real(path, mode, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", fake_access)
    return asked


def test_tcg_requested(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = kvm_access(monkeypatch, True)
    choice = qemu.choose_accel("tcg")
    assert choice == qemu.AccelChoice("tcg", "requested with --accel tcg", False)
    assert asked == []  # no probe of /dev/kvm at all


def test_kvm_requested_without_access(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kvm_access(monkeypatch, False)
    with pytest.raises(UserError, match="/dev/kvm is missing or not accessible"):
        qemu.choose_accel("kvm")


def test_kvm_requested_with_access(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kvm_access(monkeypatch, True)
    choice = qemu.choose_accel("kvm")
    assert choice.accel == "kvm" and not choice.probe_needed


def test_bad_accel_value(cache: Path) -> None:
    with pytest.raises(UserError, match="--accel hvf: expected auto, kvm or tcg"):
        qemu.choose_accel("hvf")


def test_auto_without_kvm_is_tcg(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kvm_access(monkeypatch, False)
    choice = qemu.choose_accel("auto")
    assert choice.accel == "tcg" and not choice.probe_needed
    assert "/dev/kvm" in choice.reason
    assert not (cache / "accel").exists() or not list((cache / "accel").iterdir())


def test_auto_probes_then_remembers(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kvm_access(monkeypatch, True)
    first = qemu.choose_accel("auto")
    assert first == qemu.AccelChoice("kvm", "probing KVM", probe_needed=True)

    qemu.remember_accel("tcg", "KVM boot did not reach the marker")
    (verdict,) = (cache / "accel").glob("*.json")
    saved = json.loads(verdict.read_text())
    assert saved["accel"] == "tcg" and saved["reason"] == "KVM boot did not reach the marker"

    again = qemu.choose_accel("auto")
    assert again.accel == "tcg" and not again.probe_needed
    assert again.reason == "remembered probe verdict: KVM boot did not reach the marker"

    qemu.remember_accel("kvm", "KVM boot reached the marker")
    assert qemu.choose_accel("auto").accel == "kvm"
    assert len(list((cache / "accel").glob("*.json"))) == 1


def test_verdict_is_per_qemu_version(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kvm_access(monkeypatch, True)
    qemu.remember_accel("tcg", "broken")
    monkeypatch.setattr(qemu, "qemu_version", lambda: "QEMU emulator version 9.0.0 (fake)")
    assert qemu.choose_accel("auto").probe_needed  # a new QEMU is probed again
