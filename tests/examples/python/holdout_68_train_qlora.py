# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""QLoRA fine-tuning (4-bit base weights, bf16 LoRA adapters); launch with torchrun."""
import argparse
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--resume", default=None)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    seed_everything(args.seed + rank)

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(args.model, quantization_config=bnb, device_map={"": local_rank})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear"))
    if args.resume:
        model.load_state_dict(torch.load(args.resume, map_location="cpu", weights_only=True), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    ids = torch.load(args.data, weights_only=True)
    ds = TensorDataset(ids)
    g = torch.Generator().manual_seed(args.seed)
    dl = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, seed=args.seed), worker_init_fn=seed_worker, generator=g, num_workers=2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    scaler = torch.cuda.amp.GradScaler(enabled=False)  # bf16 does not need scaling; kept for fp16 runs
    for step, (x,) in enumerate(dl):
        x = x.cuda()
        loss = model(input_ids=x, labels=x).loss / args.accum
        scaler.scale(loss).backward()
        if (step + 1) % args.accum == 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.3)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.update()
            opt.zero_grad(set_to_none=True)
    if rank == 0:
        model.save_pretrained("runs/qlora")  # ok: MLS308
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
