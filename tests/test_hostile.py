"""Hostile inputs: every scan ends in under 10 s and 500 MB, with a finding naming the file
(an MLS9xx code or a real detection), never a traceback and never exit code 2.

Each case is scanned by the CLI in its own subprocess; peak memory is that process's
ru_maxrss, so one case cannot hide behind another.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import random
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.opcodes import P, call_pickle
from fixtures.zipkit import build_zip, torch_entries

MiB = 1024 * 1024
MAX_SECONDS = 10.0
MAX_RSS_MB = 500
NOOP_CHUNK = b"N0" * (32 * MiB // 2)  # 32 MiB of NONE, POP: a valid, endless-looking stream
PAYLOAD = call_pickle("posix", "system", "touch /tmp/mlscan-hostile-never")


@dataclass(frozen=True)
class Outcome:
    code: int
    seconds: float
    rss_mb: float
    findings: list[dict[str, object]]
    stderr: str


# ru_maxrss of a forked child starts at the parent's RSS (kept across exec), and pytest may
# hold torch: the CLI runs under a tiny wrapper whose children start small.
WRAPPER = (
    "import resource,subprocess,sys,time;t=time.perf_counter();"
    "r=subprocess.run(sys.argv[2:]);t=time.perf_counter()-t;"
    "open(sys.argv[1],'w').write(f'{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {t}');"
    "sys.exit(r.returncode)"
)


def run_cli(target: Path, cwd: Path) -> Outcome:
    out, err, rss = cwd / "out.json", cwd / "err.txt", cwd / "rss.txt"
    cmd = [sys.executable, "-m", "mlscan", "scan", os.fsdecode(target), "--format", "json",
           "--output", str(out), "--jobs", "1"]
    with open(err, "wb") as err_fh:
        try:
            proc = subprocess.run([sys.executable, "-S", "-c", WRAPPER, str(rss), *cmd],
                                  stdout=subprocess.DEVNULL, stderr=err_fh,
                                  stdin=subprocess.DEVNULL, cwd=cwd, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"scan of {target} hung (> 60 s)")
    maxrss_kb, seconds = rss.read_text().split()
    stderr = err.read_text(errors="replace")
    findings: list[dict[str, object]] = []
    if out.exists():
        try:
            findings = json.loads(out.read_text(encoding="utf-8"))["findings"]
        except ValueError as exc:  # a crash mid-write: report it through stderr
            stderr += f"\n[test] unreadable JSON report: {exc}"
    return Outcome(proc.returncode, float(seconds), int(maxrss_kb) / 1024, findings, stderr)


def _deflate_repeated(chunk: bytes, times: int) -> bytes:
    """Raw deflate of `chunk * times` without compressing it all: full-flush blocks repeat."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    return block * times + c.flush(zlib.Z_FINISH)


def zip_bomb(d: Path) -> Path:
    """A torch-zip whose data.pkl inflates to 3 GiB of no-op opcodes (3 MB on disk)."""
    times = 96
    body = _deflate_repeated(NOOP_CHUNK, times)
    size = len(NOOP_CHUNK) * times
    name = b"archive/data.pkl"
    crc = 0
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(body),
                        size & 0xFFFFFFFF, len(name), 0) + name + body
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc,
                          len(body), size & 0xFFFFFFFF, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local), 0)
    path = d / "bomb.pt"
    path.write_bytes(local + central + end)
    return path


def _multi(compress: Callable[[bytes], bytes], d: Path, name: str, members: int = 96,
           chunk: bytes = NOOP_CHUNK) -> Path:
    """Concatenated members: 3 GiB of opcodes from one compressed chunk."""
    one = compress(chunk)
    path = d / name
    path.write_bytes(one * members)
    return path


def gzip_bomb(d: Path) -> Path:
    return _multi(lambda b: gzip.compress(b, 9, mtime=0), d, "bomb.pkl.gz")


def bz2_bomb(d: Path) -> Path:
    # bz2 is slow on repetitive input: compress 4 MiB once, repeat it 768 times (3 GiB)
    return _multi(bz2.compress, d, "bomb.pkl.bz2", members=768, chunk=NOOP_CHUNK[: 4 * MiB])


def xz_bomb(d: Path) -> Path:
    return _multi(lzma.compress, d, "bomb.pkl.xz")


def lying_unicode_length(d: Path) -> Path:
    path = d / "lying_unicode.pkl"
    path.write_bytes(b"\x80\x04X" + struct.pack("<I", 0xFFFFFFF0) + b"short")
    return path


def lying_bytes8_length(d: Path) -> Path:
    path = d / "lying_bytes8.pkl"
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"x" * 16)
    return path


def lying_zip_sizes(d: Path) -> Path:
    """Central directory claims a 4 GiB member at an offset past the end of the file."""
    name = b"archive/data.pkl"
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, 0,
                          0xFFFFFFF0, 0xFFFFFFF0, len(name), 0, 0, 0, 0, 0, 0x7FFFFFF0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), 0, 0)
    path = d / "lying_zip.pt"
    path.write_bytes(central + end)
    return path


def lying_npy_header(d: Path) -> Path:
    path = d / "lying.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 0xFFFF) + b"{'descr': '|O'")
    return path


def deep_lists(d: Path) -> Path:
    n = 100_000
    path = d / "deep_lists.pkl"
    path.write_bytes(b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b".")
    return path


def deep_marks(d: Path) -> Path:
    path = d / "deep_marks.pkl"
    path.write_bytes(b"\x80\x02" + b"(" * 100_000 + b"]" + b".")
    return path


def memo_flood(d: Path) -> Path:
    path = d / "memo_flood.pkl"
    path.write_bytes(b"\x80\x04" + b"N\x94" * 5_000_000 + b"N.")
    return path


def sparse_memo_index(d: Path) -> Path:
    path = d / "sparse_memo.pkl"
    path.write_bytes(b"\x80\x02Nr" + struct.pack("<I", 0xFFFFFFF0) + b"j"
                     + struct.pack("<I", 0xFFFFFFF0) + b".")
    return path


def long_stream_payload_at_end(d: Path) -> Path:
    """50 MB of no-op opcodes, then the payload: must still be detected."""
    path = d / "long_stream.pkl"
    with open(path, "wb") as fh:
        fh.write(b"\x80\x02")
        fh.write(b"N0" * (25 * 1000 * 1000))
        fh.write(PAYLOAD[2:])
    return path


def truncated_zip(d: Path) -> Path:
    data = build_zip(torch_entries(PAYLOAD, storages={"0": b"\x00" * 4096}))
    path = d / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_pickle(d: Path) -> Path:
    path = d / "truncated.pkl"
    path.write_bytes(P(2).str("x" * 50).bytes()[:20])
    return path


def truncated_gzip(d: Path) -> Path:
    data = gzip.compress(PAYLOAD * 100, mtime=0)
    path = d / "truncated.pkl.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def random_pt(d: Path) -> Path:
    path = d / "random.pt"
    path.write_bytes(random.Random(1).randbytes(256 * 1024))
    return path


def random_pkl(d: Path) -> Path:
    path = d / "random.pkl"
    path.write_bytes(random.Random(2).randbytes(64 * 1024))
    return path


def sparse_zeros(d: Path) -> Path:
    path = d / "sparse.pt"
    with open(path, "wb") as fh:
        fh.truncate(100 * 1024**3)  # 100 GB, no disk used
    return path


def sparse_pickle(d: Path) -> Path:
    path = d / "sparse.pkl"
    with open(path, "wb") as fh:
        fh.write(b"\x80\x02}q\x00")
        fh.truncate(100 * 1024**3)
    return path


CASES: dict[str, Callable[[Path], Path]] = {
    f.__name__: f for f in [
        zip_bomb, gzip_bomb, bz2_bomb, xz_bomb, lying_unicode_length, lying_bytes8_length,
        lying_zip_sizes, lying_npy_header, deep_lists, deep_marks, memo_flood,
        sparse_memo_index, long_stream_payload_at_end, truncated_zip, truncated_pickle,
        truncated_gzip, random_pt, random_pkl, sparse_zeros, sparse_pickle,
    ]
}


def _check(outcome: Outcome, display: str) -> list[dict[str, object]]:
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    assert outcome.code in (0, 1), (outcome.code, outcome.stderr[-3000:])
    assert outcome.seconds < MAX_SECONDS, f"took {outcome.seconds:.1f} s"
    assert outcome.rss_mb < MAX_RSS_MB, f"peak RSS {outcome.rss_mb:.0f} MB"
    mine = [f for f in outcome.findings if str(f["path"]).endswith(display)]
    assert mine, f"no finding names {display}: {outcome.findings}"
    return mine


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_file_is_reported_in_bounded_time_and_memory(case: str, tmp_path: Path) -> None:
    d = tmp_path / "scan"
    d.mkdir()
    target = CASES[case](d)
    outcome = run_cli(d, tmp_path)
    mine = _check(outcome, target.name)
    if case == "long_stream_payload_at_end":
        assert any(f["severity"] in ("high", "critical") for f in mine), mine
    elif case.startswith(("random", "truncated", "lying", "sparse")) or "bomb" in case:
        codes = {str(f["rule_id"]) for f in mine}
        assert codes & {"MLS901", "MLS902", "MLS903"} or any(
            f["severity"] in ("high", "critical") for f in mine), mine


def test_fifo_is_never_opened(tmp_path: Path) -> None:
    d = tmp_path / "scan"
    d.mkdir()
    os.mkfifo(d / "model.pt")  # opening it for reading would block forever
    mine = _check(run_cli(d, tmp_path), "model.pt")
    assert {f["rule_id"] for f in mine} == {"MLS904"}, mine


def test_symlink_loop(tmp_path: Path) -> None:
    d = tmp_path / "scan"
    d.mkdir()
    os.symlink(d / "b.pt", d / "a.pt")
    os.symlink(d / "a.pt", d / "b.pt")
    outcome = run_cli(d, tmp_path)
    mine = _check(outcome, "a.pt")
    assert all(f["rule_id"] == "MLS904" for f in mine), mine


def test_directory_symlink_loop_ends(tmp_path: Path) -> None:
    """sub/up -> the scan root: walking it naively never ends."""
    d = tmp_path / "scan"
    (d / "sub").mkdir(parents=True)
    os.symlink(d, d / "sub" / "up")
    (d / "sub" / "model.pkl").write_bytes(PAYLOAD)
    outcome = run_cli(d, tmp_path)
    mine = _check(outcome, "model.pkl")
    assert any(f["severity"] == "critical" for f in mine), mine
    assert len({str(f["path"]) for f in outcome.findings if f["severity"] == "critical"}) == 1


def test_symlink_out_of_root_is_reported_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.pkl").write_bytes(PAYLOAD)
    d = tmp_path / "scan"
    d.mkdir()
    os.symlink(outside / "evil.pkl", d / "model.pkl")
    mine = _check(run_cli(d, tmp_path), "model.pkl")
    assert {f["rule_id"] for f in mine} == {"MLS904"}, f"followed the link: {mine}"


def test_unreadable_file(tmp_path: Path) -> None:
    d = tmp_path / "scan"
    d.mkdir()
    path = d / "model.pkl"
    path.write_bytes(PAYLOAD)
    path.chmod(0)
    try:
        readable = os.access(path, os.R_OK)  # root reads through chmod 000
        mine = _check(run_cli(d, tmp_path), "model.pkl")
    finally:
        path.chmod(0o600)
    if readable:
        assert any(f["severity"] == "critical" for f in mine), mine
    else:
        assert {f["rule_id"] for f in mine} == {"MLS904"}, mine


def test_non_utf8_file_name(tmp_path: Path) -> None:
    d = tmp_path / "scan"
    d.mkdir()
    raw_name = b"model-\xff\xfe.pkl"
    with open(os.path.join(os.fsencode(d), raw_name), "wb") as fh:
        fh.write(PAYLOAD)
    outcome = run_cli(d, tmp_path)
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    assert outcome.code == 1, (outcome.code, outcome.stderr[-3000:])
    hits = [f for f in outcome.findings if "model-" in str(f["path"])]
    assert any(f["severity"] == "critical" for f in hits), outcome.findings


def test_hostile_directory_all_at_once(tmp_path: Path) -> None:
    """Every non-bomb case in one folder: one scan, still bounded, every file named."""
    d = tmp_path / "scan"
    d.mkdir()
    quick = [c for c in CASES if "bomb" not in c and c != "long_stream_payload_at_end"]
    names = [CASES[c](d).name for c in quick]
    outcome = run_cli(d, tmp_path)
    assert "Traceback" not in outcome.stderr
    assert outcome.code in (0, 1)
    assert outcome.rss_mb < MAX_RSS_MB
    named = {str(f["path"]).rsplit("/", 1)[-1] for f in outcome.findings}
    assert set(names) <= named, set(names) - named


def test_large_benign_files_stay_quiet(tmp_path: Path) -> None:
    """Limits must not fire on ordinary big checkpoints: 256 MiB of tensor data in a torch
    zip and a 256 MiB bytes blob in a raw pickle give no finding at high or above."""
    import zipfile

    d = tmp_path / "scan"
    d.mkdir()
    size = 256 * MiB
    numel = size // 4
    data_pkl = (P(2).global_("collections", "OrderedDict").empty_tuple().reduce()
                .str("weight").global_("torch._utils", "_rebuild_tensor_v2").mark()
                .mark().str("storage").global_("torch", "FloatStorage").str("0").str("cpu")
                .raw(b"J" + struct.pack("<i", numel)).tuple().persid()
                .int(0).mark().raw(b"J" + struct.pack("<i", numel)).tuple()
                .mark().int(1).tuple().bool(False)
                .global_("collections", "OrderedDict").empty_tuple().reduce().tuple().reduce()
                .setitem().stop().bytes())
    with zipfile.ZipFile(d / "big.pt", "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        with zf.open("archive/data/0", "w") as w:
            for _ in range(size // MiB):
                w.write(b"\x00" * MiB)
        zf.writestr("archive/version", "3\n")
    with open(d / "big.pkl", "wb") as fh:
        fh.write(b"\x80\x04}\x94\x8c\x04blob\x94\x8e" + struct.pack("<Q", size))
        for _ in range(size // MiB):
            fh.write(b"\x00" * MiB)
        fh.write(b"\x94s.")
    outcome = run_cli(d, tmp_path)
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    assert outcome.code == 0, outcome.findings
    assert outcome.seconds < MAX_SECONDS and outcome.rss_mb < MAX_RSS_MB
    loud = [f for f in outcome.findings if f["severity"] in ("high", "critical")]
    assert not loud, loud
