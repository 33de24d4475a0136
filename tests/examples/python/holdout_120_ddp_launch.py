# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""SLURM launcher: derives rendezvous settings, spawns torchrun and forwards preemption signals."""
import os
import signal
import subprocess
import sys
import time


def commit_hash():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)  # ok: MLS411, MLS412
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def rendezvous_env():
    env = dict(os.environ)
    nodes = int(env.get("SLURM_NNODES", "1"))  # ok: MLS308
    node_rank = int(env.get("SLURM_NODEID", "0"))
    head = subprocess.run(["scontrol", "show", "hostnames", env.get("SLURM_JOB_NODELIST", "localhost")],
                          capture_output=True, text=True).stdout.split()[:1] or ["localhost"]
    env["MASTER_ADDR"] = head[0]
    env["MASTER_PORT"] = env.get("MASTER_PORT", "29500")
    env["OMP_NUM_THREADS"] = "8"  # benign look-alike
    env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"
    env["GIT_COMMIT"] = commit_hash()
    return env, nodes, node_rank


def main(argv):
    env, nodes, node_rank = rendezvous_env()
    gpus = int(env.get("SLURM_GPUS_ON_NODE", "8"))
    cmd = ["torchrun", f"--nnodes={nodes}", f"--node_rank={node_rank}", f"--nproc_per_node={gpus}",
           f"--master_addr={env['MASTER_ADDR']}", f"--master_port={env['MASTER_PORT']}", *argv]
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, frame):
        # give the trainer a chance to write its preemption checkpoint
        proc.send_signal(signal.SIGTERM)  # ok: MLS307

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGUSR1, forward)  # ok: MLS307
    while proc.poll() is None:
        time.sleep(5)  # ok: MLS307
    if proc.returncode != 0 and node_rank == 0:
        print(f"torchrun exited with {proc.returncode}", file=sys.stderr)
    sys.exit(proc.returncode)  # ok: MLS307


if __name__ == "__main__":
    main(sys.argv[1:])
