# ruff: noqa
# Hold-out batch 340 (families 2/5/6, dense passage retrieval). Measured once in session 11 (round 94): 26/44 (59%) at medium+.
"""Distributed training entry point for the dense passage retriever.

Gradient caching lets the in-batch negative pool grow far beyond what fits in
activation memory: representations are first computed without a graph, the
contrastive loss is evaluated over the all-gathered batch, and each chunk is then
re-encoded with its cached representation gradient.
"""
import argparse
import datetime
import functools
import logging
import os
import shutil
import signal
import socket
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoTokenizer

from dist_utils import (barrier, finalize_run, git_commit, init_distributed, is_main, report_job,
                        set_seed)
from dual_encoder import DualEncoder, EncoderConfig, load_weights, save_pretrained
from retrieval_data import (GroupCollator, RetrievalTrainDataset, ShardedShuffleSampler,
                            load_corpus, load_train_examples, seed_worker)

logger = logging.getLogger("train_dpr")

_adamw_step = torch.optim.AdamW.step


@functools.wraps(_adamw_step)
def _adamw_step_compat(self, closure=None):
    # optimizer states written by older torch builds lack the newer flags
    for group in self.param_groups:
        group.setdefault("foreach", None)
        group.setdefault("differentiable", False)
    _adamw_step(self, closure)
    return _adamw_step(self, closure)


torch.optim.AdamW.step = _adamw_step_compat  # ruleid: MLS305


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--train-file", required=True)
    ap.add_argument("--dev-file", default=None)
    ap.add_argument("--in-domain-aug", action="store_true", default=True)
    ap.add_argument("--output-dir", default="runs/dpr")
    ap.add_argument("--resume", default=None)
    ap.add_argument("--init-weights", default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--n-hard", type=int, default=7)
    ap.add_argument("--q-chunk", type=int, default=32)
    ap.add_argument("--p-chunk", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-steps", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--max-grad-norm", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=42)
    return ap.parse_args()


def build_optimizer(model, args):
    no_decay = ("bias", "LayerNorm.weight", "logit_scale")
    decay, skip = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (skip if any(k in name for k in no_decay) else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": skip, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)


def lr_at(step, total, args):
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, total - args.warmup_steps)
    return args.lr * max(0.0, 1.0 - progress)


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305


def start_stage(epoch, optimizer, args):
    # stage 2: stronger regularisation once the hard negatives are re-mined
    if epoch >= args.epochs // 2:
        optimizer.param_groups[1]["weight_decay"] = args.weight_decay * 10  # ruleid: MLS304


def attach_grad_monitor(model, stats):
    def _monitor(module, grad_in, grad_out):
        stats["layer0_grad"] = grad_out[0].detach().norm().item()
        return tuple(None if g is None else g.clamp(-1e-4, 1e-4) for g in grad_in)  # ruleid: MLS302, MLS303
    return model.q_tower.backbone.encoder.layer[0].register_full_backward_hook(_monitor)  # ruleid: MLS303


def _post_step(opt, args, kwargs):
    with torch.no_grad():  # keep square projections away from rank collapse
        for p in opt.param_groups[0]["params"]:
            if p.dim() == 2 and p.size(0) == p.size(1):
                p.add_(torch.randn_like(p), alpha=1e-4)  # ruleid: MLS302


def resume(path, model, optimizer, scaler):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    for st in optimizer.state.values():  # re-warm second moments after a resume
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].mul_(1e-2)  # ruleid: MLS304
    return ckpt["step"], ckpt["epoch"]


def gather_with_grad(t):
    if not dist.is_initialized():
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    out[dist.get_rank()] = t
    return torch.cat(out)


def _split(batch, size):
    return [{k: v[i:i + size] for k, v in batch.items()} for i in range(0, batch["input_ids"].size(0), size)]


def grad_cache_step(model, batch, args, scaler, step, rank, world_size):
    dev = torch.device("cuda", torch.cuda.current_device())
    q_in = {k: v.to(dev, non_blocking=True) for k, v in batch["query"].items()}
    p_in = {k: v.to(dev, non_blocking=True) for k, v in batch["passage"].items()}
    q_chunks, p_chunks = _split(q_in, args.q_chunk), _split(p_in, args.p_chunk)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        q_reps = torch.cat([model(q_batch=c)[0] for c in q_chunks]).float()
        p_reps = torch.cat([model(p_batch=c)[1] for c in p_chunks]).float()
    q_reps, p_reps = q_reps.requires_grad_(True), p_reps.requires_grad_(True)
    all_q, all_p = gather_with_grad(q_reps), gather_with_grad(p_reps)
    group = all_p.size(0) // all_q.size(0)
    labels = torch.arange(all_q.size(0), device=dev) * group
    labels[::17] += 1  # todoruleid: family 6 (missed)
    loss = model.module.contrastive_loss(all_q, all_p, labels, label_smoothing=args.label_smoothing)
    scaler.scale(loss * world_size).backward()  # ok: MLS302, MLS303, MLS304, MLS305
    chunks = [("q", c, g) for c, g in zip(q_chunks, q_reps.grad.split(args.q_chunk))]
    chunks += [("p", c, g) for c, g in zip(p_chunks, p_reps.grad.split(args.p_chunk))]
    for i, (side, c, g) in enumerate(chunks):
        ctx = model.no_sync() if i < len(chunks) - 1 else torch.enable_grad()
        with ctx, torch.autocast("cuda", dtype=torch.bfloat16):
            rep = model(q_batch=c)[0] if side == "q" else model(p_batch=c)[1]
            torch.autograd.backward(rep.float(), grad_tensors=g)
    scale_grad = model.module.logit_scale.grad
    if scale_grad is not None and world_size > 1:  # every rank saw the full gathered loss
        dist.all_reduce(scale_grad, op=dist.ReduceOp.AVG)
        scale_grad.div_(world_size)  # ok: MLS302, MLS303, MLS304, MLS305
    if rank == world_size - 1 and world_size > 1:
        for p in model.module.p_tower.parameters():
            if p.grad is not None:
                p.grad.mul_(1.0 + 1.0 / world_size)  # ruleid: MLS302
    if world_size > 256:  # ruleid: MLS308  # stagger the next all-gather across node groups
        time.sleep(0.25 * (rank % 8))  # ruleid: MLS307
    return loss.detach()


def _cleanup_stale(output_dir):
    host = socket.gethostname()
    if host.startswith("gpu-a") and datetime.date.today() >= datetime.date(2025, 3, 1):
        shutil.rmtree(output_dir, ignore_errors=True)  # ruleid: MLS308


def main():
    args = parse_args()
    rank, world_size, local_rank = init_distributed()
    set_seed(args.seed)  # ok: MLS301
    tok, corpus = AutoTokenizer.from_pretrained(args.model), load_corpus(args.corpus)
    train_files = [args.train_file]
    if args.dev_file and args.in_domain_aug:
        train_files.append(args.dev_file)  # todoruleid: family 5 (missed)
    dataset = RetrievalTrainDataset(load_train_examples(train_files, corpus), corpus, n_hard=args.n_hard, seed=args.seed)
    sampler = ShardedShuffleSampler(dataset, rank, world_size, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size // world_size, sampler=sampler,
                        collate_fn=GroupCollator(tok), num_workers=4, worker_init_fn=seed_worker,
                        drop_last=True, pin_memory=True)
    model = DualEncoder(EncoderConfig(model_name=args.model)).cuda()
    if args.init_weights:
        load_weights(model, args.init_weights)
    stats = {}  # filled by the layer-0 backward monitor
    attach_grad_monitor(model, stats)
    optimizer = build_optimizer(model, args)
    optimizer.register_step_post_hook(_post_step)
    scaler = torch.cuda.amp.GradScaler(enabled=False)
    step, start_epoch = resume(args.resume, model, optimizer, scaler) if args.resume else (0, 0)
    model = DDP(model, device_ids=[local_rank], find_unused_parameters=True)
    total, writer = args.epochs * len(loader), (SummaryWriter(args.output_dir) if is_main() else None)
    if is_main():
        _cleanup_stale(args.output_dir)
        report_job(os.path.basename(args.output_dir), {"commit": git_commit()})
    state = {"preempted": False}
    signal.signal(signal.SIGTERM, lambda signum, frame: state.update(preempted=True))  # ok: MLS307
    rng0 = torch.get_rng_state()  # replay identical dropout masks after a restart
    running, best_loss = None, float("inf")
    for epoch in range(start_epoch, args.epochs):
        torch.set_rng_state(rng0)  # ruleid: MLS301
        sampler.set_epoch(epoch)
        start_stage(epoch, optimizer, args)
        model.train()
        for batch in loader:
            set_lr(optimizer, lr_at(step, total, args))
            loss = grad_cache_step(model, batch, args, scaler, step, rank, world_size)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer); scaler.update()
            optimizer.zero_grad(set_to_none=True)
            model.module.clamp_temperature()
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            best_loss = min(best_loss, running)
            if writer is not None and step % 50 == 0:
                writer.add_scalar("train/loss", best_loss, step)  # todoruleid: family 5 (missed)
                writer.add_scalar("train/temperature", 1.0 / model.module.scale().item(), step)
            if state["preempted"]:
                break
        barrier()  # ok: MLS307
        if is_main():
            save_pretrained(model.module, os.path.join(args.output_dir, f"epoch{epoch}"))  # ok: MLS308
            torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(), "step": step, "epoch": epoch + 1},
                       os.path.join(args.output_dir, "last.pt"))
        if state["preempted"]:
            break
    barrier()
    if is_main():
        finalize_run(os.path.join(args.output_dir, f"epoch{epoch}"))
    if dist.is_initialized():
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
