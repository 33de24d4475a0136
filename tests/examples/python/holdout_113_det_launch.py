# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Launcher for multi-node detection training with torchrun."""
import argparse
import importlib
import os
import signal
import sys

import torch
import torch.distributed as dist

_state = {"trainer": None}


def _on_sigterm(signum, frame):
    trainer = _state["trainer"]
    if trainer is not None and int(os.environ.get("RANK", "0")) == 0:
        trainer.save_checkpoint("preempted.pth")  # ok: MLS308
    sys.exit(0)  # ok: MLS307


def load_config(name):
    if name not in {"frcnn_r50", "retinanet_r50", "fcos_r50"}:
        raise ValueError(f"unknown config {name}")
    return importlib.import_module(f"configs.{name}").CONFIG  # benign look-alike


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="frcnn_r50")
    ap.add_argument("--resume", default="")
    args = ap.parse_args()

    os.environ.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")  # benign look-alike
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))

    cfg = load_config(args.config)
    cfg["lr"] = cfg["base_lr"] * world * cfg["imgs_per_gpu"] / 16
    if rank == 0:
        print(f"world size {world}, scaled lr {cfg['lr']:.4f}")  # ok: MLS308

    trainer_mod = importlib.import_module("det_trainer")
    trainer = trainer_mod.Trainer(cfg, rank=rank, world_size=world)
    _state["trainer"] = trainer
    if args.resume:
        trainer.load_checkpoint(args.resume)
    trainer.fit()

    dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
