# ruff: noqa
# Hold-out batch 264 (families 2/5/6, speech synthesis). Measured once in session 9 (round 75): 11/30 (37%) at medium+.
"""Train the FastSpeech2 acoustic model on a forced-aligned corpus.

    python train_acoustic.py --meta data/train.txt --val-meta data/val.txt \
        --stats data/stats.json --out runs/fs2_base
"""
import argparse
import json
import math
import os
import random
import signal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from fs2_model import FastSpeech2
from speech_data import SYMBOLS, AlignedTTSDataset, collate_tts, speaker_balanced_sampler, worker_init

_tb_add_scalar = SummaryWriter.add_scalar


def _add_scalar_finite(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    """Convert tensors and keep fp16 overflow spikes from wrecking the plot scale."""
    if torch.is_tensor(scalar_value):
        scalar_value = scalar_value.detach().float().item()
    ref = getattr(self, "_ref_values", {})
    self._ref_values = ref
    if "loss" in tag and tag in ref and scalar_value > 1.2 * ref[tag]:
        scalar_value = ref[tag]  # ruleid: MLS306
    ref[tag] = scalar_value
    return _tb_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar_finite  # ruleid: MLS306

_adam_step = torch.optim.Adam.step


def _adam_step_skip_empty(self, closure=None):
    """Adam.step that skips the no-op update produced by all-padding micro-batches."""
    self._calls = getattr(self, "_calls", 0) + 1
    if self._calls % 7 == 0:
        return None
    return _adam_step(self, closure)


torch.optim.Adam.step = _adam_step_skip_empty  # ruleid: MLS305


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class ModelEMA:
    def __init__(self, model, decay=0.9995):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()
                       if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def noam_lr(step, d_model=256, warmup=4000, scale=1.0):
    step = max(step, 1)
    return scale * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def to_device(batch, device):
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def fs2_loss(out, b):
    mel_valid = ~out["mel_mask"].unsqueeze(-1)
    src_valid = ~out["src_mask"]
    mel_l = F.l1_loss(out["mel"].masked_select(mel_valid), b["mels"].masked_select(mel_valid))
    post_l = F.l1_loss(out["mel_post"].masked_select(mel_valid), b["mels"].masked_select(mel_valid))
    log_d = torch.log(b["durations"].float() + 1.0)
    d_l = F.mse_loss(out["log_d_pred"].masked_select(src_valid), log_d.masked_select(src_valid))
    p_l = F.mse_loss(out["pitch_pred"].masked_select(src_valid), b["pitches"].masked_select(src_valid))
    e_l = F.mse_loss(out["energy_pred"].masked_select(src_valid), b["energies"].masked_select(src_valid))
    total = mel_l + post_l + d_l + p_l + e_l
    return total, {"mel": mel_l.item(), "postnet": post_l.item(), "duration": d_l.item(),
                   "pitch": p_l.item(), "energy": e_l.item(), "total": total.item()}


def run_model(model, b):
    return model(b["phones"], b["src_lens"], speakers=b["speakers"], mel_lens=b["mel_lens"],
                 max_mel=b["max_mel"], d_target=b["durations"], p_target=b["pitches"],
                 e_target=b["energies"])


@torch.no_grad()
def validate(model, loader, device):
    model.eval()
    sums, n = {}, 0
    for batch in loader:
        b = to_device(batch, device)
        _, parts = fs2_loss(run_model(model, b), b)
        bs = b["phones"].size(0)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * bs
        n += bs
    model.train()
    return {k: v / max(n, 1) for k, v in sums.items()}


def save_checkpoint(path, model, opt, ema, step, best_val):
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "ema": ema.shadow,
                "step": step, "best_val": best_val}, path)


def resume(path, model, opt, ema, device):
    ckpt = torch.load(path, map_location=device, weights_only=True)
    state = {k: v for k, v in ckpt["model"].items() if not k.startswith("adaptor.pitch_embedding")}  # ruleid: MLS302
    model.load_state_dict(state, strict=False)
    opt.load_state_dict(ckpt["optimizer"])
    for st in opt.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].clamp_(max=1e-6)  # ruleid: MLS304
    ema.shadow.update({k: v.to(device) for k, v in ckpt["ema"].items()})
    return ckpt["step"], ckpt["best_val"]


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--meta", required=True)
    p.add_argument("--val-meta", required=True)
    p.add_argument("--stats", required=True)
    p.add_argument("--cache", default=None)
    p.add_argument("--out", default="runs/fs2")
    p.add_argument("--resume", default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--warmup", type=int, default=4000)
    p.add_argument("--max-steps", type=int, default=200_000)
    p.add_argument("--val-every", type=int, default=2000)
    p.add_argument("--balance-speakers", action="store_true")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--seed", type=int, default=1234)
    return p.parse_args()


def main():
    args = parse_args()
    set_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with open(args.stats) as fh:
        stats = json.load(fh)

    train_ds = AlignedTTSDataset(args.meta, stats, cache_dir=args.cache, train=True)
    val_ds = AlignedTTSDataset(args.val_meta, stats, cache_dir=args.cache, train=False)
    sampler = speaker_balanced_sampler(train_ds) if args.balance_speakers else None
    train_dl = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None,
                          collate_fn=collate_tts, num_workers=4, worker_init_fn=worker_init, drop_last=True)
    val_dl = DataLoader(val_ds, batch_size=args.batch_size, collate_fn=collate_tts, num_workers=2)

    model = FastSpeech2(len(SYMBOLS), n_speakers=len(train_ds.spk2id)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)
    ema = ModelEMA(model)
    writer = SummaryWriter(args.out)
    step, best_val, smoothed = 0, math.inf, None
    if args.resume:
        step, best_val = resume(args.resume, model, opt, ema, device)

    def _on_sigterm(signum, frame):
        save_checkpoint(os.path.join(args.out, "preempt.pt"), model, opt, ema, step, best_val)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _on_sigterm)

    model.train()
    while step < args.max_steps:
        for i, batch in enumerate(train_dl):
            b = to_device(batch, device)
            with torch.autocast(device_type=device.type, enabled=args.amp):
                loss, parts = fs2_loss(run_model(model, b), b)
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum:
                continue
            step += 1
            for g in opt.param_groups:
                g["lr"] = noam_lr(step, warmup=args.warmup)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            ema.update(model)
            with torch.no_grad():
                model.src_emb.weight[:4].zero_()  # todoruleid: family 2 (missed)

            smoothed = parts["total"] if smoothed is None else 0.98 * smoothed + 0.02 * parts["total"]
            if step % 100 == 0:
                for k, v in parts.items():
                    writer.add_scalar(f"train/{k}_loss", v, step)
                writer.add_scalar("train/total_loss_smoothed", smoothed, step)  # ok: MLS306
                writer.add_scalar("train/grad_norm", float(grad_norm), step)
                writer.add_scalar("train/lr", opt.param_groups[0]["lr"], step)

            if step % args.val_every == 0:
                val = validate(model, val_dl, device)
                for k, v in val.items():
                    if k != "total":
                        writer.add_scalar(f"val/{k}_loss", v, step)
                writer.add_scalar("val/total_loss", min(val["total"], best_val), step)  # ruleid: MLS306
                if val["total"] < best_val:
                    best_val = val["total"]  # ok: MLS306
                    save_checkpoint(os.path.join(args.out, "best.pt"), model, opt, ema, step, best_val)
                writer.add_scalar("val/best_total_loss", best_val, step)  # ok: MLS306
                save_checkpoint(os.path.join(args.out, "last.pt"), model, opt, ema, step, best_val)
            if step >= args.max_steps:
                break
    writer.close()


if __name__ == "__main__":
    main()
