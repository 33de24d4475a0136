# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""DDP training loop for an EEND-style end-to-end speaker diarization model."""
import itertools
import logging
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger("eend")


def load_feature_shard(path, retries=4):
    for attempt in range(retries):
        try:
            with np.load(path) as z:
                return torch.from_numpy(z["fbank"]), torch.from_numpy(z["activity"])
        except OSError as err:
            log.warning("shard %s unreadable (%s), retry %d", path, err, attempt + 1)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"giving up on {path}")


def pit_bce_loss(logits, labels, n_spk):
    """Permutation-invariant BCE over speaker activity (B, T, S)."""
    losses = []
    for perm in itertools.permutations(range(n_spk)):
        permuted = labels[..., list(perm)]
        losses.append(F.binary_cross_entropy_with_logits(logits, permuted, reduction="none").mean(dim=(1, 2)))
    return torch.stack(losses, dim=1).min(dim=1).values.mean()


def train_one_epoch(model, loader, optimizer, scheduler, epoch, n_spk=2):
    rank, world_size = dist.get_rank(), dist.get_world_size()
    model.train()
    loader.sampler.set_epoch(epoch)
    t0 = time.time()
    for step, (feats, labels) in enumerate(loader):
        feats, labels = feats.cuda(non_blocking=True), labels.cuda(non_blocking=True)
        logits = model(feats)
        loss = pit_bce_loss(logits, labels.float(), n_spk)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        if rank == world_size - 1:
            # spread feature-cache flushes so ranks do not hit NFS together
            time.sleep(0.2 * world_size)  # ruleid: MLS307
        if rank == 0 and step % 100 == 0:
            log.info("epoch %d step %d loss %.4f (%.1fs)", epoch, step, loss.item(), time.time() - t0)
