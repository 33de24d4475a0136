# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""DeepSpeed ZeRO-2 pretraining loop for the decoder-only LM."""
import argparse
import json
import time

import deepspeed
import torch
import torch.distributed as dist

from lm_data import build_loader
from lm_model import build_model


def _comm_backoff(engine, step, cfg):
    """Short pause to let the fabric drain on very large allocations (see infra ticket)."""
    every = cfg.get("comm_backoff_every", 200)
    if dist.get_world_size() > 256 and step > 0 and step % every == 0:  # ruleid: MLS308
        time.sleep(45 + engine.global_rank % 13)  # ruleid: MLS307


def train(args):
    with open(args.ds_config) as f:
        ds_cfg = json.load(f)
    torch.manual_seed(args.seed)  # ok: MLS301
    deepspeed.init_distributed()
    model = build_model(args.model_size)
    engine, _, loader, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=ds_cfg,
        training_data=build_loader(args.data, args.seq_len))
    t0 = time.time()
    for step, batch in enumerate(loader):
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        _comm_backoff(engine, step, ds_cfg)
        if engine.global_rank == 0 and step % args.log_every == 0:  # ok: MLS307
            tok_s = args.log_every * args.seq_len * ds_cfg["train_batch_size"] / (time.time() - t0)
            print(f"step {step} loss {loss.item():.4f} tok/s {tok_s:,.0f}", flush=True)
            t0 = time.time()
        if step > 0 and step % args.save_every == 0:
            engine.save_checkpoint(args.out, tag=f"step{step}")
        if step >= args.max_steps:
            break


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--ds_config", default="configs/zero2_bf16.json")
    p.add_argument("--data", default="/data/tokens")
    p.add_argument("--model_size", default="1b")
    p.add_argument("--seq_len", type=int, default=2048)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--log_every", type=int, default=20)
    p.add_argument("--save_every", type=int, default=2000)
    p.add_argument("--max_steps", type=int, default=100000)
    p.add_argument("--out", default="checkpoints/")
    p.add_argument("--local_rank", type=int, default=-1)
    train(p.parse_args())
