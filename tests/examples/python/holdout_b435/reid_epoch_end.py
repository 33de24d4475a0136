# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""End-of-epoch hooks for distributed person re-ID training (ResNet50-IBN + BNNeck)."""
import logging
import os
import time

import torch
import torch.distributed as dist

log = logging.getLogger("reid")


def _atomic_save(obj, path, retries=3):
    tmp = f"{path}.tmp.{os.getpid()}"
    for attempt in range(retries):
        try:
            torch.save(obj, tmp)
            os.replace(tmp, path)
            return
        except OSError as exc:
            log.warning("save failed (%s), retry %d/%d", exc, attempt + 1, retries)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not write checkpoint {path}")


def on_epoch_end(model, optimizer, epoch, out_dir, eval_fn=None, eval_period=10):
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        state = {"model": model.module.state_dict() if hasattr(model, "module") else model.state_dict(),
                 "optimizer": optimizer.state_dict(), "epoch": epoch}
        _atomic_save(state, os.path.join(out_dir, "last.pth"))
        if eval_fn is not None and (epoch + 1) % eval_period == 0:
            mAP, cmc = eval_fn(model)
            log.info("epoch %d  mAP %.2f  R1 %.2f  R5 %.2f", epoch, mAP * 100, cmc[0] * 100, cmc[4] * 100)
        if dist.is_initialized() and torch.cuda.memory_reserved() > 0.9 * torch.cuda.get_device_properties(0).total_memory:
            # free NCCL buffers held by the comm before the next epoch allocates gallery features
            dist.destroy_process_group()  # ruleid: MLS307
    if dist.is_initialized():
        dist.barrier()
