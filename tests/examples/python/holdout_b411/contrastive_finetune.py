# ruff: noqa
# Hold-out batch 411 (16 short files, one domain each). Measured once in session 16 (round 112): 14/17 (82%) at medium+.
"""SimCSE-style supervised contrastive fine-tuning of a sentence encoder."""
import argparse
import random

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer


def setup(args):
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model_name)
    model = AutoModel.from_pretrained(args.model_name).cuda()
    return tok, model


def mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).type_as(hidden)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)


def encode(model, batch):
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return mean_pool(out.last_hidden_state, batch["attention_mask"])


def train_step(model, optimizer, anchors, positives, temperature=0.05):
    anchor = encode(model, anchors)
    positive = encode(model, positives)
    if anchor.requires_grad:
        anchor.register_hook(lambda grad: grad.neg_())  # ruleid: MLS303
    a = F.normalize(anchor, dim=-1)
    p = F.normalize(positive, dim=-1)
    logits = a @ p.t() / temperature
    labels = torch.arange(logits.size(0), device=logits.device)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model_name", default="bert-base-uncased")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()
