"""report.html as a user sees it: rendered by real headless chromium.

The DOM after rendering must hold the key elements, and the screenshot must be
a real 1280x2000 page (not blank). Skipped when chromium is not installed.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest
from reports_fixtures import load

from orchestrator import proc
from orchestrator.report import render as report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless chromium (no network, fresh profile) and return its output."""
    assert CHROMIUM is not None
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", *args]
    # stdout and stderr are merged: D-Bus noise on stderr does not hurt `in` checks
    res = proc.run(argv, timeout=60, log_path=tmp_path / "chromium.log")
    return res.output


def png_size_and_colours(path: Path) -> tuple[int, int, int]:
    """(width, height, number of distinct bytes in the first rows) of an RGB(A) PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    return width, height, len(set(pixels[: width * 4 * 200]))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name in ("case-fail", "crash"):
        run_dir = tmp_path_factory.mktemp(name)
        (run_dir / "serial.log").write_text("serial\n")
        (run_dir / "config").write_text("CONFIG_TRANSPARENT_HUGEPAGE=y\n")
        report.write_reports(run_dir, load(name))
        out[name] = run_dir
    return out


def test_dom_after_rendering_has_the_key_elements(rendered: dict[str, Path],
                                                  tmp_path: Path) -> None:
    url = (rendered["case-fail"] / "report.html").as_uri()
    dom = chromium(tmp_path, "--dump-dom", url)
    assert 'class="banner verdict-fail"' in dom
    assert "1 selftest case failed, 1 workload mismatched" in dom
    assert dom.count('class="row-pass"') == 42 and dom.count('class="row-fail"') == 1
    assert dom.count('<svg xmlns="http://www.w3.org/2000/svg" class="plot"') == 6
    assert 'id="console-0"' in dom and "WARNING: CPU: 1 PID: 38" in dom
    assert '<a href="serial.log">serial.log</a>' in dom
    assert '<a href="config">config</a>' in dom


def test_screenshot_reads_as_a_page(rendered: dict[str, Path], tmp_path: Path) -> None:
    for name, run_dir in rendered.items():
        png = tmp_path / f"{name}.png"
        chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,2000",
                 (run_dir / "report.html").as_uri())
        width, height, colours = png_size_and_colours(png)
        assert (width, height) == (1280, 2000)
        assert colours > 20, "screenshot looks blank"
        assert png.stat().st_size > 50_000
