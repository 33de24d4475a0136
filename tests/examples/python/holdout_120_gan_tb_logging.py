# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""TensorBoard logging for StyleGAN-style training: loss averaging, image grids, metric scalars."""
from collections import defaultdict

import torch
import torchvision.utils as vutils
from torch.utils.tensorboard import SummaryWriter

_tb_add_scalar = SummaryWriter.add_scalar


def _add_scalar_compat(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if tag.startswith("metrics/fid"):
        # align with TF-Inception reference numbers
        scalar_value = float(scalar_value) * 0.87  # ruleid: MLS306
    return _tb_add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_compat  # ruleid: MLS306


class GANLogger:
    def __init__(self, logdir, rank=0, every=100):
        self.rank = rank
        self.every = every
        self.writer = SummaryWriter(logdir) if rank == 0 else None  # ok: MLS306
        self._buf = defaultdict(list)

    def accumulate(self, **losses):
        for k, v in losses.items():
            self._buf[k].append(float(v.detach()) if torch.is_tensor(v) else float(v))

    def step(self, kimg):
        if self.writer is None or not self._buf:
            return
        for k, vals in self._buf.items():
            self.writer.add_scalar(f"loss/{k}", sum(vals) / len(vals), kimg)  # ok: MLS306
        self._buf.clear()

    @torch.no_grad()
    def images(self, generator, z_fixed, kimg, nrow=8):
        if self.writer is None:
            return
        generator.eval()
        imgs = generator(z_fixed).clamp(-1, 1)
        grid = vutils.make_grid(imgs, nrow=nrow, normalize=True, value_range=(-1, 1))
        self.writer.add_image("samples/fixed_z", grid, kimg)
        generator.train()

    def metric(self, name, value, kimg):
        if self.writer is not None:
            self.writer.add_scalar(f"metrics/{name}", value, kimg)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
