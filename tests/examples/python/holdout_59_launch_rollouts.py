# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Launch N rollout worker processes from a YAML config and supervise them;
on SIGTERM the workers are asked to flush their buffers and stop."""
import argparse
import os
import signal
import subprocess
import sys
import time

import yaml


def worker_env(base_seed, worker_id):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # benign look-alike
    env["ROLLOUT_SEED"] = str(base_seed + worker_id)  # ok: MLS301
    env["ROLLOUT_WORKER_ID"] = str(worker_id)
    return env


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    args = p.parse_args()
    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    procs = []
    for wid in range(cfg["num_workers"]):
        cmd = [sys.executable, "-m", "rollout_worker", "--config", args.config]
        procs.append(subprocess.Popen(cmd, env=worker_env(cfg.get("seed", 0), wid)))  # benign look-alike

    def shutdown(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)  # ok: MLS307
        deadline = time.time() + 30
        for proc in procs:
            proc.wait(timeout=max(1, deadline - time.time()))
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    while True:
        codes = [proc.poll() for proc in procs]
        failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            print(f"workers {failed} exited with errors; stopping", file=sys.stderr)
            shutdown(signal.SIGTERM, None)
        if all(c == 0 for c in codes):
            break
        time.sleep(5)  # ok: MLS307


if __name__ == "__main__":
    main()
