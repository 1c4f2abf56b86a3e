"""Guest command stress (issue 15 row 5): N commands with multi-KiB outputs on
stdout and stderr in ONE boot, each checked byte for byte: the count of truncated
outputs must be 0. `tests/integration/test_guest_faults.py` runs a small version.

Usage: python bench/guest_commands.py [--count 10000] [--parallel 4] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def expected(i: int) -> tuple[int, str]:
    """Output size of command i (1 kB .. 61 kB, across the 4/8/12 KiB boundaries)."""
    size = 1000 + (i * 3797) % 60000
    return size, hashlib.sha256(b"x" * size).hexdigest()


def command(i: int) -> str:
    size, _ = expected(i)
    return (f"head -c {size} /dev/zero | tr '\\0' x; "
            f"head -c {size // 2} /dev/zero | tr '\\0' y >&2")


def run(count: int, parallel: int) -> dict[str, object]:
    from orchestrator.build import image, kernel
    from orchestrator.machine import session

    art = kernel.build_kernel(kernel.KernelRequest())
    img = image.build_image()
    bad: list[int] = []
    done: list[int] = []
    with tempfile.TemporaryDirectory(prefix="thpvm-bench-") as d, \
            session.guest(art.bzimage, img, Path(d), accel="auto") as g:
        def one(i: int) -> None:
            size, digest = expected(i)
            res = g.shell.run(command(i), timeout=300)
            if not (res.ok and hashlib.sha256(res.stdout.encode()).hexdigest() == digest
                    and res.stderr == "y" * (size // 2)):
                bad.append(i)
            done.append(i)
            if len(done) % 100 == 0:
                print(f"{len(done)} commands, {len(bad)} truncated", file=sys.stderr)

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
            "truncated_or_wrong": len(bad),
            "first_bad": bad[:10], "wall_s": round(wall, 1),
            "commands_per_s": round(len(done) / wall, 2), "accel": g.accel}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = run(args.count, args.parallel)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if result["truncated_or_wrong"] == 0 and result["commands"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
