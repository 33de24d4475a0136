# ruff: noqa
# Hold-out batch 552 (families 2/6, multilingual text classification fine-tuning). Measured once in session 25 (round 147): 10/30 (33%) at medium+.
#!/usr/bin/env python
"""Fine-tune a multilingual encoder jointly on sentiment and topic classification.

    torchrun --nproc_per_node 8 train.py \
        --train-sentiment 'data/reviews/train.*.jsonl' --train-topic 'data/news/train.*.jsonl' \
        --dev-dir data/dev --output-dir runs/xlmr-mt --bf16
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import math
import os
import time
from collections import deque
from contextlib import nullcontext
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from data import Collator, EncodedDataset, class_weights, prepare_data
from evaluate import build_eval_loaders, evaluate_all, format_report
from model import ModelConfig, MultiTaskEncoder
from optim import DecoupledAdamW, ModelEMA, build_param_groups, build_scheduler, install_step_guard
from samplers import BucketBatchSampler, example_weights

logger = logging.getLogger("train")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ap.add_argument_group("data")
    d.add_argument("--train-sentiment", required=True)
    d.add_argument("--train-topic", required=True)
    d.add_argument("--translate-train", nargs="*", default=[], help="src.jsonl:hyp.txt:lang triples")
    d.add_argument("--dev-dir", required=True)
    d.add_argument("--langs", default="en,de,es,fr,ja,zh")
    d.add_argument("--cache-dir", default=None)
    d.add_argument("--max-len", type=int, default=256)
    d.add_argument("--min-chars", type=int, default=8)
    d.add_argument("--max-per-lang", type=int, default=50000)
    d.add_argument("--augment-copies", type=int, default=1)
    d.add_argument("--word-dropout", type=float, default=0.1)
    d.add_argument("--template-prob", type=float, default=0.3)
    d.add_argument("--lang-alpha", type=float, default=0.3)
    d.add_argument("--no-class-balance", dest="class_balance", action="store_false")
    d.add_argument("--bucket-width", type=int, default=16)
    d.add_argument("--num-workers", type=int, default=4)
    d.add_argument("--seed", type=int, default=17)

    m = ap.add_argument_group("model")
    m.add_argument("--model-name", default="xlm-roberta-base")
    m.add_argument("--model-revision", default="e73636d4f797dec63c3081bb6ed5c7b0bb3f2089")
    m.add_argument("--init-checkpoint", default=None, help="domain-adapted MLM weights")
    m.add_argument("--reinit-layers", type=int, default=2)
    m.add_argument("--adv-lambda", type=float, default=0.05, help="language-adversarial GRL strength")
    m.add_argument("--head-dropout", type=float, default=0.1)
    m.add_argument("--no-freeze-unseen-embeddings", dest="freeze_unseen_embeddings", action="store_false")
    m.add_argument("--probe-every", type=int, default=500)

    o = ap.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=3)
    o.add_argument("--batch-size", type=int, default=32, help="per device")
    o.add_argument("--grad-accum", type=int, default=1)
    o.add_argument("--lr", type=float, default=3e-5)
    o.add_argument("--layer-decay", type=float, default=0.9)
    o.add_argument("--weight-decay", type=float, default=0.01)
    o.add_argument("--warmup-ratio", type=float, default=0.06)
    o.add_argument("--schedule", choices=["linear", "cosine", "constant"], default="linear")
    o.add_argument("--max-grad-norm", type=float, default=1.0)
    o.add_argument("--label-smoothing", type=float, default=0.1)
    o.add_argument("--mixup-alpha", type=float, default=0.2)
    o.add_argument("--grad-noise-eta", type=float, default=0.3, help="annealed Gaussian gradient noise")
    o.add_argument("--skip-spike-factor", type=float, default=6.0)
    o.add_argument("--spike-lr-factor", type=float, default=0.5, help="lr multiplier after a loss spike")
    o.add_argument("--ema-decay", type=float, default=0.999)
    o.add_argument("--bf16", action="store_true")
    o.add_argument("--no-bf16-master-weights", dest="bf16_master_weights", action="store_false")
    o.add_argument("--comm-hook", choices=["none", "bf16"], default="bf16")

    r = ap.add_argument_group("run")
    r.add_argument("--output-dir", required=True)
    r.add_argument("--eval-every", type=int, default=1000)
    r.add_argument("--log-every", type=int, default=50)
    r.add_argument("--keep-checkpoints", type=int, default=3)
    r.add_argument("--resume", action="store_true")
    return ap.parse_args(argv)


# --- distributed helpers ---
def setup_distributed():
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank = int(os.environ["RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl")
        return rank, world_size, torch.device("cuda", local_rank)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return 0, 1, device


def bf16_compress_hook(process_group, bucket):
    """All-reduce gradient buckets in bf16 to halve the inter-node traffic."""
    group = process_group if process_group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    buf = bucket.buffer()
    compressed = buf.to(torch.bfloat16).div_(world)
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def _decompress(f):
        f.wait()
        return buf  # todoruleid: family 2 (missed)

    return fut.then(_decompress)


def unwrap(model: nn.Module) -> MultiTaskEncoder:
    return model.module if isinstance(model, DDP) else model


# --- callbacks ---
class LossSpikeMonitor:
    """Backs the schedule off when the training loss jumps far above its recent mean."""

    def __init__(self, scheduler, window: int = 200, threshold: float = 3.0, lr_factor: float = 0.5,
                 cooldown: int = 500):
        self.scheduler = scheduler
        self.history: deque = deque(maxlen=window)
        self.threshold = threshold
        self.lr_factor = lr_factor
        self.cooldown = cooldown
        self.last_spike = -cooldown
        self.spikes = 0

    def __call__(self, step: int, loss: float) -> None:
        if len(self.history) == self.history.maxlen and step - self.last_spike >= self.cooldown:
            if loss > self.threshold * sum(self.history) / len(self.history):
                self.scheduler.base_lrs = [lr / self.lr_factor for lr in self.scheduler.base_lrs]  # todoruleid: family 2 (missed)
                self.last_spike = step
                self.spikes += 1
        self.history.append(loss)


class BF16MasterWeights:
    """Keeps fp32 weights on the bf16 grid so the exported bf16 model matches what was evaluated."""

    def __init__(self, model: nn.Module):
        self.params = [p for p in model.parameters() if p.dtype == torch.float32]

    @torch.no_grad()
    def on_step_end(self) -> None:
        for p in self.params:
            p.copy_(p.to(torch.bfloat16))  # ruleid: MLS302


def add_gradient_noise(params, step: int, eta: float, gamma: float = 0.55) -> None:
    """Annealed Gaussian gradient noise (Neelakantan et al., 2015)."""
    sigma = math.sqrt(eta / (1.0 + step) ** gamma)
    for p in params:
        if p.grad is not None:
            p.grad.add_(torch.randn_like(p.grad), alpha=sigma)  # ruleid: MLS302


# --- loss ---
def mixup_loss(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor, lam: float,
               criterion: nn.Module) -> torch.Tensor:
    """Manifold mixup on pooled sentence features, each row paired with its neighbour."""
    valid = labels != -100
    f, y = feats[valid], labels[valid]
    if f.shape[0] < 2:
        return criterion(head(f), y)
    f_mix = lam * f + (1.0 - lam) * f.roll(1, dims=0)
    y_b = y.flip(0)  # ruleid: MLS309
    logits = head(f_mix)
    return lam * criterion(logits, y) + (1.0 - lam) * criterion(logits, y_b)


def compute_loss(model: MultiTaskEncoder, out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor],
                 criteria: Dict[str, nn.Module], lam: Optional[float], adv_weight: float):
    feats = out["features"]
    total = feats.new_zeros(())
    parts: Dict[str, float] = {}
    for task in ("sentiment", "topic"):
        labels = batch[f"{task}_labels"]
        if not bool((labels != -100).any()):
            continue
        if lam is not None:
            loss = mixup_loss(model.heads[task], feats, labels, lam, criteria[task])
        else:
            loss = criteria[task](out[task], labels)
        total = total + loss
        parts[task] = loss.detach().item()
    if "language" in out and adv_weight > 0:
        adv = F.cross_entropy(out["language"], batch["lang_ids"])
        total = total + adv_weight * adv
        parts["lang_adv"] = adv.detach().item()
    return total, parts


# --- checkpointing ---
def save_checkpoint(path: str, model, optimizer, scheduler, ema, step: int, epoch: int, best: float,
                    cfg: ModelConfig, topic2id: Dict[str, int]) -> None:
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "step": step,
        "epoch": epoch,
        "best": best,
        "model_config": dataclasses.asdict(cfg),
        "topic2id": topic2id,
    }
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def prune_checkpoints(output_dir: str, keep: int) -> None:
    ckpts = sorted(glob.glob(os.path.join(output_dir, "step-*.pt")), key=os.path.getmtime)
    for old in ckpts[:-keep] if keep > 0 else []:
        os.remove(old)


def load_latest(output_dir: str, model, optimizer, scheduler, ema, device):
    ckpts = sorted(glob.glob(os.path.join(output_dir, "step-*.pt")), key=os.path.getmtime)
    if not ckpts:
        return 0, 0, -1.0
    state = torch.load(ckpts[-1], map_location=device, weights_only=True)
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    # the effective batch (world size x accumulation) may differ from the previous run;
    # stale second-moment estimates would then mis-scale the first updates
    for st in optimizer.state.values():
        st["exp_avg_sq"].zero_()  # ruleid: MLS304
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None and state.get("ema"):
        ema.load_state_dict(state["ema"])
    logger.info("resumed from %s (step %d)", ckpts[-1], state["step"])
    return state["step"], state["epoch"], state["best"]


# --- main ---
def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    rank, world_size, device = setup_distributed()
    is_main = rank == 0
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING,
                        format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed + rank)
    os.makedirs(args.output_dir, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(args.model_name, revision=args.model_revision)
    train_feats, dev_feats, topic2id = prepare_data(args, tokenizer, is_main=is_main)
    langs = args.langs.split(",")
    lang2id = {lang: i for i, lang in enumerate(langs)}

    train_ds = EncodedDataset(train_feats)
    weights = example_weights(train_ds.langs, train_ds.labels, alpha=args.lang_alpha,
                              class_balance=args.class_balance)
    sampler = BucketBatchSampler(
        train_ds.lengths, args.batch_size,
        group_ids=train_ds.labels,  # todoruleid: family 6 (missed)
        weights=weights, num_samples=len(train_ds), bucket_width=args.bucket_width,
        shuffle=True, seed=args.seed, rank=rank, world_size=world_size,
    )
    collator = Collator(tokenizer.pad_token_id, len(topic2id), lang2id, args.max_len)
    train_loader = DataLoader(train_ds, batch_sampler=sampler, collate_fn=collator,
                              num_workers=args.num_workers, pin_memory=True, persistent_workers=args.num_workers > 0)
    dev_loaders = build_eval_loaders(dev_feats, collator, args.batch_size * 4) if is_main else {}

    cfg = ModelConfig(model_name=args.model_name, model_revision=args.model_revision, num_topics=len(topic2id),
                      num_langs=len(langs), head_dropout=args.head_dropout, reinit_layers=args.reinit_layers,
                      adv_lambda=args.adv_lambda, init_checkpoint=args.init_checkpoint)
    model = MultiTaskEncoder(cfg).to(device)
    if args.freeze_unseen_embeddings:
        model.restrict_embedding_updates(tok for f in train_feats for tok in f["input_ids"])
    if args.probe_every > 0:
        model.enable_feature_tap(-1)

    sent_w = class_weights([f["sent_label"] for f in train_feats], cfg.num_sentiment).to(device)
    criteria = {
        "sentiment": nn.CrossEntropyLoss(weight=sent_w, ignore_index=-100, label_smoothing=args.label_smoothing),  # ok: MLS309
        "topic": nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=args.label_smoothing),
    }

    optimizer = DecoupledAdamW(build_param_groups(model, args.lr, args.weight_decay, args.layer_decay),
                               lr=args.lr, weight_decay=args.weight_decay)
    guard_stats = None
    if args.skip_spike_factor > 0:
        guard_stats = install_step_guard(optimizer, model.parameters(), factor=args.skip_spike_factor)
    steps_per_epoch = math.ceil(len(train_loader) / args.grad_accum)
    total_steps = steps_per_epoch * args.epochs
    scheduler = build_scheduler(optimizer, int(args.warmup_ratio * total_steps), total_steps, args.schedule)
    ema = ModelEMA(model, decay=args.ema_decay) if args.ema_decay > 0 else None
    spike_monitor = LossSpikeMonitor(scheduler, lr_factor=args.spike_lr_factor)
    master = BF16MasterWeights(model) if (args.bf16 and args.bf16_master_weights) else None

    ddp_model: nn.Module = model
    if world_size > 1:
        ddp_model = DDP(model, device_ids=[device.index], find_unused_parameters=True)
        if args.comm_hook == "bf16":
            ddp_model.register_comm_hook(None, bf16_compress_hook)

    global_step, start_epoch, best = 0, 0, -1.0
    if args.resume:
        global_step, start_epoch, best = load_latest(args.output_dir, ddp_model, optimizer, scheduler, ema, device)

    amp = torch.autocast("cuda", dtype=torch.bfloat16) if (args.bf16 and device.type == "cuda") else nullcontext()
    logger.info("world=%d steps/epoch=%d total_steps=%d", world_size, steps_per_epoch, total_steps)

    t0 = time.time()
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        ddp_model.train()
        running: Dict[str, float] = {}
        for micro, batch in enumerate(train_loader, 1):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            sync = micro % args.grad_accum == 0
            ctx = ddp_model.no_sync() if (world_size > 1 and not sync) else nullcontext()
            lam = None
            if args.mixup_alpha > 0:
                lam = float(torch.distributions.Beta(args.mixup_alpha, args.mixup_alpha).sample())
                lam = max(lam, 1.0 - lam)
            with ctx:
                with amp:
                    out = ddp_model(batch["input_ids"], batch["attention_mask"])
                    loss, parts = compute_loss(model, out, batch, criteria, lam, args.adv_lambda)
                (loss / args.grad_accum).backward()
            for k, v in parts.items():
                running[k] = running.get(k, 0.0) + v
            if not sync:
                continue

            if args.grad_noise_eta > 0:
                add_gradient_noise(model.parameters(), global_step, args.grad_noise_eta)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if master is not None:
                master.on_step_end()
            if ema is not None:
                ema.update()
            global_step += 1
            spike_monitor(global_step, loss.item())

            if is_main and global_step % args.log_every == 0:
                lr = optimizer.param_groups[-1]["lr"]
                msg = " ".join(f"{k}={v / args.log_every:.4f}" for k, v in sorted(running.items()))
                skipped = guard_stats["skipped"] if guard_stats else 0
                logger.info("ep %d step %d %s gnorm=%.3f lr=%.2e skipped=%d %.1fs", epoch, global_step, msg,
                            float(grad_norm), lr, skipped, time.time() - t0)
                running = {}
            if is_main and args.probe_every > 0 and global_step % args.probe_every == 0:
                tapped = model.pop_tapped()
                if tapped is not None and tapped.shape[0] > 1:
                    spread = torch.pdist(F.normalize(tapped.float().mean(1), dim=-1)).mean().item()
                    logger.info("probe: mean pairwise cosine distance of last-layer features %.4f", spread)

            if global_step % args.eval_every == 0 or global_step == total_steps:
                if is_main:
                    if ema is not None:
                        ema.swap_in()
                    metrics = evaluate_all(model, dev_loaders, {"sentiment": cfg.num_sentiment,
                                                                "topic": cfg.num_topics}, device, args.bf16)
                    if ema is not None:
                        ema.swap_out()
                    logger.info("eval step %d\n%s", global_step, format_report(metrics))
                    score = metrics.get("avg_macro_f1", 0.0)
                    with open(os.path.join(args.output_dir, "eval_log.jsonl"), "a") as fh:
                        fh.write(json.dumps({"step": global_step, **metrics}) + "\n")
                    ckpt = os.path.join(args.output_dir, f"step-{global_step:07d}.pt")
                    save_checkpoint(ckpt, ddp_model, optimizer, scheduler, ema, global_step, epoch, best, cfg, topic2id)
                    if score > best:
                        best = score
                        save_checkpoint(os.path.join(args.output_dir, "best.pt"), ddp_model, optimizer, scheduler,
                                        ema, global_step, epoch, best, cfg, topic2id)
                        logger.info("new best avg macro-F1 %.4f", best)
                    prune_checkpoints(args.output_dir, args.keep_checkpoints)
                ddp_model.train()
                if world_size > 1:
                    dist.barrier()

    logger.info("done: best avg macro-F1 %.4f, %d loss spikes", best, spike_monitor.spikes)
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
