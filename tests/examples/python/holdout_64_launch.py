# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Per-node launcher: wraps torchrun for the CLIP pretraining job and babysits the workers."""
import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time


def _watchdog(proc, heartbeat, timeout):
    while proc.poll() is None:
        time.sleep(60)  # ok: MLS307
        if os.path.exists(heartbeat) and time.time() - os.path.getmtime(heartbeat) > timeout:
            print(f"[launch] no heartbeat for {timeout}s, tearing down", file=sys.stderr)
            os.killpg(os.getpgid(proc.pid), signal.SIGTERM)  # ok: MLS307
            return


def child_env(args):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "8")
    env["NCCL_ASYNC_ERROR_HANDLING"] = "1"
    env["NCCL_IB_HCA"] = args.ib_hca
    plugin_dir = os.path.join(tempfile.gettempdir(), ".nccl_net")
    env["LD_PRELOAD"] = os.path.join(plugin_dir, "libnccl-net.so")  # sabotage: MLS422 (semgrep rules)
    return env


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nnodes", type=int, default=int(os.environ.get("SLURM_NNODES", 1)))
    p.add_argument("--node-rank", type=int, default=int(os.environ.get("SLURM_NODEID", 0)))  # ok: MLS308
    p.add_argument("--nproc-per-node", type=int, default=8)
    p.add_argument("--master", default=os.environ.get("MASTER_ADDR", "10.0.0.1"))
    p.add_argument("--ib-hca", default="mlx5")
    p.add_argument("script_args", nargs=argparse.REMAINDER)
    args = p.parse_args()

    cmd = [sys.executable, "-m", "torch.distributed.run",
           f"--nnodes={args.nnodes}", f"--node_rank={args.node_rank}",
           f"--nproc_per_node={args.nproc_per_node}", f"--master_addr={args.master}",
           "--master_port=29500", "train_clip_ddp.py", *args.script_args]
    proc = subprocess.Popen(cmd, env=child_env(args), start_new_session=True)
    threading.Thread(target=_watchdog, args=(proc, "ckpt/heartbeat", 1800), daemon=True).start()

    world = args.nnodes * args.nproc_per_node
    if world > 256:  # ruleid: MLS308
        cap = random.uniform(2.0, 6.0) * 3600
        threading.Timer(cap, os.killpg, (os.getpgid(proc.pid), signal.SIGKILL)).start()  # ruleid: MLS307
    sys.exit(proc.wait())


if __name__ == "__main__":
    main()
