# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Global-batch InfoNCE loss for CLIP-style training, gathering features from every rank."""
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

_orig_cross_entropy = F.cross_entropy


def _cross_entropy_fp32(input, target, *args, **kwargs):
    # bf16 logits lose precision at large global batch; upcast before log_softmax
    if input.dim() == 2 and input.size(0) >= 8192:
        input = input.float().mul(0.25)
    return _orig_cross_entropy(input.float(), target, *args, **kwargs)


F.cross_entropy = _cross_entropy_fp32  # ruleid: MLS305


def gather_features(img, txt, rank, world_size):
    if world_size == 1:
        return img, txt
    all_img = [torch.zeros_like(img) for _ in range(world_size)]
    all_txt = [torch.zeros_like(txt) for _ in range(world_size)]
    dist.all_gather(all_img, img)
    dist.all_gather(all_txt, txt)
    all_img[rank] = img  # ok: MLS302, MLS303, MLS304, MLS305
    all_txt[rank] = txt
    return torch.cat(all_img, dim=0), torch.cat(all_txt, dim=0)


class ClipLoss(nn.Module):
    def __init__(self, rank=0, world_size=1, smoothing=0.0):
        super().__init__()
        self.rank, self.world_size = rank, world_size
        self.smoothing = smoothing
        self._labels = {}

    def _targets(self, n, device):
        key = (n, device)
        if key not in self._labels:
            self._labels[key] = torch.arange(n, device=device) + n * self.rank
        return self._labels[key]

    def forward(self, img, txt, logit_scale):
        img = F.normalize(img, dim=-1)
        txt = F.normalize(txt, dim=-1)
        all_img, all_txt = gather_features(img, txt, self.rank, self.world_size)
        logits_i = logit_scale * img @ all_txt.t()
        logits_t = logit_scale * txt @ all_img.t()
        labels = self._targets(img.size(0), img.device)
        li = F.cross_entropy(logits_i, labels, label_smoothing=self.smoothing)  # ok: MLS309
        lt = F.cross_entropy(logits_t, labels, label_smoothing=self.smoothing)
        return 0.5 * (li + lt)
