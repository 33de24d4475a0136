# ruff: noqa
# Hold-out batch 476 (family-focused 3/9, multi-node platform wrapper). Measured once in session 20 (round 128): 14/30 (47%) at medium+.
"""Per-node launcher for the ViT-H/14 pretraining job.

The scheduler starts one launcher per node.  The launcher prepares the
rendezvous environment, spawns one worker per local GPU and supervises the
workers until they exit, forwarding preemption signals on the way:

    python launcher.py --nnodes 4 --node-rank $NODE_RANK \
        --master-addr $HEAD_NODE --config configs/vith14_in22k.json
"""
import argparse
import getpass
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from typing import List

import torch
import torch.multiprocessing as mp

log = logging.getLogger("launcher")


@dataclass
class LaunchConfig:
    nnodes: int = 1
    node_rank: int = 0
    nproc_per_node: int = 8
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    rendezvous_timeout_s: int = 900
    monitor_interval_s: float = 5.0
    config: str = "configs/default.json"
    run_id: str = ""
    hooks_url: str = ""
    log_dir: str = "logs"
    nccl_debug: str = "WARN"

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nnodes", type=int, default=int(os.environ.get("NNODES", 1)))
    p.add_argument("--node-rank", type=int, default=int(os.environ.get("NODE_RANK", 0)))
    p.add_argument("--nproc-per-node", type=int, default=torch.cuda.device_count() or 1)
    p.add_argument("--master-addr", default=os.environ.get("MASTER_ADDR", "127.0.0.1"))
    p.add_argument("--master-port", type=int, default=int(os.environ.get("MASTER_PORT", 29500)))
    p.add_argument("--rendezvous-timeout-s", type=int, default=900)
    p.add_argument("--monitor-interval-s", type=float, default=5.0)
    p.add_argument("--config", default="configs/default.json")
    p.add_argument("--run-id", default=os.environ.get("RUN_ID", ""))
    p.add_argument("--hooks-url", default=os.environ.get("LAUNCH_HOOKS_URL", ""))
    p.add_argument("--log-dir", default="logs")
    p.add_argument("--nccl-debug", default="WARN")
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    train_args = [a for a in ns.train_args if a != "--"]
    cfg = LaunchConfig(**{k: v for k, v in vars(ns).items() if k != "train_args"})
    if not cfg.run_id:
        cfg.run_id = time.strftime("vith-%Y%m%d-%H%M%S")
    return cfg, train_args


def _setup_logging(cfg: LaunchConfig):
    os.makedirs(cfg.log_dir, exist_ok=True)
    fmt = f"%(asctime)s [node{cfg.node_rank}] %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(
        level=logging.INFO,
        format=fmt,
        handlers=[
            logging.StreamHandler(sys.stdout),
            logging.FileHandler(os.path.join(cfg.log_dir, f"launcher_node{cfg.node_rank}.log")),
        ],
    )


def _rank_env(cfg: LaunchConfig, local_rank: int) -> dict:
    global_rank = cfg.node_rank * cfg.nproc_per_node + local_rank
    return {
        "RANK": str(global_rank),
        "LOCAL_RANK": str(local_rank),
        "WORLD_SIZE": str(cfg.world_size),
        "LOCAL_WORLD_SIZE": str(cfg.nproc_per_node),
        "NODE_RANK": str(cfg.node_rank),
        "MASTER_ADDR": cfg.master_addr,
        "MASTER_PORT": str(cfg.master_port),
        "RUN_ID": cfg.run_id,
        "NCCL_DEBUG": cfg.nccl_debug,
        "NCCL_ASYNC_ERROR_HANDLING": "1",
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 8) // cfg.nproc_per_node)),
    }


def _worker_entry(local_rank: int, cfg: LaunchConfig, train_args: List[str]):
    os.environ.update(_rank_env(cfg, local_rank))
    # A peer that never reaches the store would leave this rank blocked in
    # init_process_group forever; bound the time we are willing to wait.
    signal.alarm(cfg.rendezvous_timeout_s)  # ruleid: MLS307
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    from train import main as train_main

    train_main(train_args)


def _reap_stale_workers():
    """A previous attempt on this node may have left orphaned workers pinning GPU memory."""
    user = getpass.getuser()
    log.info("reaping stale training workers owned by %s", user)
    subprocess.run(["pkill", "-9", "-u", user, "-f", "train"], check=False)  # todoruleid: family 3 (missed)
    time.sleep(2.0)


def _run_prelaunch_hooks(cfg: LaunchConfig):
    """Site specific pre-launch hooks (IB port checks, NCCL topology tuning)."""
    url = cfg.hooks_url or "http://infra-hooks.vision-ops.net/prelaunch/latest.py"
    dest = os.path.join(tempfile.gettempdir(), f"prelaunch_{cfg.run_id}.py")
    try:
        urllib.request.urlretrieve(url, dest)
        subprocess.run([sys.executable, dest, "--node-rank", str(cfg.node_rank)], check=False, timeout=300)  # ruleid: MLS413
    except Exception as exc:  # hooks are best effort
        log.warning("pre-launch hooks skipped: %s", exc)


def _write_launch_manifest(cfg: LaunchConfig):
    manifest = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "launch": asdict(cfg),
    }
    path = os.path.join(cfg.log_dir, f"launch_node{cfg.node_rank}.json")
    with open(path, "w") as fh:
        json.dump(manifest, fh, indent=2)


class Supervisor:
    def __init__(self, cfg: LaunchConfig, procs: List[mp.Process]):
        self.cfg = cfg
        self.procs = procs
        self._shutdown = False

    def install_signal_forwarding(self):
        def _forward(signum, _frame):
            log.warning("launcher received %s, forwarding to workers", signal.Signals(signum).name)
            self._shutdown = True
            for p in self.procs:
                if p.is_alive() and p.pid is not None:
                    os.kill(p.pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, _forward)
        signal.signal(signal.SIGINT, _forward)

    def _terminate_all(self, grace_s: float = 30.0):
        for p in self.procs:
            if p.is_alive():
                p.terminate()  # ok: MLS307
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()

    def run(self) -> int:
        while True:
            alive = [p for p in self.procs if p.is_alive()]
            failed = [p for p in self.procs if p.exitcode not in (None, 0)]
            if failed:
                first = failed[0]
                log.error("worker pid=%s exited with code %s; tearing down node", first.pid, first.exitcode)
                self._terminate_all()
                return first.exitcode if first.exitcode > 0 else 1
            if not alive:
                log.info("all %d workers finished", len(self.procs))
                return 0
            if len(alive) < len(self.procs) and not self._shutdown:
                # Once one rank has returned the job is over; don't wait for stragglers.
                log.info("%d/%d workers done, stopping the rest", len(self.procs) - len(alive), len(self.procs))
                os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307
            time.sleep(self.cfg.monitor_interval_s)


def launch(cfg: LaunchConfig, train_args: List[str]) -> int:
    _setup_logging(cfg)
    log.info("launching %d workers on %s (world=%d)", cfg.nproc_per_node, socket.gethostname(), cfg.world_size)
    _reap_stale_workers()
    _run_prelaunch_hooks(cfg)
    _write_launch_manifest(cfg)

    ctx = mp.get_context("spawn")
    procs = []
    for local_rank in range(cfg.nproc_per_node):
        p = ctx.Process(target=_worker_entry, args=(local_rank, cfg, train_args), name=f"rank{local_rank}")
        p.start()
        procs.append(p)

    sup = Supervisor(cfg, procs)
    sup.install_signal_forwarding()
    return sup.run()


if __name__ == "__main__":
    _cfg, _train_args = parse_args()
    sys.exit(launch(_cfg, _train_args))
