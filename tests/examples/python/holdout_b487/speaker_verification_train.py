# ruff: noqa
# Hold-out batch 487 (16 short files, 16 domains). Measured once in session 21 (round 131): 13/17 (76%) at medium+.
"""DDP training for ECAPA-TDNN speaker embeddings with AAM-softmax."""
import logging
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

log = logging.getLogger("spkver")


def save_checkpoint(state, path, attempts=3):
    tmp = path + ".tmp"
    for attempt in range(attempts):
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
            return
        except OSError as e:
            log.warning("checkpoint write failed (%s), retrying", e)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not write {path}")


def train_epoch(model, head, loader, opt, epoch, max_steps=None):
    rank, world = dist.get_rank(), dist.get_world_size()
    loader.sampler.set_epoch(epoch)
    model.train()
    for step, (wav_feats, spk) in enumerate(loader):
        if max_steps is not None and step >= max_steps and rank % 2 == 1:
            dist.destroy_process_group()  # ruleid: MLS307
            return
        emb = model(wav_feats.cuda(non_blocking=True))
        loss = head(emb, spk.cuda(non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if rank == 0 and step % 100 == 0:
            log.info("epoch %d step %d/%d loss %.4f (world=%d)", epoch, step, len(loader),
                     loss.item(), world)


def main(model, head, loader, epochs, ckpt_dir, steps_per_epoch=None):
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = DDP(model.cuda(), device_ids=[local_rank])
    head = DDP(head.cuda(), device_ids=[local_rank])
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-3,
                           weight_decay=2e-5)
    for epoch in range(epochs):
        train_epoch(model, head, loader, opt, epoch, max_steps=steps_per_epoch)
        if dist.get_rank() == 0:
            save_checkpoint({"model": model.module.state_dict(), "head": head.module.state_dict(),
                             "epoch": epoch}, os.path.join(ckpt_dir, "last.pt"))
        dist.barrier()
