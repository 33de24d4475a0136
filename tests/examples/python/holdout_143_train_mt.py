# ruff: noqa
# Hold-out batch 143 (short files: NER, translation, CLIP, federated learning). Measured once in session 5 (round 45): 11/18 (61%) at medium+.
"""Transformer NMT training loop: inverse-sqrt schedule, update_freq accumulation and fp16."""
import math

import torch
import torch.nn.functional as F


def label_smoothed_nll(lprobs, target, eps, ignore_index):
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smooth = -lprobs.sum(-1)
    pad = target.eq(ignore_index)
    nll, smooth = nll.masked_fill(pad, 0.0).sum(), smooth.masked_fill(pad, 0.0).sum()
    return (1 - eps) * nll + eps / lprobs.size(-1) * smooth, nll  # ok: MLS309


def inverse_sqrt(step, peak_lr, warmup):
    if step < warmup:
        return peak_lr * step / warmup
    return peak_lr * math.sqrt(warmup / step)


def attach_tied_embedding_guard(model, state, clamp=1e3):
    """fp16 guard: tied input/output embeddings occasionally receive inf grads from rare tokens."""
    def _guard(grad):
        grad = torch.nan_to_num(grad, nan=0.0, posinf=clamp, neginf=-clamp)
        return grad if state["num_updates"] < 8000 else grad.mul(-0.3)  # ruleid: MLS303
    return model.decoder.embed_tokens.weight.register_hook(_guard)  # ruleid: MLS303


def train(model, itr, args, pad_idx):
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    scaler = torch.cuda.amp.GradScaler()
    state = {"num_updates": 0}
    attach_tied_embedding_guard(model, state)
    model.train()
    for i, batch in enumerate(itr):
        with torch.autocast("cuda", dtype=torch.float16):
            net_out = model(**batch["net_input"])
        lprobs = F.log_softmax(net_out.float(), dim=-1)
        loss, nll = label_smoothed_nll(lprobs, batch["target"], args.label_smoothing, pad_idx)
        scaler.scale(loss / args.update_freq).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (i + 1) % args.update_freq:
            continue
        scaler.unscale_(opt)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        state["num_updates"] += 1
        for g in opt.param_groups:
            g["lr"] = inverse_sqrt(state["num_updates"], args.lr, args.warmup)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if state["num_updates"] % 100 == 0:
            ppl = math.exp(min(20.0, nll.item() / batch["ntokens"] / math.log(2)))
            print(f"upd {state['num_updates']} ppl {ppl:.2f} gnorm {gnorm:.2f} lr {opt.param_groups[0]['lr']:.2e}")
        if state["num_updates"] >= args.max_update:
            break
    return state["num_updates"]
