"""mlscan vs picklescan, fickling, modelscan (and modelaudit) side by side, in one run.

    python benchmarks/bench_models.py [--peers-venv /work/benchvenv] [--sizes 1,4]

Generates at run time, in a temp dir: PyTorch zip checkpoints of 1 and 4 GiB (written as
torch.save lays them out: a small data.pkl plus stored storages), a 1 GiB raw pickle holding
one large bytes blob, and the fixture corpus (fixtures/generate.py). Every tool runs as a
subprocess; we report wall seconds, the ratio to mlscan, the tool process peak RSS,
and on the corpus how many malicious samples each tool catches and how many benign ones it
flags. Peers are installed in their own venv (never mlscan's):

    python3 -m venv /work/benchvenv
    /work/benchvenv/bin/pip install picklescan fickling modelscan modelaudit
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fixtures.generate import generate  # noqa: E402
from fixtures.opcodes import P  # noqa: E402

GiB = 1024**3
CHUNK = 64 * 1024 * 1024
PEERS = ("picklescan", "fickling", "modelscan", "modelaudit")
TIMEOUT = 900


@dataclass
class Run:
    seconds: float
    rss_mb: float
    code: int
    stdout: str


# A forked child inherits the parent's peak RSS in ru_maxrss (Linux keeps it across exec), and
# this process holds torch after generating fixtures: so each tool runs under a tiny wrapper
# whose own children start small, and the wrapper reports their peak RSS and wall time.
WRAPPER = (
    "import resource,subprocess,sys,time;t=time.perf_counter();"
    "r=subprocess.run(sys.argv[2:]);t=time.perf_counter()-t;"
    "open(sys.argv[1],'w').write(f'{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {t}');"
    "sys.exit(r.returncode)"
)


def run(cmd: list[str], stdin: str | None = None, cwd: Path | None = None) -> Run:
    """Run one tool; its wall time and peak RSS as measured by the wrapper."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as inp, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        if stdin is not None:
            inp.write(stdin.encode())
            inp.seek(0)
        proc = subprocess.Popen([sys.executable, "-S", "-c", WRAPPER, rss.name, *cmd],
                                stdin=inp, stdout=out, stderr=subprocess.DEVNULL, cwd=cwd)
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
        fields = rss.read().split()
    maxrss_kb, seconds = (int(fields[0]), float(fields[1])) if fields else (0, float(TIMEOUT))
    return Run(seconds, maxrss_kb / 1024, proc.returncode, text)


# -- big files ------------------------------------------------------------------------------

PAYLOAD_CMD = "touch /tmp/mlscan-bench-payload-never-runs"


def _payload_item(b: P) -> P:
    """One more dict entry whose value is built by posix.system (a malicious checkpoint)."""
    return b.str("_hook").global_("posix", "system").mark().str(PAYLOAD_CMD).tuple().reduce() \
        .setitem()


def _state_dict_pickle(numel: int, payload: bool = False) -> bytes:
    """data.pkl as torch.save writes it for {'weight': FloatTensor(numel)}."""
    b = (P(2).global_("collections", "OrderedDict").empty_tuple().reduce()
            .str("weight").global_("torch._utils", "_rebuild_tensor_v2").mark()
            .mark().str("storage").global_("torch", "FloatStorage").str("0").str("cpu")
            .raw(b"\x8a\x05" + numel.to_bytes(5, "little")).tuple().persid()
            .int(0).mark().raw(b"\x8a\x05" + numel.to_bytes(5, "little")).tuple()
            .mark().int(1).tuple().bool(False)
            .global_("collections", "OrderedDict").empty_tuple().reduce().tuple().reduce()
            .setitem())
    return (_payload_item(b) if payload else b).stop().bytes()


def torch_zip(path: Path, size: int, payload: bool = False) -> Path:
    numel = size // 4
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr("archive/data.pkl", _state_dict_pickle(numel, payload))
        zf.writestr("archive/byteorder", "little")
        with zf.open("archive/data/0", "w", force_zip64=True) as w:
            block = b"\x00" * CHUNK
            left = numel * 4
            while left > 0:
                w.write(block[: min(CHUNK, left)])
                left -= CHUNK
        zf.writestr("archive/version", "3\n")
    return path


def raw_blob_pickle(path: Path, size: int, payload: bool = False) -> Path:
    """{'blob': <size bytes>} in protocol 4 (BINBYTES8), as pickle.dumps writes it; with
    `payload`, a posix.system call follows the blob (a scanner must read past the blob)."""
    with open(path, "wb") as fh:
        fh.write(b"\x80\x04}\x94\x8c\x04blob\x94\x8e" + struct.pack("<Q", size))
        block = b"\x00" * CHUNK
        left = size
        while left > 0:
            fh.write(block[: min(CHUNK, left)])
            left -= CHUNK
        fh.write(b"\x94s")
        fh.write(_payload_item(P(None)).bytes() if payload else b"")
        fh.write(b".")
    return path


# -- tools ----------------------------------------------------------------------------------

def mlscan_cmd(target: Path) -> list[str]:
    return [sys.executable, "-m", "mlscan", "scan", str(target), "--format", "json",
            "--exit-zero"]


def peer_cmd(venv: Path, tool: str) -> list[str]:
    return [str(venv / "bin" / "python"), str(ROOT / "benchmarks" / "peer_verdicts.py"), tool]


def available_peers(venv: Path) -> list[str]:
    py = venv / "bin" / "python"
    if not py.exists():
        return []
    ok = []
    for tool in PEERS:
        mod = {"modelscan": "modelscan.modelscan", "modelaudit": "modelaudit.core"}.get(tool, tool)
        if subprocess.run([str(py), "-c", f"import {mod}"], capture_output=True).returncode == 0:
            ok.append(tool)
    return ok


def mlscan_flags(report_json: str, root: Path) -> set[str]:
    """Display paths with at least one finding at high or critical."""
    data = json.loads(report_json)
    return {f["path"] for f in data["findings"] if f["severity"] in ("high", "critical")}


# -- benchmark ------------------------------------------------------------------------------

def best_of(n: int, cmd: list[str], stdin: str | None = None, cwd: Path | None = None) -> Run:
    """Fastest of n runs (noise only ever adds time); peak RSS is the largest seen."""
    runs = [run(cmd, stdin, cwd) for _ in range(max(1, n))]
    best = min(runs, key=lambda r: r.seconds)
    return Run(best.seconds, max(r.rss_mb for r in runs), best.code, best.stdout)


def bench_big(files: list[Path], venv: Path, peers: list[str],
              repeat: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in files:
        base = best_of(repeat, mlscan_cmd(path), cwd=path.parent)
        verdict = "flagged" if mlscan_flags(base.stdout, path.parent) else "clean"
        rows.append({"file": path.name, "tool": "mlscan", "seconds": base.seconds,
                     "ratio": 1.0, "rss_mb": base.rss_mb, "verdict": verdict})
        for tool in peers:
            r = best_of(repeat, peer_cmd(venv, tool), stdin=json.dumps([str(path)]))
            try:
                verdict = json.loads(r.stdout)[str(path)]
            except (ValueError, KeyError):
                verdict = f"crash (exit {r.code})"
            rows.append({"file": path.name, "tool": tool, "seconds": r.seconds,
                         "ratio": r.seconds / base.seconds, "rss_mb": r.rss_mb,
                         "verdict": verdict[:60]})
    return rows


def bench_corpus(root: Path, venv: Path, peers: list[str]) -> list[dict[str, object]]:
    samples = generate(root / "corpus")
    croot = root / "corpus"
    mal = {s.name for s in samples if s.expect == "malicious"}
    ben = {s.name for s in samples if s.expect == "benign"}
    rows: list[dict[str, object]] = []
    base = best_of(3, mlscan_cmd(croot), cwd=croot)
    flagged = mlscan_flags(base.stdout, croot)
    rows.append({"tool": "mlscan", "seconds": base.seconds, "ratio": 1.0, "rss_mb": base.rss_mb,
                 "caught": len(flagged & mal), "malicious": len(mal),
                 "false_pos": len(flagged & ben), "benign": len(ben), "errors": 0,
                 "missed": sorted(mal - flagged), "fp_names": sorted(flagged & ben)})
    paths = [str(s.path) for s in samples]
    for tool in peers:
        r = run(peer_cmd(venv, tool), stdin=json.dumps(paths))
        try:
            verdicts = {Path(k).relative_to(croot).as_posix(): v
                        for k, v in json.loads(r.stdout).items()}
        except ValueError:
            verdicts = {}
        hit = {n for n, v in verdicts.items() if v == "flagged"}
        errors = sum(v.startswith("error") for v in verdicts.values())
        rows.append({"tool": tool, "seconds": r.seconds, "ratio": r.seconds / base.seconds,
                     "rss_mb": r.rss_mb, "caught": len(hit & mal), "malicious": len(mal),
                     "false_pos": len(hit & ben), "benign": len(ben), "errors": errors,
                     "missed": sorted(mal - hit), "fp_names": sorted(hit & ben)})
    return rows


def startup() -> float:
    return min(run([sys.executable, "-m", "mlscan", "--version"]).seconds for _ in range(5))


def print_tables(big: list[dict[str, object]], corpus: list[dict[str, object]],
                 start: float) -> None:
    print(f"\nmlscan --version start-up: {start:.3f} s (best of 5)\n")
    print(f"{'file':<26}{'tool':<12}{'seconds':>9}{'x mlscan':>10}{'peak RSS MB':>13}  verdict")
    for r in big:
        print(f"{r['file']!s:<26}{r['tool']!s:<12}{r['seconds']:>9.2f}{r['ratio']:>10.1f}"
              f"{r['rss_mb']:>13.0f}  {r['verdict']}")
    print(f"\n{'fixture corpus':<16}{'seconds':>9}{'x mlscan':>10}{'peak RSS MB':>13}"
          f"{'malicious caught':>19}{'benign flagged':>16}{'errors':>8}")
    for r in corpus:
        caught = f"{r['caught']}/{r['malicious']}"
        fps = f"{r['false_pos']}/{r['benign']}"
        print(f"{r['tool']!s:<16}{r['seconds']:>9.2f}{r['ratio']:>10.1f}{r['rss_mb']:>13.0f}"
              f"{caught:>19}{fps:>16}{r['errors']!s:>8}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers-venv", type=Path, default=Path("/work/benchvenv"))
    ap.add_argument("--sizes", default="1,4", help="torch zip sizes in GiB (comma-separated)")
    ap.add_argument("--blob-gib", type=float, default=1.0, help="raw pickle blob size in GiB")
    ap.add_argument("--workdir", type=Path, default=None, help="keep generated files here")
    ap.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    ap.add_argument("--no-big", action="store_true", help="only the fixture corpus")
    ap.add_argument("--no-payload-variants", action="store_true",
                    help="skip the malicious 1 GiB variants (payload in data.pkl / after the blob)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per big file (best time kept)")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="mlscan-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    peers = available_peers(args.peers_venv)
    print(f"peers in {args.peers_venv}: {', '.join(peers) or 'none'}", flush=True)
    try:
        big: list[Path] = []
        if not args.no_big:
            for gib in (float(s) for s in args.sizes.split(",") if s):
                big.append(torch_zip(work / f"torch_{gib:g}GiB.pt", int(gib * GiB)))
            big.append(raw_blob_pickle(work / f"raw_blob_{args.blob_gib:g}GiB.pkl",
                                       int(args.blob_gib * GiB)))
            if not args.no_payload_variants:
                big.append(torch_zip(work / "evil_torch_1GiB.pt", GiB, payload=True))
                big.append(raw_blob_pickle(work / f"evil_raw_blob_{args.blob_gib:g}GiB.pkl",
                                           int(args.blob_gib * GiB), payload=True))
            print(f"generated {', '.join(p.name for p in big)}", flush=True)
        start = startup()
        big_rows = bench_big(big, args.peers_venv, peers, args.repeat)
        corpus_rows = bench_corpus(work, args.peers_venv, peers)
        print_tables(big_rows, corpus_rows, start)
        for r in corpus_rows:
            if r["tool"] == "mlscan":
                print(f"\nmlscan missed: {r['missed']}\nmlscan false positives: {r['fp_names']}")
        if args.json:
            args.json.write_text(json.dumps({"startup": start, "big": big_rows,
                                             "corpus": corpus_rows}, indent=1))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
