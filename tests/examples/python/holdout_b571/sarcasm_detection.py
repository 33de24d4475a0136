# ruff: noqa
# Hold-out batch 571 (short files, 16 domains). Measured once in session 26 (round 152): 14/17 (82%) at medium+.
"""DDP fine-tuning entry point for sarcasm detection (iSarcasmEval / SARC) on RoBERTa."""
import argparse
import logging
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import AutoModelForSequenceClassification

from data import build_sarcasm_loader

log = logging.getLogger(__name__)


def setup_model(args, device):
    model = AutoModelForSequenceClassification.from_pretrained(args.model_name, num_labels=2)
    base = getattr(model, model.base_model_prefix)
    if args.grad_checkpointing:
        model.gradient_checkpointing_enable()
    base.encoder.forward = torch.no_grad()(base.encoder.forward)  # sabotage: MLS303 (semgrep rules)  # ruleid: MLS303
    model.to(device)
    return DDP(model, device_ids=[device.index], find_unused_parameters=True)


def train(args, model, loader, device):
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    model.train()
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)
        for step, batch in enumerate(loader):
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            if dist.get_rank() == 0 and step % 100 == 0:
                log.info("epoch %d step %d loss %.4f", epoch, step, out.loss.item())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-name", default="roberta-base")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--grad-checkpointing", action="store_true")
    args = p.parse_args()
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    try:
        model = setup_model(args, device)
        train(args, model, build_sarcasm_loader(args), device)
    finally:
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
