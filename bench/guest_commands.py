"""Guest command stress (issue 15 row 5): N commands with multi-KiB outputs on
stdout and stderr in ONE boot, over parallel channels of one SSH connection, each
checked byte for byte: the count of truncated or wrong outputs must be 0.
`tests/integration/test_guest_faults.py` runs a small version; `make stress` the
full one (bench/stress.py --guest-commands).

Every output starts with the command's number (a reply on the wrong channel would
show). Most commands write with sh's builtin printf (the shell itself is the writer
that exits right after its last write); every PIPELINE_EVERY-th pipes `head -c` into
`tr`, so external processes write too (each exec costs ~0.1 s of guest time under TCG).

Usage: python bench/guest_commands.py [--count 10000] [--parallel 6] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.machine.guest import CommandResult

PIPELINE_EVERY = 10


def expected(i: int) -> tuple[str, str]:
    """Stdout and stderr of command i: its number, then 1 kB .. 61 kB (across the
    4/8/12 KiB and the 32 KiB channel-packet boundaries); half that on stderr."""
    size = 1000 + (i * 3797) % 60000
    if i % PIPELINE_EVERY == 0:
        return f"{i}:" + "x" * size, f"{i}:" + "y" * (size // 2)
    return f"{i}:" + " " * size, f"{i}:" + "0" * (size // 2)


def command(i: int) -> str:
    size = 1000 + (i * 3797) % 60000
    if i % PIPELINE_EVERY == 0:
        return (f"printf {i}:; head -c {size} /dev/zero | tr '\\0' x; "
                f"printf {i}: >&2; head -c {size // 2} /dev/zero | tr '\\0' y >&2")
    # sh's builtin printf pads to the width: spaces, or zeros for %0Nd
    return f"printf '{i}:%{size}s' ''; printf '{i}:%0{size // 2}d' 0 >&2"


def check(i: int, res: CommandResult) -> bool:
    out, err = expected(i)
    return res.ok and res.stdout == out and res.stderr == err


def run(count: int, parallel: int, progress_every: int = 500) -> dict[str, object]:
    """Boot one guest (the default kernel and image), run `count` commands over
    `parallel` channels, check each; the figures as a dict."""
    from orchestrator.build import image, kernel
    from orchestrator.errors import GuestError
    from orchestrator.machine import session

    art = kernel.build_kernel(kernel.KernelRequest())
    img = image.build_image()
    bad: list[int] = []
    errors: list[str] = []
    done: list[int] = []
    lock = threading.Lock()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="thpvm-bench-") as d, \
            session.guest(art.bzimage, img, Path(d), accel="auto") as g:
        def one(i: int) -> None:
            try:
                ok = check(i, g.shell.run(command(i), timeout=300))
            except GuestError as e:  # counted, never retried: a lost or late reply
                ok = False
                with lock:
                    errors.append(f"{i}: {e.message[:200]}")
            with lock:
                done.append(i)
                if not ok:
                    bad.append(i)
                if len(done) % progress_every == 0:
                    print(f"{len(done)} commands, {len(bad)} truncated or wrong, "
                          f"{len(done) / (time.monotonic() - start):.1f}/s, "
                          f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)

        start = time.monotonic()
        pool = ThreadPoolExecutor(parallel)
        try:
            list(pool.map(one, range(count)))
        except KeyboardInterrupt:  # report what ran so far
            print("interrupted", file=sys.stderr)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        wall = time.monotonic() - start
    return {"commands": len(done), "requested": count, "parallel": parallel,
            "truncated_or_wrong": len(bad), "errors": len(errors),
            "first_bad": sorted(bad)[:10], "first_errors": errors[:5],
            "pipelines": sum(1 for i in done if i % PIPELINE_EVERY == 0),
            "wall_s": round(wall, 1), "commands_per_s": round(len(done) / wall, 2),
            "accel": g.accel, "boot_s": round(g.boot_seconds, 2),
            "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()]}


def passed(result: dict[str, object]) -> bool:
    return result["truncated_or_wrong"] == 0 and result["commands"] == result["requested"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=6, help="channels at a time")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = run(args.count, args.parallel)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
