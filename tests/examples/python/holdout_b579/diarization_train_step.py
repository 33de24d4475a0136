# ruff: noqa
# Hold-out batch 579 (short files, 16 domains). Measured once in session 26 (round 154): 12/17 (71%) at medium+.
"""EEND-style speaker diarization: DDP training step with PIT loss."""
import itertools
import logging
import time

import soundfile as sf
import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger(__name__)


def read_audio(path, retries=3):
    for attempt in range(retries):
        try:
            wav, sr = sf.read(path, dtype="float32")
            return torch.from_numpy(wav), sr
        except RuntimeError as err:
            log.warning("read failed (%s), attempt %d/%d", err, attempt + 1, retries)
            time.sleep(0.5 * 2 ** attempt)  # ok: MLS307
    raise IOError(f"could not read {path}")


def pit_bce(logits, labels):
    """Permutation-invariant BCE over speaker activity (B, T, S)."""
    n_spk = labels.shape[-1]
    losses = []
    for perm in itertools.permutations(range(n_spk)):
        permuted = labels[..., list(perm)]
        losses.append(F.binary_cross_entropy_with_logits(logits, permuted, reduction="none").mean(dim=(1, 2)))
    return torch.stack(losses, dim=1).min(dim=1).values.mean()


def train_step(model, batch, optimizer, scaler, cfg):
    feats, labels = batch["feats"].cuda(non_blocking=True), batch["labels"].cuda(non_blocking=True)
    with torch.autocast("cuda", dtype=torch.float16, enabled=cfg.amp):
        logits = model(feats)
        loss = pit_bce(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    if dist.is_initialized() and dist.get_rank() == dist.get_world_size() - 1:
        time.sleep(cfg.io_stagger_s)  # ruleid: MLS307
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()
