# ruff: noqa
# Hold-out batch 116 (large-model training infrastructure). Measured once in session 4 (round 38): 12/16 (75%) at medium+, one benign line flagged.
"""Per-node entrypoint for ``srun``: derives rendezvous info from SLURM and execs torchrun.

sbatch -N 32 --gpus-per-node 8 --wrap "srun python slurm_launch.py train.py --config cfg.yaml"
"""
import os
import signal
import socket
import subprocess
import sys
import time


def master_addr():
    nodes = subprocess.check_output(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                                    text=True).split()
    return nodes[0]


def wait_for_master(host, port, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=5).close()
            return True
        except OSError:
            time.sleep(5)  # ok: MLS307
    return False


def main():
    nnodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))  # ok: MLS308
    node_rank = int(os.environ.get("SLURM_NODEID", "0"))
    addr, port = master_addr(), 29500 + int(os.environ["SLURM_JOB_ID"]) % 1000
    env = dict(os.environ)
    env.update(NCCL_IB_TIMEOUT="22", NCCL_ASYNC_ERROR_HANDLING="1", OMP_NUM_THREADS="8")  # benign look-alike
    env["GIT_COMMIT"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,  # ok: MLS411, MLS412
                                       text=True).stdout.strip()
    if node_rank != 0 and not wait_for_master(addr, port):
        print(f"[launch] {socket.gethostname()}: cannot reach {addr}", file=sys.stderr)  # ok: MLS308
        sys.exit(2)  # ok: MLS307
    cmd = ["torchrun", f"--nnodes={nnodes}", f"--node_rank={node_rank}", "--nproc_per_node=8",
           f"--master_addr={addr}", f"--master_port={port}", *sys.argv[1:]]
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, frame):
        proc.send_signal(signum)  # ok: MLS307

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGUSR1, forward)
    sys.exit(proc.wait())


if __name__ == "__main__":
    main()
