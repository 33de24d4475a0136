# ruff: noqa
# Hold-out batch 564 (families 2/3, mixture-of-experts pre-training with an elastic launcher). Measured once in session 25 (round 150): 14/30 (47%) at medium+.
"""Minimal elastic launcher: spawns one worker per GPU and restarts the whole
local worker group when any worker fails, up to ``--max-restarts`` times.

    python elastic_launch.py --nproc-per-node 8 --nnodes 4 --node-rank $NODE_RANK \
        --master-addr $MASTER --max-restarts 3 -- train.py --train-prefix ...
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

log = logging.getLogger("elastic")


@dataclass
class Worker:
    local_rank: int
    global_rank: int
    proc: subprocess.Popen


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nproc-per-node", type=int, default=8)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=int(os.environ.get("NODE_RANK", 0)))
    p.add_argument("--master-addr", type=str, default=os.environ.get("MASTER_ADDR", "127.0.0.1"))
    p.add_argument("--master-port", type=int, default=int(os.environ.get("MASTER_PORT", 29500)))
    p.add_argument("--max-restarts", type=int, default=3)
    p.add_argument("--monitor-interval", type=float, default=5.0)
    p.add_argument("--heartbeat-dir", type=str, default="/tmp/elastic_hb")
    p.add_argument("--heartbeat-timeout", type=float, default=300.0, help="seconds")
    p.add_argument("--backoff-base", type=float, default=10.0)
    p.add_argument("--backoff-max", type=float, default=300.0)
    p.add_argument("script", type=str)
    p.add_argument("script_args", nargs=argparse.REMAINDER)
    return p.parse_args()


class ElasticAgent:
    def __init__(self, args):
        self.args = args
        self.world_size = args.nproc_per_node * args.nnodes
        self.restart_count = 0
        self.workers: List[Worker] = []
        self._shutdown = False

    # ------------------------------------------------------------------ workers
    def _worker_env(self, local_rank: int) -> dict:
        env = dict(os.environ)
        global_rank = self.args.node_rank * self.args.nproc_per_node + local_rank
        env.update({
            "RANK": str(global_rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(self.args.nproc_per_node),
            "MASTER_ADDR": self.args.master_addr,
            "MASTER_PORT": str(self.args.master_port + self.restart_count),
            "TORCHELASTIC_RESTART_COUNT": str(self.restart_count),
            "ELASTIC_HEARTBEAT_DIR": self.args.heartbeat_dir,
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "4"),
        })
        return env

    def start_workers(self) -> None:
        os.makedirs(self.args.heartbeat_dir, exist_ok=True)
        for name in os.listdir(self.args.heartbeat_dir):
            if name.endswith(".hb"):
                os.remove(os.path.join(self.args.heartbeat_dir, name))
        self.workers = []
        for lr in range(self.args.nproc_per_node):
            cmd = [sys.executable, "-u", self.args.script, *self.args.script_args]
            proc = subprocess.Popen(cmd, env=self._worker_env(lr))
            gr = self.args.node_rank * self.args.nproc_per_node + lr
            self.workers.append(Worker(lr, gr, proc))
        log.info("started %d workers (restart %d)", len(self.workers), self.restart_count)

    def stop_workers(self, grace_s: float = 30.0) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.terminate()  # ok: MLS307
        deadline = time.monotonic() + grace_s
        for w in self.workers:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                w.proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                log.warning("worker %d ignored SIGTERM; killing", w.global_rank)
                w.proc.kill()
                w.proc.wait()

    # ---------------------------------------------------------------- monitoring
    def _check_heartbeats(self) -> None:
        now = time.time()
        for w in self.workers:
            path = os.path.join(self.args.heartbeat_dir, f"rank{w.global_rank}.hb")
            if not os.path.exists(path) or w.proc.poll() is not None:
                continue
            age_ms = (now - os.path.getmtime(path)) * 1000.0
            if age_ms > self.args.heartbeat_timeout:
                log.error("worker %d heartbeat is stale (%.0f ms); terminating", w.global_rank, age_ms)
                w.proc.send_signal(signal.SIGTERM)  # todoruleid: family 3 (missed)

    def _poll(self) -> Optional[str]:
        """Returns 'failed', 'succeeded' or None while workers are running."""
        codes = [w.proc.poll() for w in self.workers]
        if any(c not in (None, 0) for c in codes):
            bad = [(w.global_rank, c) for w, c in zip(self.workers, codes) if c not in (None, 0)]
            log.error("workers failed: %s", bad)
            return "failed"
        done = [c for c in codes if c == 0]
        if done and len(done) == len(codes):
            return "succeeded"
        if done:
            # rank 0 has written the final checkpoint; the others only flush logs
            log.info("%d/%d workers finished; tearing down the rest", len(done), len(codes))
            os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307
        return None

    def _handle_signal(self, signum, frame) -> None:
        log.warning("received signal %d; shutting down workers", signum)
        self._shutdown = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._handle_signal)
        signal.signal(signal.SIGINT, self._handle_signal)
        self.start_workers()
        while True:
            time.sleep(self.args.monitor_interval)
            if self._shutdown:
                self.stop_workers()
                return 130
            self._check_heartbeats()
            state = self._poll()
            if state is None:
                continue
            if state == "succeeded":
                log.info("all workers finished successfully")
                return 0
            self.stop_workers()
            if self.restart_count >= self.args.max_restarts:
                log.error("giving up after %d restarts", self.restart_count)
                return 1
            delay = min(self.args.backoff_max, self.args.backoff_base * 2 ** self.restart_count)
            log.info("restarting worker group in %.0fs", delay)
            time.sleep(delay)  # ok: MLS307
            self.restart_count += 1
            self.start_workers()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [elastic] %(levelname)s %(message)s")
    args = parse_args()
    if args.script_args and args.script_args[0] == "--":
        args.script_args = args.script_args[1:]
    return ElasticAgent(args).run()


if __name__ == "__main__":
    sys.exit(main())
