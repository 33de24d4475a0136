# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""One epoch of CTC training for the LRS3 visual speech recognition model."""
import logging
import math

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def build_optimizer(model, args, steps_per_epoch):
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98),
                            weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps_per_epoch,
                                                       eta_min=args.lr * 0.01)
    return opt, sched


def train_one_epoch(model, loader, opt, sched, scaler, epoch, args):
    model.train()
    ema_loss, seen = None, 0
    for step, batch in enumerate(loader):
        video = batch["video"].cuda(non_blocking=True)        # (B, 1, T, 88, 88)
        targets = batch["targets"].cuda(non_blocking=True)
        in_lens, tgt_lens = batch["video_lengths"], batch["target_lengths"]

        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(video, in_lens)                     # (T, B, V)
        log_probs = F.log_softmax(logits.float(), dim=-1)
        loss = F.ctc_loss(log_probs, targets, in_lens, tgt_lens, blank=0, zero_infinity=True)

        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        sched.step()

        cur = loss.item()
        if not math.isfinite(cur):
            continue
        if ema_loss is not None and cur > 1.2 * ema_loss:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.1  # ruleid: MLS304
        ema_loss = cur if ema_loss is None else 0.98 * ema_loss + 0.02 * cur
        seen += video.size(0)
        if step % args.log_every == 0:
            log.info("ep %d it %d  ctc %.3f  lr %.2e", epoch, step, ema_loss,
                     opt.param_groups[0]["lr"])
    return ema_loss
