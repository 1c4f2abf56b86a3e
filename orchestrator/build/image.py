"""Guest root file systems from a recipe in `vm-images/`, keys, overlays, swap disks.

A recipe (`vm-images/<name>.toml`) lists the Debian suite and packages and the
files to install. `build_image` runs mmdebstrap (minbase) into a directory,
installs the thpvm init, sshd settings and the public half of a per-image SSH
client key pair, then `mkfs.ext4 -d` into a raw file and converts it to qcow2.
The base image is cached by recipe content and made read-only: runs only ever
boot a qcow2 overlay of it plus a fresh swap disk in their run directory.

No secret is inside the qcow2: the guest's SSH host key pair is generated next
to it (0600) and handed to each boot on a separate read-only disk (see
`machine.qemu.make_keys_disk`). The image directory is private (0700), its
files owner-only (the base qcow2 0400).
"""

from __future__ import annotations

import logging
import os
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from orchestrator import cache, proc
from orchestrator.data import IMAGES_DIR
from orchestrator.errors import ImageError, UserError

log = logging.getLogger(__name__)

DEFAULT_RECIPE = "debian-bookworm"
IMAGE_FILES = ("rootfs.qcow2", "rootfs.sha256", "id_ed25519", "ssh_host_ed25519_key.pub")
RECIPE_KEYS = {"name", "suite", "variant", "mirror", "packages", "files", "image"}


@dataclass(frozen=True)
class Recipe:
    """A parsed image recipe."""

    path: Path
    name: str
    suite: str
    variant: str
    mirror: str
    packages: tuple[str, ...]
    files: dict[str, str]
    size_mb: int
    prune: tuple[str, ...]

    def key(self) -> str:
        """Content key: the recipe file and every file it installs."""
        parts: list[str | bytes] = [self.path.read_bytes()]
        for src in sorted(self.files):
            parts += [src, (self.path.parent / src).read_bytes()]
        return cache.digest(*parts)


@dataclass(frozen=True)
class Image:
    """A built base image and what is needed to reach a guest booted from it."""

    dir: Path
    recipe: str

    @property
    def qcow2(self) -> Path:
        return self.dir / "rootfs.qcow2"

    @property
    def ssh_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def host_key(self) -> Path:
        """The guest's private SSH host key (outside the qcow2; injected per boot)."""
        return self.dir / "ssh_host_ed25519_key"

    @property
    def host_key_pub(self) -> Path:
        return self.dir / "ssh_host_ed25519_key.pub"

    @property
    def sha256(self) -> str:
        return (self.dir / "rootfs.sha256").read_text().split()[0]


def load_recipe(name_or_path: str) -> Recipe:
    """Load `vm-images/<name>.toml` or a recipe file path; errors name the file and key."""
    path = Path(name_or_path)
    if not path.suffix:
        path = IMAGES_DIR / f"{name_or_path}.toml"
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise UserError(f"image recipe {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"image recipe {path}: invalid TOML: {e}") from e
    unknown = set(data) - RECIPE_KEYS
    if unknown:
        raise UserError(f"image recipe {path}: unknown key(s) {sorted(unknown)}")
    try:
        img = data.get("image", {})
        recipe = Recipe(path, str(data["name"]), str(data["suite"]),
                        str(data.get("variant", "minbase")), str(data.get("mirror", "")),
                        tuple(str(p) for p in data["packages"]),
                        {str(k): str(v) for k, v in data.get("files", {}).items()},
                        int(img.get("size_mb", 1024)), tuple(img.get("prune", ())))
    except KeyError as e:
        raise UserError(f"image recipe {path}: missing key {e.args[0]!r}") from e
    for src in recipe.files:
        if not (path.parent / src).is_file():
            raise UserError(f"image recipe {path}: files.{src}: no such file")
    return recipe


def build_image(recipe_name: str = DEFAULT_RECIPE, force: bool = False) -> Image:
    """Build (or reuse) the base image for a recipe. One builder at a time per recipe
    key: a second process waits on the lock, then finds the image built."""
    recipe = load_recipe(recipe_name)
    final = cache.cache_dir("images") / f"{recipe.name}-{recipe.key()}"
    if not force and _usable(final):
        log.info("image cache hit: %s", final)
        make_private(final)
        return Image(final, recipe.name)
    with cache.locked(final.with_name(final.name + ".lock")):
        if force or not _usable(final):
            _build(recipe, final)
    return Image(final, recipe.name)


def _build(recipe: Recipe, final: Path) -> None:
    if os.geteuid() != 0:
        raise ImageError("building the guest image needs root (mmdebstrap into a directory "
                         "and mkfs.ext4 -d keep file ownership): run as root or with sudo")
    work = final.with_name(final.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    root = work / "root"
    _mmdebstrap(recipe, root, work / "mmdebstrap.log")
    _install_files(recipe, root)
    _install_keys(root, work)
    _make_disk(recipe, root, work)
    shutil.rmtree(root)
    cache.seal(work, IMAGE_FILES)  # last: the entry is complete
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)


def _usable(final: Path) -> bool:
    """The cached image is complete and intact (a bad one is logged and rebuilt). An
    entry from before seals is adopted if its rootfs.sha256 matches the qcow2."""
    bad = cache.verify(final)
    if bad is None:
        return True
    if not final.exists():
        return False
    if not (final / cache.SEAL).exists() and _legacy_intact(final):
        log.info("image cache entry %s: rootfs.sha256 matches, sealing it", final)
        cache.seal(final, IMAGE_FILES)
        return True
    log.warning("image cache entry %s is bad (%s): rebuilding it", final, bad)
    return False


def _legacy_intact(final: Path) -> bool:
    try:
        want = (final / "rootfs.sha256").read_text().split()[0]
        return all((final / f).is_file() for f in IMAGE_FILES) and \
            sha256_file(final / "rootfs.qcow2") == want
    except (OSError, IndexError):
        return False


def _mmdebstrap(recipe: Recipe, root: Path, log_path: Path) -> None:
    argv = ["mmdebstrap", "--mode=root", f"--variant={recipe.variant}",
            "--include=" + ",".join(recipe.packages), "--skip=check/empty",
            recipe.suite, str(root)]
    if recipe.mirror:
        argv.append(recipe.mirror)
    log.info("mmdebstrap %s into %s", recipe.suite, root)
    proc.run(argv, log_path=log_path, timeout=1800, keep_output=False, error=ImageError)


def _install_files(recipe: Recipe, root: Path) -> None:
    for src, dest in recipe.files.items():
        target = root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(recipe.path.parent / src, target)
    for d in recipe.prune:
        shutil.rmtree(root / d.lstrip("/"), ignore_errors=True)
    (root / "run/sshd").mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("thpvm\n")


def _install_keys(root: Path, work: Path) -> None:
    """Per-image client key pair (0600) and the guest's host key pair, generated now;
    the host key stays outside the root file system (injected at each boot)."""
    ssh = root / "etc/ssh"
    for old in ssh.glob("ssh_host_*"):
        old.unlink()
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "thpvm-host-key",
              "-f", work / "ssh_host_ed25519_key"], error=ImageError)
    os.chmod(work / "ssh_host_ed25519_key", 0o600)
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "thpvm",
              "-f", work / "id_ed25519"], error=ImageError)
    os.chmod(work / "id_ed25519", 0o600)
    dot_ssh = root / "root/.ssh"
    dot_ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy2(work / "id_ed25519.pub", dot_ssh / "authorized_keys")


def _make_disk(recipe: Recipe, root: Path, work: Path) -> None:
    raw = work / "rootfs.raw"
    proc.run([sbin_tool("mkfs.ext4"), "-q", "-F", "-L", "thpvm-root", "-d", root, raw,
              f"{recipe.size_mb}M"], error=ImageError)
    qcow2 = work / "rootfs.qcow2"
    proc.run(["qemu-img", "convert", "-O", "qcow2", raw, qcow2], error=ImageError)
    raw.unlink()
    (work / "rootfs.sha256").write_text(f"{sha256_file(qcow2)}  rootfs.qcow2\n")
    make_private(work)


def make_private(image_dir: Path) -> None:
    """Owner-only image directory and files; the base qcow2 read-only (0400)."""
    if image_dir.stat().st_uid != os.geteuid():
        return
    os.chmod(image_dir, 0o700)
    for f in image_dir.iterdir():
        if f.is_file():
            os.chmod(f, 0o400 if f.name == "rootfs.qcow2" else 0o600)


def sha256_file(path: Path) -> str:
    """sha256 of a file's content."""
    return cache.file_sha256(path)


def make_overlay(image: Image, run_dir: Path) -> Path:
    """A qcow2 overlay of the base image in the run directory (the base is never written)."""
    overlay = run_dir / "rootfs-overlay.qcow2"
    proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
              image.qcow2, overlay], error=ImageError)
    os.chmod(overlay, 0o600)  # the guest's writes: not for other users to read
    return overlay


def make_swap(run_dir: Path, size_mb: int) -> Path:
    """A fresh sparse swap disk (mkswap on the host: no exec in the guest)."""
    swap = run_dir / "swap.img"
    with open(os.open(swap, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        fh.truncate(size_mb << 20)
    proc.run([sbin_tool("mkswap"), "-q", swap], error=ImageError)
    return swap


def sbin_tool(name: str) -> str:
    """A tool from /usr/sbin or /sbin, which a non-root user's PATH may lack."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    return found or name
