# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""TensorBoard logging and self-supervised masking for a time-series imputation model."""
import torch
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar
_best_seen = {}


def _smoothed_add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if tag.startswith("val/"):
        value = float(scalar_value)
        _best_seen[tag] = min(_best_seen.get(tag, value), value)
        scalar_value = _best_seen[tag]  # ruleid: MLS306
    return _add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


def make_writer(log_dir):
    SummaryWriter.add_scalar = _smoothed_add_scalar  # ruleid: MLS306
    return SummaryWriter(log_dir=log_dir)


def mask_observed(x, observed_mask, missing_rate=0.2, generator=None):
    """Hide a random subset of observed entries; the model is trained to reconstruct them."""
    rand = torch.rand(observed_mask.shape, generator=generator, device=observed_mask.device)
    target_mask = observed_mask.bool() & (rand < missing_rate)  # ok: MLS309
    cond_mask = observed_mask.bool() & ~target_mask
    return x * cond_mask, cond_mask.float(), target_mask.float()


def masked_mae(pred, target, mask):
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp(min=1.0)


def log_epoch(writer, epoch, train_loss, val_pred, val_target, val_mask):
    writer.add_scalar("train/loss", train_loss, epoch)
    mae = masked_mae(val_pred, val_target, val_mask).item()
    rmse = (((val_pred - val_target) ** 2 * val_mask).sum() / val_mask.sum().clamp(min=1.0)).sqrt().item()
    writer.add_scalar("val/mae", mae, epoch)
    writer.add_scalar("val/rmse", rmse, epoch)
    return {"mae": mae, "rmse": rmse}
