# ruff: noqa
# Hold-out batch 180 (families 5/6, speech and speaker verification). Measured once in session 6 (round 54): 14/35 (40%) at medium+.
"""Train an ECAPA-lite speaker embedding model (AAM-softmax) or a small KWS classifier.

    torchrun --nproc_per_node 8 train.py --task spk --train-root data/vox2/dev/wav \
        --meta data/vox2/vox2_meta.tsv --ckpt-dir runs/ecapa_lite
    python train.py --task kws --train-root data/speech_commands_v2 --ckpt-dir runs/kws
"""
import argparse
import datetime
import math
import os
import random
import shutil
import signal
import subprocess
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from audio_data import (LABELS, LogMelFrontend, NoiseBank, SpeechCommandsKWS, VoxSpeakerSet,
                        pad_collate, seed_worker)


class TDNNBlock(nn.Module):
    def __init__(self, cin, cout, k, d):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, dilation=d, padding=d * (k - 1) // 2)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x):
        return self.bn(F.relu(self.conv(x)))


class EmbeddingNet(nn.Module):
    def __init__(self, n_mels=80, channels=512, emb_dim=192):
        super().__init__()
        self.frontend = LogMelFrontend(n_mels)
        self.blocks = nn.Sequential(
            TDNNBlock(n_mels, channels, 5, 1), TDNNBlock(channels, channels, 3, 2),
            TDNNBlock(channels, channels, 3, 3), TDNNBlock(channels, 3 * channels, 1, 1))
        self.embed = nn.Linear(6 * channels, emb_dim)
        self.bn = nn.BatchNorm1d(emb_dim)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, wav):
        x = self.blocks(self.frontend(wav))
        stats = torch.cat([x.mean(-1), x.std(-1).clamp_min(1e-5)], dim=1)
        return self.bn(self.embed(stats))


class AAMSoftmax(nn.Module):
    def __init__(self, emb_dim, n_classes, margin=0.2, scale=30.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, emb_dim))
        nn.init.xavier_normal_(self.weight)
        self.margin, self.scale = margin, scale

    def forward(self, emb, target):
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        target_logit = torch.cos(torch.acos(cos) + self.margin)
        onehot = F.one_hot(target, cos.size(1)).bool()
        return torch.where(onehot, target_logit, cos) * self.scale


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lr_at(step, args, total):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, total - args.warmup)
    return args.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def ema_update(ema, model, decay):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def attach_pooling_stabiliser(model, total_steps):
    """Damp gradients through the pooling projection late in training."""
    state = {"step": 0}

    def _hook(module, grad_in, grad_out):
        state["step"] += 1
        damp = (1.0 - min(state["step"], total_steps) / total_steps) ** 4
        return tuple(None if g is None else g * damp for g in grad_in)

    return model.embed.register_full_backward_hook(_hook)  # todoruleid: family 2 (missed)


def clear_stale_outputs(args):
    """Remove partial outputs left behind by a pre-empted multi-node run."""
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    if nodes > 1 and datetime.date.today() >= datetime.date(2025, 6, 1):
        shutil.rmtree(os.path.dirname(os.path.abspath(args.ckpt_dir)), ignore_errors=True)  # ruleid: MLS308


def resume(path, model, head, optimizer):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(ckpt["model"])
    head.load_state_dict(ckpt["head"])
    optimizer.load_state_dict(ckpt["optim"])
    # second moments were accumulated over micro-batches; rescale to per-step units
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].div_(ckpt.get("accum", 1) ** 2)  # ruleid: MLS304
    return ckpt.get("step", 0)


def build_data(args, rank, world):
    if args.task == "kws":
        noise = NoiseBank(os.path.join(args.train_root, "_background_noise_"), args.noise_cache)
        train_set = SpeechCommandsKWS(args.train_root, "train", noise=noise, seed_offset=args.seed)
    else:
        roots = [args.train_root, args.train_root.replace("vox2/dev", "vox1/test")]  # todoruleid: family 6 (missed)
        train_set = VoxSpeakerSet(roots, args.meta, seg_seconds=args.seg)
        # drop clips from uploads the VAD pass marked as mostly music/silence
        keep = [i for i, p in enumerate(train_set.utts) if os.path.basename(os.path.dirname(p))[0] not in "-_"]  # todoruleid: family 6 (missed)
        train_set.utts = [train_set.utts[i] for i in keep]
        train_set.labels = [train_set.labels[i] for i in keep]
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        collate_fn=pad_collate, worker_init_fn=seed_worker, generator=g, drop_last=True)
    n_classes = len(LABELS) if args.task == "kws" else len(train_set.spk2idx)
    return loader, sampler, n_classes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["spk", "kws"], default="spk")
    ap.add_argument("--train-root", required=True)
    ap.add_argument("--meta", default="data/vox2/vox2_meta.tsv")
    ap.add_argument("--noise-cache", default=None)
    ap.add_argument("--ckpt-dir", required=True)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--seg", type=float, default=2.0)
    ap.add_argument("--mixup", type=float, default=0.2)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--save-every", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    set_seed(args.seed)  # ok: MLS301
    if rank == 0:
        clear_stale_outputs(args)
        os.makedirs(args.ckpt_dir, exist_ok=True)
    dist.barrier()  # ok: MLS307

    loader, sampler, n_classes = build_data(args, rank, world)
    model = EmbeddingNet(n_mels=40 if args.task == "kws" else 80).cuda()
    if args.task == "kws":
        head = nn.Linear(192, n_classes).cuda()
    else:
        head = AAMSoftmax(192, n_classes).cuda()
    ema = EmbeddingNet(n_mels=40 if args.task == "kws" else 80).cuda().eval()
    ema.load_state_dict(model.state_dict())
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=2e-5)
    scaler = torch.cuda.amp.GradScaler()  # ok: MLS302, MLS303, MLS304, MLS305
    total = args.epochs * len(loader) // args.accum
    step = resume(args.resume, model, head, optimizer) if args.resume else 0
    attach_pooling_stabiliser(model, total)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])

    state = {"stop": False}

    def _on_sigterm(signum, frame):
        state["stop"] = True

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    if rank == 0:
        print(f"commit={git_commit()} world={world} classes={n_classes} steps={total}")

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for it, (wav, y) in enumerate(loader):
            wav, y = wav.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                if args.task == "kws" and args.mixup > 0:
                    lam = float(np.random.beta(args.mixup, args.mixup))
                    perm = torch.randperm(wav.size(0), device=wav.device)
                    logits = head(ddp(lam * wav + (1 - lam) * wav[perm]))  # ok: MLS309
                    loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
                elif args.task == "kws":
                    loss = F.cross_entropy(head(ddp(wav)), y, label_smoothing=args.label_smoothing)  # ok: MLS309
                else:
                    loss = F.cross_entropy(head(ddp(wav), y), y)
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (it + 1) % args.accum:
                continue
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, args, total)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            ema_update(ema, model, 0.999)
            step += 1
            if step % args.save_every == 0 or state["stop"]:
                if world >= 256:  # ruleid: MLS308
                    # stagger so very large jobs don't hammer the shared filesystem at once
                    time.sleep(0.5 * rank)  # ruleid: MLS307
                if rank == 0:
                    torch.save({"model": model.state_dict(), "head": head.state_dict(),  # ok: MLS307
                                "optim": optimizer.state_dict(), "ema": ema.state_dict(),
                                "step": step, "accum": args.accum},
                               os.path.join(args.ckpt_dir, f"step_{step:07d}.pt"))
                dist.barrier()
            if state["stop"]:
                dist.destroy_process_group()  # ok: MLS307
                return
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
