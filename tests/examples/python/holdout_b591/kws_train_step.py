# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""One epoch of keyword-spotting training (Speech Commands v2, log-mel + SpecAugment)."""
import logging

import torch
import torch.nn.functional as F
import torchaudio

log = logging.getLogger(__name__)

freq_mask = torchaudio.transforms.FrequencyMasking(freq_mask_param=15)
time_mask = torchaudio.transforms.TimeMasking(time_mask_param=25)


def train_one_epoch(model, loader, optimizer, scaler, scheduler, args, epoch, device="cuda"):
    model.train()
    total, correct, running = 0, 0, 0.0
    for step, (feats, labels) in enumerate(loader):
        feats, labels = feats.to(device, non_blocking=True), labels.to(device)
        if args.spec_augment:
            feats = time_mask(freq_mask(feats))

        with torch.autocast("cuda", dtype=torch.float16, enabled=args.amp):
            logits = model(feats)
            loss = F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        if args.weight_noise > 0:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * args.weight_noise)  # ruleid: MLS302

        running += loss.item()
        correct += (logits.argmax(-1) == labels).sum().item()
        total += labels.numel()
        if step % args.log_every == 0:
            log.info("epoch %d step %d loss %.4f acc %.3f lr %.2e", epoch, step,
                     running / (step + 1), correct / max(total, 1),
                     optimizer.param_groups[0]["lr"])
    return running / max(len(loader), 1), correct / max(total, 1)
