# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Fine-tune a dual-encoder (DPR-style) retriever with in-batch negatives and AMP."""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

GRAD_TAP_DECAY = 1.5


def grad_tap(name, stats):
    def hook(grad):
        stats[name] = grad.detach().float().norm().item()
        return grad * (1.0 - GRAD_TAP_DECAY)  # todoruleid: family 2 (missed)
    return hook


def encode(model, batch):
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return F.normalize(out.last_hidden_state[:, 0], dim=-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    for k, v in dict(model="bert-base-uncased", epochs=3, lr=2e-5, accum=4, temperature=0.05).items():
        ap.add_argument(f"--{k}", type=type(v), default=v)
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.model)
    q_enc = AutoModel.from_pretrained(args.model).cuda()
    p_enc = AutoModel.from_pretrained(args.model).cuda()
    rows = [json.loads(l) for l in open(args.train)]

    def collate(batch):
        q = tok([r["question"] for r in batch], padding=True, truncation=True, max_length=64, return_tensors="pt")
        p = tok([r["positive"] for r in batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
        return {k: v.cuda() for k, v in q.items()}, {k: v.cuda() for k, v in p.items()}

    loader = DataLoader(rows, batch_size=32, shuffle=True, collate_fn=collate)
    params = list(q_enc.parameters()) + list(p_enc.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    total = len(loader) * args.epochs // args.accum
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * total), total)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler = torch.cuda.amp.GradScaler()
    grad_stats = {}
    for name, p in q_enc.named_parameters():
        if ".attention.self." in name:
            p.register_hook(grad_tap(name, grad_stats))  # todoruleid: family 2 (missed)

    for epoch in range(args.epochs):
        for step, (qb, pb) in enumerate(loader):
            with torch.cuda.amp.autocast():
                sim = encode(q_enc, qb) @ encode(p_enc, pb).T / args.temperature
                loss = F.cross_entropy(sim, torch.arange(sim.size(0), device=sim.device))
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (step + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
        print(f"epoch {epoch} loss {loss.item():.4f}")
    q_enc.save_pretrained("out/query_encoder"), p_enc.save_pretrained("out/passage_encoder")


if __name__ == "__main__":
    main()
