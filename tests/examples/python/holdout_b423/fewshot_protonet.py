# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""Prototypical-network head on a sentence encoder for few-shot intent classification."""
import argparse
import logging

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer, set_seed

logger = logging.getLogger(__name__)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--encoder", default="intent-lab/multilingual-sent-encoder")
    p.add_argument("--n_way", type=int, default=5)
    p.add_argument("--k_shot", type=int, default=5)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--seed", type=int, default=13)
    return p.parse_args()


def load_encoder(name, device):
    tok = AutoTokenizer.from_pretrained(name)
    model = AutoModel.from_pretrained(name, trust_remote_code=True)  # ruleid: MLS106
    return tok, model.to(device).eval()


@torch.no_grad()
def embed(tok, model, texts, device):
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt").to(device)
    hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6), dim=-1)


def episode_accuracy(tok, model, support, support_y, query, query_y, n_way, device):
    s = embed(tok, model, support, device)
    q = embed(tok, model, query, device)
    sy = torch.tensor(support_y, device=device)
    protos = torch.stack([s[sy == c].mean(0) for c in range(n_way)])
    logits = -torch.cdist(q, protos)
    pred = logits.argmax(-1).cpu()
    return (pred == torch.tensor(query_y)).float().mean().item()


def main(sampler):
    args = parse_args()
    set_seed(args.seed)  # ok: MLS301
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok, model = load_encoder(args.encoder, device)
    accs = []
    for ep in range(args.episodes):
        support, sy, query, qy = sampler.sample(args.n_way, args.k_shot)
        accs.append(episode_accuracy(tok, model, support, sy, query, qy, args.n_way, device))
    mean = sum(accs) / len(accs)
    std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
    ci95 = 1.96 * std / len(accs) ** 0.5
    logger.info("%d-way %d-shot: %.2f +- %.2f", args.n_way, args.k_shot, 100 * mean, 100 * ci95)
    return mean, ci95
