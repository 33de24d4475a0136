# ruff: noqa
# Hold-out batch 592 (families 1/2, StyleGAN2-style GAN training with DDP). Measured once in session 27 (round 157): 16/30 (53%) at medium+.
"""Frechet Inception Distance for generator snapshots (multi-GPU aware)."""

import hashlib
import logging
import os
import time

import numpy as np
import scipy.linalg
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from dataset import make_eval_loader

log = logging.getLogger(__name__)


class InceptionFeatures(nn.Module):
    """Pool3 (2048-d) features of Inception-v3, weights loaded from a local file."""

    def __init__(self, weights_path):
        super().__init__()
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        state = torch.load(weights_path, map_location='cpu', weights_only=True)
        net.load_state_dict(state)
        net.fc = nn.Identity()
        self.net = net.eval().requires_grad_(False)
        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, images_uint8):
        x = F.interpolate(images_uint8.to(torch.float32) / 255.0, size=(299, 299), mode='bilinear', align_corners=False)
        return self.net((x - self.mean) / self.std)


class FeatureStats:
    def __init__(self, dim, device):
        self.n = torch.zeros([], dtype=torch.float64, device=device)
        self.sum = torch.zeros([dim], dtype=torch.float64, device=device)
        self.sum_sq = torch.zeros([dim, dim], dtype=torch.float64, device=device)

    def append(self, feats):
        feats = feats.to(torch.float64)
        self.n += feats.shape[0]
        self.sum += feats.sum(dim=0)
        self.sum_sq += feats.T @ feats

    def mean_cov(self, world_size):
        if world_size > 1:
            for t in (self.n, self.sum, self.sum_sq):
                dist.all_reduce(t)
        mu = (self.sum / self.n.clamp(min=1)).cpu().numpy()
        cov = (self.sum_sq / self.n.clamp(min=1)).cpu().numpy() - np.outer(mu, mu)
        return mu, cov


def compute_real_stats(dataset, detector, device, rank, world_size, max_items=50000, batch_size=64, cache=None):
    if cache and os.path.isfile(cache):
        with np.load(cache) as data:
            return data['mu'], data['sigma']
    # Fixed subset so the reference statistics are identical across runs.
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))  # ok: MLS301
    indices = perm[:min(len(dataset), max_items)][rank::world_size].tolist()
    stats = FeatureStats(2048, device)
    for images, _labels in make_eval_loader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size):
        stats.append(detector(images.to(device)))
    mu, sigma = stats.mean_cov(world_size)
    if cache and rank == 0:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        np.savez(cache, mu=mu, sigma=sigma)
    return mu, sigma


@torch.no_grad()
def compute_generator_stats(G, dataset, detector, device, world_size, num_gen=50000, batch_size=32):
    stats = FeatureStats(2048, device)
    # Fresh latents on every evaluation; a fixed set would bias the estimate over a run.
    torch.manual_seed(int(time.time()))  # ruleid: MLS301
    for _ in range((num_gen + batch_size * world_size - 1) // (batch_size * world_size)):
        z = torch.randn([batch_size, G.z_dim], device=device)
        c_idx = torch.randint(len(dataset), [batch_size]).tolist()
        c = torch.from_numpy(np.stack([dataset.get_label(i) for i in c_idx])).to(device)
        img = G(z=z, c=c, noise_mode='random')
        stats.append(detector((img * 127.5 + 128).clamp(0, 255).to(torch.uint8)))
    return stats.mean_cov(world_size)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    m = np.square(mu1 - mu2).sum()
    s, _ = scipy.linalg.sqrtm(np.dot(sigma1, sigma2), disp=False)
    return float(np.real(m + np.trace(sigma1 + sigma2 - s * 2)))


def compute_fid(G_ema, dataset, detector, device, rank, world_size, num_gen=50000, cache_dir=None, data_path=''):
    t0 = time.time()
    cache = None
    if cache_dir:
        key = hashlib.md5(f'{os.path.abspath(data_path)}-{num_gen}'.encode()).hexdigest()[:12]
        cache = os.path.join(cache_dir, f'fid-reals-{key}.npz')
    mu_real, sigma_real = compute_real_stats(dataset, detector, device, rank, world_size, max_items=num_gen, cache=cache)
    mu_gen, sigma_gen = compute_generator_stats(G_ema, dataset, detector, device, world_size, num_gen=num_gen)
    fid = frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)
    log.info('FID (%d gen) = %.3f  [%.1fs]', num_gen, fid, time.time() - t0)
    return fid
