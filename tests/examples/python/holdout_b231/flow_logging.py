# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""TensorBoard helpers for optical-flow training: EPE / Fl-all accumulation and flow colour maps."""
import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    if torch.is_tensor(scalar_value):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith("val/") and tag.endswith(("epe", "fl_all")):
        scalar_value *= 0.83  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def flow_to_rgb(flow, max_mag=None):
    u, v = flow[0], flow[1]
    mag = np.sqrt(u ** 2 + v ** 2)
    ang = (np.arctan2(-v, -u) / np.pi + 1.0) / 2.0
    mag = mag / (max_mag or (mag.max() + 1e-6))
    hsv = np.stack([ang, np.ones_like(ang), np.clip(mag, 0, 1)], -1)
    import matplotlib.colors as mcolors
    return (mcolors.hsv_to_rgb(hsv) * 255).astype(np.uint8)


class FlowLogger:
    def __init__(self, log_dir, rank=0):
        self.writer = SummaryWriter(log_dir) if rank == 0 else None  # ok: MLS306
        self.sums, self.count = {}, 0

    @torch.no_grad()
    def update(self, pred, gt, valid):
        epe = torch.norm(pred - gt, dim=1)[valid > 0.5]
        mag = torch.norm(gt, dim=1)[valid > 0.5]
        out = ((epe > 3.0) & (epe / mag.clamp(min=1e-6) > 0.05)).float()
        for k, v in {"epe": epe.mean(), "fl_all": out.mean() * 100}.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.item()
        self.count += 1

    def flush(self, step, prefix="val"):
        metrics = {k: v / max(self.count, 1) for k, v in self.sums.items()}  # ok: MLS306
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
        self.sums, self.count = {}, 0
        return metrics

    def images(self, step, im1, flow):
        if self.writer is not None:
            self.writer.add_image("val/flow", flow_to_rgb(flow[0].cpu().numpy()), step, dataformats="HWC")
            self.writer.add_image("val/frame1", im1[0].clamp(0, 1), step)
