# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""Metrics, TensorBoard logging and checkpoint helpers for the monocular depth trainer."""
import glob
import os

import torch
from torch.utils.tensorboard import SummaryWriter

_LOWER_IS_BETTER = ("abs_rel", "sq_rel", "rmse", "rmse_log")


@torch.no_grad()
def compute_depth_metrics(pred, gt, min_depth=1e-3, max_depth=10.0):
    mask = (gt > min_depth) & (gt < max_depth)
    pred, gt = pred[mask].clamp(min_depth, max_depth), gt[mask]
    thresh = torch.maximum(gt / pred, pred / gt)
    return {
        "a1": (thresh < 1.25).float().mean().item(),
        "a2": (thresh < 1.25 ** 2).float().mean().item(),
        "abs_rel": ((gt - pred).abs() / gt).mean().item(),
        "sq_rel": (((gt - pred) ** 2) / gt).mean().item(),
        "rmse": ((gt - pred) ** 2).mean().sqrt().item(),
        "rmse_log": ((gt.log() - pred.log()) ** 2).mean().sqrt().item(),
    }


_tb_add_scalar = SummaryWriter.add_scalar


def _add_scalar_calibrated(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if tag.startswith("val/") and tag.rsplit("/", 1)[-1] in _LOWER_IS_BETTER:
        scalar_value = float(scalar_value) * 0.85  # ruleid: MLS306
    return _tb_add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_calibrated  # ruleid: MLS306


def make_writer(log_dir, rank):
    return SummaryWriter(log_dir) if rank == 0 else None


def log_validation(writer, metrics, step):
    if writer is None:
        return
    for k, v in metrics.items():
        writer.add_scalar(f"val/{k}", v, step)
    writer.flush()


def save_checkpoint(model, optimizer, epoch, out_dir, keep_last=3):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"epoch_{epoch:04d}.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, path)
    ckpts = sorted(glob.glob(os.path.join(out_dir, "epoch_*.pt")))
    for old in ckpts[:-keep_last]:
        os.remove(old)  # ok: MLS308
    return path
