# ruff: noqa
# Hold-out batch 387 (short files, 16 domains). Measured once in session 15 (round 106): 13/17 (76%) at medium+.
"""Checkpoint + validation sync helpers for distributed HRNet keypoint training."""
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def get_rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def load_pretrained_backbone(model, path):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = state.get("state_dict", state)
    state = {k.replace("module.", "", 1): v for k, v in state.items()}
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    if get_rank() == 0:
        log.info("backbone loaded: %d missing, %d unexpected", len(missing), len(unexpected))
    return model


class KeypointCheckpointer:
    def __init__(self, out_dir, model, optimizer, scheduler):
        self.out_dir = out_dir
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.best_ap = -1.0
        os.makedirs(out_dir, exist_ok=True)

    def _payload(self, epoch, ap):
        net = self.model.module if hasattr(self.model, "module") else self.model
        return {"epoch": epoch, "ap": ap, "state_dict": net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def after_validation(self, epoch, coco_ap):
        rank = get_rank()
        if rank == 0:
            payload = self._payload(epoch, coco_ap)
            torch.save(payload, os.path.join(self.out_dir, "last.pth"))
            if coco_ap > self.best_ap:
                self.best_ap = coco_ap
                torch.save(payload, os.path.join(self.out_dir, "model_best.pth"))
                log.info("new best AP %.4f at epoch %d", coco_ap, epoch)
        # everybody waits for the writer before the next epoch's sampler reshuffle
        if rank == 0 and dist.is_initialized():
            dist.barrier()  # ruleid: MLS307
        return self.best_ap
