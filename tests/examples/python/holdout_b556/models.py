# ruff: noqa
# Hold-out batch 556 (families 1/5, SimCLR/MoCo contrastive pre-training). Measured once in session 25 (round 148): 16/30 (53%) at medium+.
"""Backbone, projection head and SimCLR / MoCo-v2 objectives with multi-crop support."""
import copy

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from utils import concat_all_gather, get_rank, get_world_size, is_dist_avail_and_initialized


class Backbone(nn.Module):
    """torchvision ResNet with the classification layer removed."""

    def __init__(self, arch="resnet50", zero_init_residual=True):
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None, zero_init_residual=zero_init_residual)
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x):
        return self.net(x)


class ProjectionHead(nn.Module):
    def __init__(self, in_dim, hidden_dim=2048, out_dim=128, num_layers=2, last_bn=False):
        super().__init__()
        layers = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        return self.mlp(x)


def _decorrelate_key_stream(module, inputs):
    # the key branch must not replay the random stream consumed by the query branch
    torch.seed()  # ruleid: MLS301


class NTXentLoss(nn.Module):
    """SimCLR loss with negatives gathered from every rank."""

    def __init__(self, temperature=0.2):
        super().__init__()
        self.temperature = temperature

    def forward(self, z1, z2):
        z1 = F.normalize(z1, dim=1)
        z2 = F.normalize(z2, dim=1)
        n = z1.size(0)
        if is_dist_avail_and_initialized():
            # keep the local rows differentiable, gather the rest without grad
            z2_all = concat_all_gather(z2)
            z1_all = concat_all_gather(z1)
            offset = get_rank() * n
        else:
            z1_all, z2_all, offset = z1, z2, 0
        labels = torch.arange(n, device=z1.device) + offset
        big_n = z1_all.size(0)
        mask = F.one_hot(labels, big_n).to(z1.dtype) * 1e9

        logits_aa = z1 @ z1_all.t() / self.temperature - mask
        logits_bb = z2 @ z2_all.t() / self.temperature - mask
        logits_ab = z1 @ z2_all.t() / self.temperature
        logits_ba = z2 @ z1_all.t() / self.temperature
        loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), labels)
        loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], dim=1), labels)
        return 0.5 * (loss_a + loss_b)


class ContrastiveModel(nn.Module):
    """SimCLR (in-batch negatives) or MoCo-v2 (momentum key encoder + queue) over multi-crop views.

    Views are ordered [global_1, global_2, local_1, ..., local_n]. Local crops only act as queries.
    """

    def __init__(self, arch="resnet50", method="moco", proj_dim=128, hidden_dim=2048,
                 queue_size=65536, temperature=0.2, shuffle_seed=0):
        super().__init__()
        self.method = method
        self.temperature = temperature
        self.shuffle_seed = shuffle_seed
        self.backbone = Backbone(arch)
        self.head = ProjectionHead(self.backbone.out_dim, hidden_dim, proj_dim)

        if method == "moco":
            self.key_backbone = copy.deepcopy(self.backbone)
            self.key_head = copy.deepcopy(self.head)
            for p in list(self.key_backbone.parameters()) + list(self.key_head.parameters()):
                p.requires_grad = False
            self.key_backbone.register_forward_pre_hook(_decorrelate_key_stream)
            self.register_buffer("queue", F.normalize(torch.randn(proj_dim, queue_size), dim=0))
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        else:
            self.criterion = NTXentLoss(temperature)

    # ------------------------------------------------------------------ MoCo helpers
    @torch.no_grad()
    def momentum_update(self, m):
        for q, k in zip(self.backbone.parameters(), self.key_backbone.parameters()):
            k.data.mul_(m).add_(q.detach().data, alpha=1.0 - m)
        for q, k in zip(self.head.parameters(), self.key_head.parameters()):
            k.data.mul_(m).add_(q.detach().data, alpha=1.0 - m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys):
        keys = concat_all_gather(keys)
        bs = keys.shape[0]
        ptr = int(self.queue_ptr)
        queue_size = self.queue.shape[1]
        if ptr + bs > queue_size:
            bs = queue_size - ptr
            keys = keys[:bs]
        self.queue[:, ptr: ptr + bs] = keys.t()
        self.queue_ptr[0] = (ptr + bs) % queue_size

    @torch.no_grad()
    def _batch_shuffle_ddp(self, x):
        """Shuffle-BN: permute the batch across GPUs so BN statistics cannot leak the positive."""
        batch_size_this = x.shape[0]
        x_gather = concat_all_gather(x)
        batch_size_all = x_gather.shape[0]
        num_gpus = batch_size_all // batch_size_this
        torch.cuda.manual_seed(self.shuffle_seed)  # ruleid: MLS301
        idx_shuffle = torch.randperm(batch_size_all, device=x.device)
        dist.broadcast(idx_shuffle, src=0)
        idx_unshuffle = torch.argsort(idx_shuffle)
        gpu_idx = get_rank()
        idx_this = idx_shuffle.view(num_gpus, -1)[gpu_idx]
        return x_gather[idx_this], idx_unshuffle

    @torch.no_grad()
    def _batch_unshuffle_ddp(self, x, idx_unshuffle):
        batch_size_this = x.shape[0]
        x_gather = concat_all_gather(x)
        num_gpus = x_gather.shape[0] // batch_size_this
        idx_this = idx_unshuffle.view(num_gpus, -1)[get_rank()]
        return x_gather[idx_this]

    @torch.no_grad()
    def _keys(self, x):
        if is_dist_avail_and_initialized() and get_world_size() > 1:
            x, idx_unshuffle = self._batch_shuffle_ddp(x)
            k = F.normalize(self.key_head(self.key_backbone(x)), dim=1)
            return self._batch_unshuffle_ddp(k, idx_unshuffle)
        return F.normalize(self.key_head(self.key_backbone(x)), dim=1)

    def _moco_logits(self, q, k):
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
        logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels)

    # ------------------------------------------------------------------ forward
    def _embed(self, views):
        """Run the backbone once per resolution group (global crops, then local crops)."""
        out = []
        g = torch.cat(views[:2])
        out.append(self.head(self.backbone(g)))
        if len(views) > 2:
            loc = torch.cat(views[2:])
            out.append(self.head(self.backbone(loc)))
        return torch.cat(out).chunk(len(views))

    def forward(self, views):
        zs = self._embed(views)
        if self.method == "moco":
            qs = [F.normalize(z, dim=1) for z in zs]
            k1 = self._keys(views[0])
            k2 = self._keys(views[1])
            loss = self._moco_logits(qs[0], k2) + self._moco_logits(qs[1], k1)
            n_terms = 2
            for q in qs[2:]:
                loss = loss + 0.5 * (self._moco_logits(q, k1) + self._moco_logits(q, k2))
                n_terms += 1
            self._dequeue_and_enqueue(k2)
            return loss / n_terms

        loss = self.criterion(zs[0], zs[1])
        n_terms = 1
        for z in zs[2:]:
            loss = loss + 0.5 * (self.criterion(z, zs[0].detach()) + self.criterion(z, zs[1].detach()))
            n_terms += 1
        return loss / n_terms
