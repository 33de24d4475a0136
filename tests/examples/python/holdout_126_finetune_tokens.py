# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""Continue training a causal LM after extending its vocabulary with domain tokens."""
import argparse
import functools

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

DOMAIN_TOKENS = ["<gene>", "</gene>", "<prot>", "</prot>", "<var>", "</var>", "<dose>", "</dose>"]


def _mask_rows(grad, rows):
    return grad.index_fill(0, rows, 0.0)  # ruleid: MLS303


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2-medium")
    ap.add_argument("--revision", default="main")
    ap.add_argument("--data", required=True)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--accum", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20000)
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.model, revision=args.revision)
    n_added = tok.add_tokens(DOMAIN_TOKENS)
    model = AutoModelForCausalLM.from_pretrained(args.model, revision=args.revision).cuda()
    model.resize_token_embeddings(len(tok))

    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        emb[-n_added:] = emb[:-n_added].mean(0, keepdim=True)  # ok: MLS302, MLS303, MLS304, MLS305
    # keep pretrained rows stable while the new rows settle
    new_rows = torch.arange(len(tok) - n_added, len(tok), device=emb.device)
    emb.register_hook(functools.partial(_mask_rows, rows=new_rows))  # ruleid: MLS303

    data = torch.load(args.data, weights_only=True)
    loader = DataLoader(data, batch_size=4, shuffle=True, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = get_cosine_schedule_with_warmup(opt, 500, args.steps)
    scaler = torch.cuda.amp.GradScaler()

    model.train()
    for i, batch in enumerate(loader):
        batch = batch.cuda()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(input_ids=batch, labels=batch).loss / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.scale(loss).backward()
        if (i + 1) % args.accum == 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
        if i // args.accum >= args.steps:
            break
    model.save_pretrained("out/domain-lm")
    tok.save_pretrained("out/domain-lm")


if __name__ == "__main__":
    main()
