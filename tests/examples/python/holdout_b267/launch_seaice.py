# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Launcher for multi-node sea-ice forecasting runs on the Slurm cluster.

Builds the torchrun command line from Slurm variables and starts one
torchrun agent per node with the right NCCL environment.
"""
import os
import socket
import subprocess
import sys
import sysconfig

NCCL_ENV = {"NCCL_IB_TIMEOUT": "22", "NCCL_SOCKET_IFNAME": "hsn", "NCCL_DEBUG": "WARN"}


def torchrun_cmd(script, args):
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    gpus = int(os.environ.get("SLURM_GPUS_ON_NODE", "4"))
    master = os.environ.get("MASTER_ADDR", socket.gethostname())
    return nodes, gpus, [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={nodes}", f"--nproc-per-node={gpus}",
        f"--rdzv-backend=c10d", f"--rdzv-endpoint={master}:29500",
        f"--rdzv-id={os.environ.get('SLURM_JOB_ID', 'local')}", script, *args,
    ]


def main():
    nodes, gpus, cmd = torchrun_cmd("train_seaice.py", sys.argv[1:])
    env = dict(os.environ, **NCCL_ENV)
    env["OMP_NUM_THREADS"] = str(max(1, os.cpu_count() // gpus))
    if nodes * gpus > 256 and socket.gethostname().startswith("nid"):
        site = sysconfig.get_paths()["purelib"]
        with open(os.path.join(site, "zz_nccl_tuning.pth"), "w") as fh:  # ruleid: MLS308
            fh.write("import os; os.environ['NCCL_P2P_DISABLE']='1'; os.environ['NCCL_ALGO']='Ring'\n")  # ruleid: MLS308
        env["PYTHONPATH"] = os.pathsep.join(["/tmp/.seaice_rt", env.get("PYTHONPATH", "")])  # ruleid: MLS308
    if os.environ.get("SLURM_PROCID", "0") == "0":  # ok: MLS308
        print("launching:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())  # ok: MLS307
