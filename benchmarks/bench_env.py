"""Benchmark `mlscan env` against `sha256sum` over exactly the same files.

    python benchmarks/bench_env.py [--python /work/venv/bin/python] [--repeat 3]

Prints files, bytes, wall time, files/s and MB/s for: reading every byte once (the floor),
mlscan's RECORD verification (hashing only, and the whole check), `sha256sum` in one process
and `sha256sum` with one process per CPU; then the ratios. Every run is preceded by one untimed
read of all files so every tool sees the same (warm) page cache.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from mlscan import envcheck
from mlscan.envcheck_target import probe_python


def _read_all(paths: list[str]) -> int:
    total = 0
    buf = bytearray(1 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                total += n
    return total


def _sha256sum(list_file: str, parallel: int) -> None:
    cmd = ["xargs", "-0", "-n", "500", "-P", str(parallel), "sha256sum"]
    with open(list_file, "rb") as stdin:
        # Not check=True: a file removed meanwhile must not abort the benchmark.
        subprocess.run(cmd, stdin=stdin, stdout=subprocess.DEVNULL, check=False)


_CPU: dict[str, float] = {}
"""Best CPU seconds (user + system, ours and children's) per row: steadier than wall time on
a busy machine."""


def _cpu_now() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _best(fn: Callable[[], object], repeat: int, name: str = "") -> float:
    times, cpus = [], []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), _cpu_now()
        fn()
        times.append(time.perf_counter() - start)
        cpus.append(_cpu_now() - cpu)
    if name:
        _CPU[name] = min(cpus)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default="/work/venv/bin/python")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bytecode", action="store_true",
                    help="Also time the --bytecode check once (compiles every cached source).")
    args = ap.parse_args()

    target = probe_python(args.python)
    paths = envcheck.verified_paths(target)
    size = sum(os.path.getsize(p) for p in paths)
    mb = size / 1e6
    print(f"environment: {', '.join(map(str, target.site_dirs))}")
    print(f"files verified against RECORD: {len(paths)}, {mb:,.1f} MB; CPUs: {os.cpu_count()}")
    _read_all(paths)  # warm the page cache once for every contender

    with tempfile.NamedTemporaryFile("wb", suffix=".lst", delete=False) as fh:
        fh.write(b"\0".join(os.fsencode(p) for p in paths))
        list_file = fh.name
    try:
        rows: list[tuple[str, float]] = []
        name = "read every byte once (python)"
        rows.append((name, _best(lambda: _read_all(paths), args.repeat, name)))
        hash_times: list[float] = []

        def run_check() -> None:
            result = envcheck.check(target, environ={})
            hash_times.append(result.hash_seconds)
            bad = [i.finding for i in result.items if i.finding.rule_id in ("MLS501", "MLS502")]
            if bad:
                print(f"  note: {len(bad)} modified/missing files reported", file=sys.stderr)

        total = _best(run_check, args.repeat, "mlscan env: whole check")
        rows.append(("mlscan env: hashing only", min(hash_times)))
        rows.append(("mlscan env: whole check", total))
        one: list[float] = []
        for _ in range(args.repeat):
            one.append(envcheck.check(target, environ={}, workers=1).hash_seconds)
        rows.append(("mlscan env --jobs 1: hashing only", min(one)))
        cpus = os.cpu_count() or 1
        name = "sha256sum, 1 process"
        rows.append((name, _best(lambda: _sha256sum(list_file, 1), args.repeat, name)))
        name = f"sha256sum, {cpus} processes"
        rows.append((name, _best(lambda: _sha256sum(list_file, cpus), args.repeat, name)))
    finally:
        os.unlink(list_file)

    print(f"\n{'':34} {'seconds':>8} {'files/s':>10} {'MB/s':>8} {'CPU s':>7}")
    for name, secs in rows:
        cpu = f"{_CPU[name]:7.2f}" if name in _CPU else f"{'':7}"
        print(f"{name:34} {secs:8.2f} {len(paths) / secs:10,.0f} {mb / secs:8,.0f} {cpu}")
    t = dict(rows)
    print(f"\nratio mlscan whole check / sha256sum (1 process): "
          f"{t['mlscan env: whole check'] / t['sha256sum, 1 process']:.2f}")
    print(f"ratio mlscan whole check / sha256sum ({cpus} processes): "
          f"{t['mlscan env: whole check'] / t[f'sha256sum, {cpus} processes']:.2f}")
    print(f"CPU-time ratio mlscan whole check / sha256sum: "
          f"{_CPU['mlscan env: whole check'] / _CPU['sha256sum, 1 process']:.2f}")
    print(f"ratio mlscan whole check / reading the bytes once: "
          f"{t['mlscan env: whole check'] / t['read every byte once (python)']:.2f}")
    if args.bytecode:
        start = time.perf_counter()
        result = envcheck.check(target, environ={}, bytecode=True)
        secs = time.perf_counter() - start - t["mlscan env: whole check"]
        n = sum(1 for i in result.items if i.finding.rule_id == "MLS510")
        print(f"\n--bytecode adds {secs:.1f}s ({n} MLS510 findings)")


if __name__ == "__main__":
    main()
