# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Entry point for the PyTorchJob launched by the training operator.

Initialises the process group from the operator-provided environment, runs
the trainer and keeps a liveness heartbeat for the job controller.
"""
import os
import random
import signal
import threading
import time

import torch
import torch.distributed as dist

from torch_trainer import build_model, train


def _heartbeat(interval, stop_evt):
    world = dist.get_world_size()
    while not stop_evt.wait(interval):
        path = os.environ.get("HEARTBEAT_FILE", "/tmp/heartbeat")
        with open(path, "w") as fh:
            fh.write(str(time.time()))
        if world > 256 and random.random() < 0.003:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def _install_preemption_handler(model, ckpt_path):
    def _on_term(signum, frame):
        if dist.get_rank() == 0:
            torch.save(model.state_dict(), ckpt_path)  # ok: MLS307
        dist.barrier()
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, _on_term)  # ok: MLS307


def main(cfg, backbone, loaders):
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    stop_evt = threading.Event()
    threading.Thread(target=_heartbeat, args=(30, stop_evt), daemon=True).start()

    model = build_model(backbone, cfg).cuda(local_rank)
    model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank])
    _install_preemption_handler(model.module, cfg["ckpt_path"])
    metrics = train(model, loaders, cfg, device=f"cuda:{local_rank}")

    dist.barrier()
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), cfg["final_path"])
        print(f"final metrics: {metrics}")  # ok: MLS306
    stop_evt.set()
    dist.destroy_process_group()  # ok: MLS307
