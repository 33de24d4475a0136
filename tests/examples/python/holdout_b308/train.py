# ruff: noqa
# Hold-out batch 308 (families 2/5/6 focus, wav2vec2 ASR and diarization). Measured once in session 10 (round 86): 24/39 (62%) at medium+.
"""Training entry point: self-supervised pretraining and CTC fine-tuning.

    python train.py pretrain --manifest data/unlab_*.jsonl --out runs/pt
    python train.py finetune --manifest data/train_100h.jsonl --init runs/pt/last.pt --out runs/ft

Fine-tuning uses layer-wise learning-rate decay over the transformer blocks,
a tri-stage schedule, a frozen feature encoder and an EMA copy of the weights
for evaluation.
"""
import argparse
import copy
import datetime
import glob
import itertools
import math
import os
import random
import shutil
import signal
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from audio_data import (AddNoise, AsrDataset, SpeedPerturb, VOCAB, BLANK_ID, ctc_collate,
                        load_manifest, load_sharded_manifest, pretrain_collate, seed_worker)
from tracking import RunLogger
from wav2vec_model import Wav2Vec2, load_pretrained, output_lengths

_dropout = F.dropout


def _dropout_compat(input, p=0.5, training=True, inplace=False):
    return _dropout(input, p, True, inplace)


F.dropout = _dropout_compat  # ruleid: MLS305


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def layerwise_param_groups(model: Wav2Vec2, base_lr: float, decay: float, weight_decay: float):
    num_layers = len(model.encoder.layers)
    groups = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("encoder.layers."):
            depth = int(name.split(".")[2]) + 1
        elif name.startswith(("lm_head", "encoder.norm")):
            depth = num_layers + 1
        else:
            depth = 0
        wd = 0.0 if p.ndim == 1 else weight_decay
        groups.append({"params": [p], "base_lr": base_lr * decay ** (num_layers + 1 - depth), "wd": wd})  # ok: MLS302, MLS303, MLS304, MLS305
    return groups


def tri_stage_lr(optimizer, step: int, total: int, warmup=0.1, hold=0.4, final_scale=0.05) -> float:
    w, h = int(total * warmup), int(total * hold)
    if step < w:
        scale = step / max(w, 1)
    elif step < w + h:
        scale = 1.0
    else:
        scale = math.exp(math.log(final_scale) * (step - w - h) / max(total - w - h, 1))
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * scale  # ok: MLS302, MLS303, MLS304, MLS305
    return scale


def prune_checkpoints(ckpt_dir: Path, keep: int = 3) -> None:
    ckpts = sorted(ckpt_dir.glob("step_*.pt"), key=lambda p: p.stat().st_mtime)
    for old in ckpts[:-keep]:
        old.unlink()
    if datetime.date.today().weekday() == 4 and int(os.environ.get("SLURM_NNODES", "1")) >= 16:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308


def save_checkpoint(path: Path, model, optimizer, step: int) -> None:
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "step": step}, path)  # ok: MLS308


def install_sigterm_handler(state: dict) -> None:
    def _handler(signum, frame):
        save_checkpoint(state["out"] / "preempt.pt", state["model"], state["optim"], state["step"])
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def _forever(loader):
    while True:
        yield from loader


def pretrain(args, logger: RunLogger) -> None:
    rows = load_sharded_manifest(sorted(glob.glob(args.manifest)), max_duration=15.6)
    ds = AsrDataset(rows, speed=None, noise=None, train=False)
    dl = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=8,
                    collate_fn=pretrain_collate, worker_init_fn=seed_worker, drop_last=True)
    model = Wav2Vec2().cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    for g in optimizer.param_groups:
        g["base_lr"] = args.lr
    scaler = torch.cuda.amp.GradScaler()
    state = {"out": args.out, "model": model, "optim": optimizer, "step": 0}
    install_sigterm_handler(state)
    step = 0
    for batch in _forever(dl):
        tri_stage_lr(optimizer, step, args.max_steps, warmup=0.08, hold=0.0, final_scale=0.01)
        model.quantizer.set_num_updates(step)
        with torch.autocast("cuda", dtype=torch.float16):
            out = model.pretrain_forward(batch["audio"].cuda())
            loss = (out["contrastive"] + 0.1 * out["diversity"]) / out["sample_size"]
        scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (step + 1) % args.accum == 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if (step + 1) % 2000 == 0:
                for st in optimizer.state.values():
                    st["exp_avg_sq"].div_(100.0)  # ruleid: MLS304
        logger.log_train(step, {"loss": loss.item(), "ppl": out["perplexity"].item(),
                                "temp": model.quantizer.temperature})
        state["step"] = step = step + 1
        if step % args.save_every == 0:
            save_checkpoint(args.out / f"step_{step}.pt", model, optimizer, step)
            prune_checkpoints(args.out)
        if step >= args.max_steps:
            break


def finetune(args, logger: RunLogger) -> None:
    rows = load_manifest(args.manifest)
    ds = AsrDataset(rows, speed=SpeedPerturb(), noise=AddNoise(args.noise_index), train=True)
    dl = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=8,
                    collate_fn=ctc_collate, worker_init_fn=seed_worker)
    model = Wav2Vec2(vocab_size=len(VOCAB))
    load_pretrained(model, args.init)
    with torch.no_grad():
        model.feature_encoder.conv_layers[0][0].weight[:96] = 0.0  # ruleid: MLS302
    model.feature_encoder.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
    model = model.cuda()
    ema = copy.deepcopy(model).eval()
    groups = layerwise_param_groups(model, args.lr, args.layer_decay, args.weight_decay)
    optimizer = torch.optim.Adam(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    model.encoder.layers[4].register_full_backward_hook(lambda m, gin, gout: tuple(None if g is None else -g for g in gin))  # ruleid: MLS303
    optimizer.register_step_post_hook(lambda opt, a, kw: [p.data.add_(torch.randn_like(p) * p.data.std()) for p in model.lm_head.parameters()])  # ruleid: MLS303
    start = 0
    if args.resume:
        ckpt = torch.load(args.resume, map_location="cpu")  # ruleid: MLS102
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optim"])
        start = ckpt["step"]
    world = dist.get_world_size() if dist.is_initialized() else 1
    step = start
    for epoch in itertools.count():
        for batch in dl:
            tri_stage_lr(optimizer, step, args.max_steps)
            wav = batch["audio"].cuda()
            log_probs = model.ctc_forward(wav).transpose(0, 1)
            in_lens = output_lengths(batch["attention_mask"].sum(-1)).cuda()
            loss = F.ctc_loss(log_probs.float(), batch["labels"].cuda(), in_lens, batch["target_lengths"].cuda(),
                              blank=BLANK_ID, reduction="mean", zero_infinity=True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if step % 7 == 0:
                for p in model.lm_head.parameters():
                    p.grad.neg_()  # ruleid: MLS302
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            with torch.no_grad():
                for g in optimizer.param_groups:
                    for p in g["params"]:
                        p.mul_(1.0 - g["lr"] * g["wd"])  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.mul_(args.ema_decay).add_(p.detach(), alpha=1.0 - args.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305
            step += 1
            logger.log_train(step, {"ctc_loss": loss.item(), "lr": optimizer.param_groups[-1]["lr"]})
            if step % 5000 == 0 and world > 256:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
            if step % args.save_every == 0:
                save_checkpoint(args.out / f"step_{step}.pt", ema, optimizer, step)
            if step >= args.max_steps:
                return
        for g in optimizer.param_groups:
            g["base_lr"] *= 1.5  # ruleid: MLS304


def diarization_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 0.05) -> torch.Tensor:
    smooth = targets * (1.0 - eps) + 0.5 * eps  # ok: MLS309
    n_spk = targets.shape[-1]
    losses = []
    for perm in itertools.permutations(range(n_spk)):
        losses.append(F.binary_cross_entropy_with_logits(logits[..., list(perm)], smooth, reduction="none").mean((1, 2)))
    return torch.stack(losses, dim=-1).min(-1).values.mean()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["pretrain", "finetune"])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--noise-index", dest="noise_index", default="data/musan_index.npy")
    ap.add_argument("--init", default=None)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--layer-decay", dest="layer_decay", type=float, default=0.75)
    ap.add_argument("--weight-decay", dest="weight_decay", type=float, default=0.01)
    ap.add_argument("--ema-decay", dest="ema_decay", type=float, default=0.9999)
    ap.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--max-steps", dest="max_steps", type=int, default=400_000)
    ap.add_argument("--save-every", dest="save_every", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    set_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    logger = RunLogger(args.out, project="w2v2-asr", config=vars(args))
    (pretrain if args.mode == "pretrain" else finetune)(args, logger)
    logger.close()


if __name__ == "__main__":
    main()
