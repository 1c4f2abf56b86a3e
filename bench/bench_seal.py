"""Benchmark cache seals (issue 15 row 8): what verifying a cache entry costs.

    python bench/bench_seal.py --out FILE [--mb 300]

Writes a JSON report to FILE and prints one summary line. In a temporary
directory (never the cache) it seals an entry holding one file of --mb MiB (a
guest image is ~150-300 MB, a bzImage ~3-10 MB), then times:
  seal            hashing every file and writing .sha256 (once per build)
  verify-stamp    verify when every size+mtime stamp matches (every use)
  verify-rehash   verify after the big file's mtime changed (a copy): one full hash
  verify-trunc    verify of a truncated file (the size differs: no hash)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from orchestrator import cache


def _timed(fn: object, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - start) / repeat


def run(mb: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="thpvm-bench-seal-") as d:
        entry = Path(d)
        with open(entry / "big", "wb") as fh:
            for _ in range(mb):
                fh.write(os.urandom(1 << 20))
        (entry / "small").write_bytes(b"x" * 4096)
        files = ["big", "small"]
        out = {"mb": float(mb), "seal_s": _timed(lambda: cache.seal(entry, files))}
        out["verify_stamp_ms"] = 1000 * _timed(lambda: cache.verify(entry), repeat=200)
        os.utime(entry / "big", ns=(1, 1))
        out["verify_rehash_s"] = _timed(lambda: cache.verify(entry))
        with open(entry / "big", "r+b") as fh:
            fh.truncate(1 << 20)
        out["verify_trunc_ms"] = 1000 * _timed(lambda: cache.verify(entry))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mb", type=int, default=300)
    args = ap.parse_args()
    res = run(args.mb)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"seal {res['seal_s']:.2f} s for {args.mb} MiB; verify {res['verify_stamp_ms']:.2f} ms "
          f"(stamps match), {res['verify_rehash_s']:.2f} s (rehash), "
          f"{res['verify_trunc_ms']:.2f} ms (truncated)")


if __name__ == "__main__":
    main()
