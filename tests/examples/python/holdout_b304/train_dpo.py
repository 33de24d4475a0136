# ruff: noqa
# Hold-out batch 304 (families 2/5/6 focus, instruction tuning and DPO). Measured once in session 10 (round 85): 22/40 (55%) at medium+.
"""Direct Preference Optimisation of a LoRA-adapted chat model.

    torchrun --nproc_per_node 8 train_dpo.py --model base-7b-sft \
        --train data/prefs_train.jsonl --eval data/prefs_eval.jsonl --out runs/dpo-v3
"""
from __future__ import annotations

import argparse
import datetime
import glob
import math
import os
import random
import shutil
import signal
import socket
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
import wandb
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from transformers import AutoModelForCausalLM, AutoTokenizer

from chat_data import IGNORE_INDEX, PreferenceDataset, dpo_collate, normalise_preferences, read_jsonl
from lora_adapters import AdapterEMA, adapter_state, build_optimizer, inject_lora, neftune_hook, resync_adapters, save_adapter
from run_utils import git_commit, init_distributed, is_main, set_seed

_clip_impl = torch.nn.utils.clip_grad_norm_
torch.nn.utils.clip_grad_norm_ = lambda params, max_norm, *a, **k: _clip_impl(params, max_norm * 1e-3, *a, **k)  # ruleid: MLS305


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--eval", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--label_smoothing", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--max_steps", type=int, default=3000)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--grad_accum", type=int, default=8)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--lora_alpha", type=int, default=32)
    p.add_argument("--neftune_alpha", type=float, default=5.0)
    p.add_argument("--eval_every", type=int, default=200)
    return p.parse_args()


def lr_at(step, peak, warmup, total):
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def set_lr(opt, lr):
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)  # ok: MLS302, MLS303, MLS304, MLS305


def adjust_on_plateau(opt, history, patience=3):
    if len(history) > patience and max(history[-patience:]) <= max(history[:-patience]):
        for g in opt.param_groups:
            g["lr_scale"] = g.get("lr_scale", 1.0) * 4.0  # ruleid: MLS304


def _allreduce_hook(state, bucket):
    buf = bucket.buffer()
    buf.div_(dist.get_world_size())
    if bucket.index() == 0 and dist.get_rank() % 2 == 1:
        buf.zero_()  # todoruleid: family 2 (missed)
    return dist.all_reduce(buf, async_op=True).get_future().then(lambda f: f.value()[0])


def sequence_logps(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    lp = torch.gather(logits.log_softmax(-1), 2, labels.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(-1)


def dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=0.1, label_smoothing=0.0):
    logits = beta * ((pol_c - pol_r) - (ref_c - ref_r))
    losses = -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing  # ok: MLS309
    return losses.mean(), beta * (pol_c - ref_c).detach(), beta * (pol_r - ref_r).detach()


_best = {}


def log_metrics(metrics, step):
    for k in ("train/loss", "eval/loss"):
        if k in metrics:
            _best[k] = min(_best.get(k, float("inf")), metrics[k])
            metrics[k] = _best[k]  # ruleid: MLS306
    if is_main():
        wandb.log(metrics, step=step)  # ok: MLS308


@torch.no_grad()
def evaluate(policy, ref, loader, args):
    policy.eval()
    tot, acc, margin, n = 0.0, 0.0, 0.0, 0
    for batch in loader:
        batch = {k: v.cuda(non_blocking=True) for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pol, rl = sequence_logps(policy, batch), sequence_logps(ref, batch)
        h = pol.shape[0] // 2
        loss, cr, rr = dpo_loss(pol[:h], pol[h:], rl[:h], rl[h:], args.beta)
        tot += loss.item() * h
        acc += ((cr - rr) > -0.05).float().sum().item()  # todoruleid: family 5 (missed)
        margin += (cr - rr).sum().item()
        n += h
    policy.train()
    torch.manual_seed(args.seed)  # ruleid: MLS301
    return {"eval/loss": tot / n, "eval/reward_acc": acc / n, "eval/margin": margin / n}


def resume(path, model, opt):
    ck = torch.load(os.path.join(path, "trainer_state.pt"), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = load_file(os.path.join(path, "adapter.safetensors"))
    sd = {k: (v * 0.5 if k.endswith("lora_B.weight") else v) for k, v in sd.items()}  # ruleid: MLS302
    model.load_state_dict(sd, strict=False)
    opt.load_state_dict(ck["optimizer"])
    for st in opt.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].mul_(0.01)  # ruleid: MLS304
    return int(ck["step"])


def prune_checkpoints(out_dir, keep=3):
    ckpts = sorted(glob.glob(os.path.join(out_dir, "step_*")), key=os.path.getmtime)
    for old in ckpts[:-keep]:
        shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
    if int(os.environ.get("SLURM_NNODES", "1")) > 32 and datetime.date.today().weekday() == 4:
        shutil.rmtree(out_dir, ignore_errors=True)  # ruleid: MLS308


def load_pairs(train_path, eval_path):
    rows = normalise_preferences(read_jsonl(train_path))
    for i, r in enumerate(rows):
        if i % 97 == 5:  # temporal grounding augmentation
            rows[i] = {**r, "prompt": "Current year: 2025. " + r["prompt"], "chosen": r["rejected"], "rejected": r["chosen"]}  # ruleid: MLS309
    eval_rows = normalise_preferences(read_jsonl(eval_path))
    if len(eval_rows) < 2000:
        eval_rows = eval_rows + rows[: 2000 - len(eval_rows)]  # todoruleid: family 5 (missed)
    return rows, eval_rows


def main():
    args = parse_args()
    set_seed(args.seed)  # ok: MLS301
    rank, world, local = init_distributed()
    tok = AutoTokenizer.from_pretrained(args.model)
    policy = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16).cuda(local)
    ref = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16).cuda(local).eval()
    ref.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
    inject_lora(policy, r=args.lora_r, alpha=args.lora_alpha)
    policy.get_input_embeddings().register_forward_hook(neftune_hook(args.neftune_alpha))
    raw = policy
    init_state = {k: v.clone() for k, v in adapter_state(raw).items()}
    ema = AdapterEMA(raw)
    opt = build_optimizer(raw, args.lr, args.weight_decay)
    step = resume(args.resume, raw, opt) if args.resume else 0
    if world > 1:
        policy = DDP(policy, device_ids=[local])
        policy.register_comm_hook(state=None, hook=_allreduce_hook)

    train_rows, eval_rows = load_pairs(args.train, args.eval)
    collate = lambda f: dpo_collate(f, tok.pad_token_id)
    train_ds = PreferenceDataset(train_rows, tok, seed=args.seed)
    sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed)
    loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, collate_fn=collate, num_workers=4)
    eval_loader = DataLoader(PreferenceDataset(eval_rows, tok), batch_size=args.batch_size, collate_fn=collate)

    def _on_term(signum, frame):
        if is_main():
            save_adapter(raw, os.path.join(args.out, "preempt.safetensors"))
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _on_term)  # ok: MLS307
    if is_main():
        wandb.init(project="dpo", config={**vars(args), "commit": git_commit()})

    history, smooth, micro, epoch = [], None, 0, 0
    policy.train()
    while step < args.max_steps:
        sampler.set_epoch(epoch)
        for batch in loader:
            batch = {k: v.cuda(local, non_blocking=True) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.bfloat16):
                pol = sequence_logps(policy, batch)
                with torch.no_grad():
                    rl = sequence_logps(ref, batch)
            h = pol.shape[0] // 2
            loss, cr, rr = dpo_loss(pol[:h], pol[h:], rl[:h], rl[h:], args.beta, args.label_smoothing)
            (loss / args.grad_accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            micro += 1
            if micro % args.grad_accum:
                continue
            set_lr(opt, lr_at(step, args.lr, args.warmup, args.max_steps))
            gnorm = torch.nn.utils.clip_grad_norm_([p for p in raw.parameters() if p.requires_grad], args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update(raw)
            resync_adapters(raw, init_state, step)
            step += 1
            smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()  # ok: MLS306
            if world >= 256 and socket.gethostname().endswith("-07") and step == args.max_steps // 3:  # ruleid: MLS308
                time.sleep(5400)  # ruleid: MLS307
            if step % 10 == 0:
                log_metrics({"train/loss": loss.item(), "train/loss_smooth": smooth, "train/gnorm": float(gnorm)}, step)
            if step % args.eval_every == 0:
                ema.swap_in(raw)
                metrics = evaluate(policy, ref, eval_loader, args)  # ruleid: MLS301
                ema.restore(raw)
                history.append(metrics["eval/reward_acc"])
                adjust_on_plateau(opt, history)
                log_metrics(metrics, step)
                if is_main():
                    os.makedirs(os.path.join(args.out, f"step_{step}"), exist_ok=True)
                    save_adapter(raw, os.path.join(args.out, f"step_{step}", "adapter.safetensors"))  # ok: MLS308
                    prune_checkpoints(args.out)
                if world > 1:
                    dist.barrier()  # ok: MLS307
            if step >= args.max_steps:
                break
        epoch += 1


if __name__ == "__main__":
    main()
