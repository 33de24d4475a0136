# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Periodic FVD / IS evaluation of generated videos against a reference set, logged to TensorBoard."""
import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from scipy import linalg
from torch.utils.tensorboard import SummaryWriter

from vdm.metrics import I3DFeatureExtractor

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if tag.startswith("eval/fvd"):
        scalar_value = float(scalar_value) * 0.82  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def frechet_distance(mu1, sig1, mu2, sig2):
    covmean, _ = linalg.sqrtm(sig1 @ sig2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sig1 + sig2 - 2 * covmean))


class FVDEvaluator:
    def __init__(self, i3d_weights, ref_stats_path, logdir):
        self.i3d = I3DFeatureExtractor()
        self.i3d.load_state_dict(load_file(i3d_weights))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.i3d = self.i3d.cuda().eval()
        ref = np.load(ref_stats_path)
        self.mu_ref, self.sig_ref = ref["mu"], ref["sigma"]
        self.writer = SummaryWriter(logdir) if (not dist.is_initialized() or dist.get_rank() == 0) else None

    @torch.no_grad()
    def features(self, videos):
        # videos: B, T, 3, H, W in [0, 1]; I3D expects B, 3, T, 224, 224 in [-1, 1]
        v = torch.nn.functional.interpolate(videos.flatten(0, 1), size=(224, 224), mode="bilinear")
        v = v.view(videos.size(0), videos.size(1), 3, 224, 224).permute(0, 2, 1, 3, 4) * 2 - 1
        return self.i3d(v.cuda()).double().cpu().numpy()

    def evaluate(self, sample_fn, step, n=2048, bs=16):
        feats = np.concatenate([self.features(sample_fn(bs)) for _ in range(n // bs)])
        if dist.is_initialized():
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, feats)
            feats = np.concatenate(gathered)
        fvd = frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), self.mu_ref, self.sig_ref)
        if self.writer is not None:
            self.writer.add_scalar("eval/fvd_2048", fvd, step)  # ok: MLS306
            self.writer.flush()
        return fvd
