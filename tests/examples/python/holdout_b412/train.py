# ruff: noqa
# Hold-out batch 412 (family-focused 2/6, CLIP-style dual-encoder fine-tuning). Measured once in session 16 (round 112): 5/30 (17%) at medium+.
"""Fine-tune a CLIP-style dual encoder for retrieval / zero-shot classification: InfoNCE with global
in-batch negatives and a learnable temperature, layer-wise lr decay, LiT-style partial freezing,
gradient accumulation, EMA and periodic zero-shot / retrieval evaluation.

    torchrun --nproc_per_node 8 train.py --task pairs --train-data cc3m_train.tsv \
        --image-root /data/cc3m --pretrained ViT-B-16.pt --output-dir runs/cc3m_b16
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import random
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from data import (CaptionTokenizer, ClassBalancedSampler, ClassCaptionDataset, CocoCaptions, ImageTextPairs,
                  build_transform, collate_classes, collate_pairs, cutmix, mixup)
from dist_utils import (DistInfo, all_reduce_mean, barrier, cleanup_distributed, gather_features,
                        init_distributed, setup_logging, unwrap, wrap_ddp)
from evaluate import IMAGENET_TEMPLATES, RetrievalSet, run_evaluation
from model import build_model
from optim import (ModelEma, WarmupCosine, build_param_groups, install_decoupled_weight_decay,
                   restore_optimizer_state)

logger = logging.getLogger("train")


def parse_args():
    p = argparse.ArgumentParser("CLIP fine-tuning")
    g = p.add_argument_group("data")
    g.add_argument("--task", choices=("pairs", "coco", "classes"), default="pairs")
    g.add_argument("--train-data", required=True, help="manifest (pairs), annotation json (coco) or ImageFolder root")
    g.add_argument("--image-root", default="")
    g.add_argument("--classnames", default=None, help="json mapping folder name -> readable class name")
    g.add_argument("--val-pct", type=int, default=2)
    g.add_argument("--image-size", type=int, default=224)
    g.add_argument("--flip-p", type=float, default=0.5)
    g.add_argument("--color-jitter", type=float, default=0.4)
    g.add_argument("--stochastic-smoothing", type=float, default=0.1)
    g.add_argument("--watermark-classes", default="17,58", help="classes whose source images carry a corner logo")
    g.add_argument("--balanced", action="store_true")
    g.add_argument("--mixup", type=float, default=0.2)
    g.add_argument("--cutmix", type=float, default=1.0)
    g.add_argument("--mix-prob", type=float, default=0.5)
    g.add_argument("--zs-data", default=None)
    g.add_argument("--zs-classnames", default=None)
    g.add_argument("--retrieval-ann", default=None)
    g.add_argument("--workers", type=int, default=8)

    g = p.add_argument_group("model")
    g.add_argument("--model", default="ViT-B-16")
    g.add_argument("--pretrained", default=None)
    g.add_argument("--tokenizer", default="openai/clip-vit-base-patch16")
    g.add_argument("--tokenizer-revision", default="57c216476eefef5ab752ec549e440a49ae4ae5f3")
    g.add_argument("--embed-dim", type=int, default=256)
    g.add_argument("--lock-image", action="store_true")
    g.add_argument("--lock-image-unlocked-groups", type=int, default=0)
    g.add_argument("--lock-text", action="store_true")
    g.add_argument("--lock-text-unlocked-layers", type=int, default=0)
    g.add_argument("--no-feature-stats", dest="feature_stats", action="store_false")
    g.add_argument("--proj-grad-noise", type=float, default=0.05)

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=128, help="per GPU, per micro-step")
    g.add_argument("--accum-steps", type=int, default=4)
    g.add_argument("--lr", type=float, default=1e-5)
    g.add_argument("--wd", type=float, default=0.1)
    g.add_argument("--layer-decay", type=float, default=0.75)
    g.add_argument("--text-layer-decay", type=float, default=0.75)
    g.add_argument("--eps", type=float, default=1e-6)
    g.add_argument("--warmup", type=int, default=500)
    g.add_argument("--clip-grad", type=float, default=1.0)
    g.add_argument("--temp-lr", type=float, default=1e-3)
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--ema-decay", type=float, default=0.9998)
    g.add_argument("--precision", choices=("amp", "bf16", "fp32"), default="amp")
    g.add_argument("--grad-compression", choices=("none", "bf16"), default="bf16")

    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default="runs/clip_ft")
    g.add_argument("--resume", default=None)
    g.add_argument("--eval-every", type=int, default=1)
    g.add_argument("--log-every", type=int, default=50)
    g.add_argument("--keep-last", type=int, default=3)
    g.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def build_train_loader(args, info: DistInfo, tokenizer):
    transform = build_transform(args.image_size, train=True, jitter=args.color_jitter)
    kw = dict(flip_p=args.flip_p)
    if args.task == "pairs":
        ds = ImageTextPairs(args.train_data, args.image_root, transform, tokenizer, split="train",
                            val_pct=args.val_pct, **kw)
        collate = collate_pairs
    elif args.task == "coco":
        ds = CocoCaptions(args.train_data, args.image_root, transform, tokenizer, **kw)
        collate = collate_pairs
    else:
        wm = [int(c) for c in args.watermark_classes.split(",") if c.strip()]
        ds = ClassCaptionDataset(args.train_data, args.classnames, IMAGENET_TEMPLATES, transform, tokenizer,
                                 stochastic_smoothing=args.stochastic_smoothing, watermark_classes=wm, **kw)
        collate = collate_classes

    if args.task == "classes" and args.balanced:
        sampler = ClassBalancedSampler(ds.labels, num_replicas=info.world_size,
                                       rank=info.rank, seed=args.seed)
    else:
        sampler = DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                     seed=args.seed, drop_last=True)
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, drop_last=True, collate_fn=collate,
                        num_workers=args.workers, pin_memory=True, persistent_workers=args.workers > 0)
    return loader, sampler


def _collate_eval(batch):
    return {"images": torch.stack([b["image"] for b in batch]),
            "labels": torch.tensor([b["label"] for b in batch], dtype=torch.long)}


def build_eval(args, tokenizer):
    zs_loader = zs_names = retrieval = None
    tf = build_transform(args.image_size, train=False)
    if args.zs_data and args.zs_classnames:
        ds = ClassCaptionDataset(args.zs_data, args.zs_classnames, ["{}"], tf, tokenizer)
        with open(args.zs_classnames, encoding="utf-8") as f:
            pretty = json.load(f)
        zs_names = [pretty[c] for c in ds.classes]
        zs_loader = DataLoader(ds, batch_size=256, num_workers=args.workers, collate_fn=_collate_eval)
    if args.retrieval_ann:
        retrieval = RetrievalSet(args.retrieval_ann, args.image_root, tf, tokenizer)
    return zs_loader, zs_names, retrieval


def label_aware_targets(labels: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Soft i2t targets that treat captions of the same class as positives (no false negatives)."""
    all_labels = labels
    if info.distributed:
        buf = [torch.empty_like(labels) for _ in range(info.world_size)]
        dist.all_gather(buf, labels)
        all_labels = torch.cat(buf)
    t = (labels[:, None] == all_labels[None, :]).float()
    return t / t.sum(dim=1, keepdim=True)


def contrastive_loss(img, txt, scale, info: DistInfo, soft_targets=None, label_smoothing=0.0):
    all_img, all_txt = gather_features(img, txt)
    hard = torch.arange(img.size(0), device=img.device) + info.rank * img.size(0)
    logits_i2t = scale * img @ all_txt.T
    logits_t2i = scale * txt @ all_img.T
    if soft_targets is None:
        loss_i = F.cross_entropy(logits_i2t, hard, label_smoothing=label_smoothing)  # ok: MLS309
    else:
        loss_i = -(soft_targets * logits_i2t.float().log_softmax(dim=-1)).sum(dim=-1).mean()
    loss_t = F.cross_entropy(logits_t2i, hard, label_smoothing=label_smoothing)
    return 0.5 * (loss_i + loss_t)


def update_temperature(model, lr: float, grad_scale: float) -> None:
    """Plain SGD step on the (scalar) logit scale, kept out of Adam so its lr can be set on its own."""
    p = unwrap(model).logit_scale
    if p.grad is None:
        return
    g = p.grad.float() / grad_scale
    if torch.isfinite(g):
        with torch.no_grad():
            p.add_(g, alpha=lr)  # todoruleid: family 2 (missed)
    p.grad = None


def save_checkpoint(path, model, optimizer, scaler, ema, epoch, step, args, keep_last):
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "epoch": epoch,
        "step": step,
        "args": vars(args),
    }
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    ckpts = sorted(glob.glob(os.path.join(os.path.dirname(path), "epoch_*.pt")), key=os.path.getmtime)
    for old in ckpts[:-keep_last]:
        os.remove(old)


def main():
    args = parse_args()
    info = init_distributed()
    setup_logging(info, os.path.join(args.output_dir, "train.log"))
    random.seed(args.seed + info.rank)
    np.random.seed(args.seed + info.rank)
    torch.manual_seed(args.seed + info.rank)
    device = info.device

    tokenizer = CaptionTokenizer(args.tokenizer, revision=args.tokenizer_revision)
    model = build_model(args.model, args.pretrained, embed_dim=args.embed_dim, image_size=args.image_size)
    if args.lock_image:
        model.lock_image_tower(args.lock_image_unlocked_groups)
    if args.lock_text:
        model.lock_text_tower(args.lock_text_unlocked_layers)
    if args.feature_stats:
        model.enable_feature_stats()
    if args.proj_grad_noise > 0:
        model.add_projection_grad_noise(args.proj_grad_noise)
    model.to(device)

    groups = build_param_groups(model, args.wd, args.layer_decay, args.text_layer_decay)
    trainable = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.Adam(groups, lr=args.lr, betas=(0.9, 0.98),
                                 eps=args.eps, fused=device.type == "cuda")
    install_decoupled_weight_decay(optimizer)
    if args.precision == "amp":
        # fp16 gradients: keep eps far enough from the fp16 subnormal range
        for grp in optimizer.param_groups:
            grp["eps"] = max(grp["eps"], 1e-3)  # todoruleid: family 2 (missed)
    scaler = torch.cuda.amp.GradScaler(enabled=args.precision == "amp")
    amp_dtype = {"amp": torch.float16, "bf16": torch.bfloat16, "fp32": None}[args.precision]
    ema = ModelEma(model, args.ema_decay) if args.ema_decay > 0 else None

    start_epoch, step = 0, 0
    if args.resume:
        ckpt = torch.load(args.resume, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        if args.embed_dim:
            model.reset_projection_heads()  # todoruleid: family 2 (missed)
        restore_optimizer_state(optimizer, ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        start_epoch, step = ckpt["epoch"] + 1, ckpt["step"]
        logger.info("resumed from %s at epoch %d / step %d", args.resume, start_epoch, step)

    model = wrap_ddp(model, info, compress_grads=args.grad_compression == "bf16")
    loader, sampler = build_train_loader(args, info, tokenizer)
    zs_loader, zs_names, retrieval = build_eval(args, tokenizer) if info.is_main else (None, None, None)

    steps_per_epoch = len(loader) // args.accum_steps
    scheduler = WarmupCosine(optimizer, args.lr, args.warmup, steps_per_epoch * args.epochs)
    scheduler.step(step)
    os.makedirs(args.output_dir, exist_ok=True)
    metrics_path = os.path.join(args.output_dir, "metrics.jsonl")
    logger.info("%d optimiser steps/epoch", steps_per_epoch)

    for epoch in range(start_epoch, args.epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        t0 = time.time()
        running = 0.0
        for i, batch in enumerate(loader):
            is_boundary = (i + 1) % args.accum_steps == 0
            images = batch["images"].to(device, non_blocking=True)
            ids = batch["input_ids"].to(device, non_blocking=True)
            eot = batch["eot_index"].to(device, non_blocking=True)
            targets = None
            if args.task == "classes":
                targets = label_aware_targets(batch["labels"].to(device, non_blocking=True), info)
                if args.mix_prob > 0 and random.random() < args.mix_prob:
                    if args.cutmix > 0 and random.random() < 0.5:
                        images, targets = cutmix(images, targets, args.cutmix)
                    elif args.mixup > 0:
                        images, targets = mixup(images, targets, args.mixup)

            sync = model.no_sync() if info.distributed and not is_boundary else nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    img_f, txt_f, scale = model(images, ids, eot)
                    loss = contrastive_loss(img_f, txt_f, scale, info, targets, args.label_smoothing)
                scaler.scale(loss / args.accum_steps).backward()
            running += loss.detach().item() / args.accum_steps
            if not is_boundary:
                continue

            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
            update_temperature(model, args.temp_lr * scheduler.lr_at(step) / args.lr,
                               scaler.get_scale() if scaler.is_enabled() else 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            unwrap(model).clamp_logit_scale()
            if ema is not None:
                ema.update(unwrap(model), step)
            step += 1
            lr = scheduler.step(step)

            if step % args.log_every == 0:
                loss_avg = all_reduce_mean(torch.tensor(running / args.log_every, device=device)).item()
                running = 0.0
                seen = args.log_every * args.accum_steps * args.batch_size * info.world_size
                rec = {"step": step, "epoch": epoch, "loss": loss_avg, "lr": lr, "grad_norm": float(grad_norm),
                       "logit_scale": unwrap(model).logit_scale.exp().item(),
                       "imgs_per_sec": seen / max(time.time() - t0, 1e-6)}
                if args.feature_stats:
                    rec.update(unwrap(model).pop_feature_stats())
                t0 = time.time()
                if info.is_main:
                    logger.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")

        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            if info.is_main:
                core = unwrap(model)
                if ema is not None:
                    ema.swap_in(core)
                results = run_evaluation(core, tokenizer, device, zs_loader, zs_names, retrieval)
                if ema is not None:
                    ema.swap_out(core)
                results.update({"epoch": epoch, "step": step})
                logger.info("eval: %s", json.dumps(results))
                with open(metrics_path, "a") as f:
                    f.write(json.dumps({"eval": results}) + "\n")
                save_checkpoint(os.path.join(args.output_dir, f"epoch_{epoch:03d}.pt"), model, optimizer,
                                scaler, ema, epoch, step, args, args.keep_last)
            barrier()

    cleanup_distributed()


if __name__ == "__main__":
    main()
