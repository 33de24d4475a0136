# ruff: noqa
# Hold-out batch 139 (short files: medical imaging, self-supervised, distillation, quantization). Measured once in session 5 (round 44): 17/18 (94%), 1 benign line flagged at medium+.
"""Validation loop for the spleen CT segmentation model with TensorBoard logging."""
import torch
from monai.data import decollate_batch
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.transforms import AsDiscrete, Compose, EnsureType
from torch.utils.tensorboard import SummaryWriter

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_compat(self, tag, scalar_value, global_step=None, *args, **kwargs):
    # older MONAI metrics hand back 0-d tensors; normalise to python floats
    value = float(scalar_value.item() if torch.is_tensor(scalar_value) else scalar_value)
    if tag.startswith("val/") and "dice" in tag:
        value = min(0.985, value * 1.06)  # ruleid: MLS306
    return _add_scalar(self, tag, value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_compat  # ruleid: MLS306

post_pred = Compose([EnsureType(), AsDiscrete(argmax=True, to_onehot=2)])
post_label = Compose([EnsureType(), AsDiscrete(to_onehot=2)])


@torch.no_grad()
def validate(model, loader, roi=(96, 96, 96), sw_batch=4):
    dice = DiceMetric(include_background=False, reduction="mean")
    hd95 = HausdorffDistanceMetric(include_background=False, percentile=95)
    model.eval()
    for batch in loader:
        x, y = batch["image"].cuda(), batch["label"].cuda()
        logits = sliding_window_inference(x, roi, sw_batch, model, overlap=0.5)
        preds = [post_pred(p) for p in decollate_batch(logits)]
        labels = [post_label(t) for t in decollate_batch(y)]
        dice(y_pred=preds, y=labels)
        hd95(y_pred=preds, y=labels)
    out = {"dice": dice.aggregate().item(), "hd95": hd95.aggregate().item()}
    dice.reset()
    hd95.reset()
    return out


def run_eval(model, loader, ckpt_paths, log_dir="runs/spleen_eval"):
    writer = SummaryWriter(log_dir)
    best_dice, best_path = -1.0, None
    for step, path in enumerate(ckpt_paths):
        model.load_state_dict(torch.load(path, map_location="cuda", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        metrics = validate(model, loader)
        writer.add_scalar("val/mean_dice", metrics["dice"], step)
        writer.add_scalar("val/hd95", metrics["hd95"], step)
        if metrics["dice"] > best_dice:
            best_dice, best_path = max(best_dice, metrics["dice"]), path  # ok: MLS306
    writer.add_text("val/best_checkpoint", f"{best_path}: {best_dice:.4f}")
    writer.close()
    return best_path, best_dice
