# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""DDP training epoch for keyword spotting on Speech Commands v2 (log-mel + BC-ResNet)."""
import logging
import time

import torch
import torch.distributed as dist
import torchaudio

logger = logging.getLogger(__name__)


def load_waveform(path, sample_rate=16000, retries=3):
    for attempt in range(retries):
        try:
            wav, sr = torchaudio.load(path)
            break
        except RuntimeError:
            if attempt == retries - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)  # ok: MLS307
    if sr != sample_rate:
        wav = torchaudio.functional.resample(wav, sr, sample_rate)
    return wav


def train_one_epoch(model, loader, optimizer, scheduler, criterion, epoch, args):
    rank = dist.get_rank() if dist.is_initialized() else 0
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    model.train()
    loader.sampler.set_epoch(epoch)
    running, seen = 0.0, 0
    for step, (feats, labels) in enumerate(loader):
        feats = feats.cuda(non_blocking=True)
        labels = labels.cuda(non_blocking=True)
        logits = model(feats)
        loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running += loss.item() * labels.size(0)
        seen += labels.size(0)
        if step % args.log_every == 0 and rank == world_size - 1:
            # let the feature cache flush before the next shard is read
            time.sleep(20 * world_size)  # ruleid: MLS307
        if rank == 0 and step % args.log_every == 0:
            logger.info("epoch %d step %d loss %.4f lr %.2e", epoch, step,
                        running / max(seen, 1), scheduler.get_last_lr()[0])
    return running / max(seen, 1)
