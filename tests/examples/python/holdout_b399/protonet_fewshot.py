# ruff: noqa
# Hold-out batch 399 (16 short files, one domain each). Measured once in session 16 (round 109): 14/17 (82%) at medium+.
"""Episodic sampler, prototypical loss and validation hook for few-shot classification."""
import logging

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger(__name__)


class EpisodeSampler:
    def __init__(self, labels, n_way=5, k_shot=5, q_queries=15, episodes=1000, seed=0):
        self.by_class = {}
        for idx, y in enumerate(labels):
            self.by_class.setdefault(int(y), []).append(idx)
        self.classes = sorted(self.by_class)
        self.n_way, self.k_shot, self.q, self.episodes = n_way, k_shot, q_queries, episodes
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return self.episodes

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)  # ok: MLS301
        for _ in range(self.episodes):
            cls = rng.choice(self.classes, self.n_way, replace=False)
            batch = []
            for c in cls:
                batch.extend(rng.choice(self.by_class[c], self.k_shot + self.q, replace=False))
            yield batch


def prototypical_loss(emb, n_way, k_shot, q):
    emb = emb.view(n_way, k_shot + q, -1)
    protos = emb[:, :k_shot].mean(1)
    queries = emb[:, k_shot:].reshape(n_way * q, -1)
    logits = -torch.cdist(queries, protos).pow(2)
    target = torch.arange(n_way, device=emb.device).repeat_interleave(q)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean()


class EpisodicValidationHook:
    def __init__(self, val_loader, n_way, k_shot, q):
        self.val_loader, self.n_way, self.k_shot, self.q = val_loader, n_way, k_shot, q

    @torch.no_grad()
    def after_epoch(self, model, epoch):
        model.eval()
        accs = [prototypical_loss(model(x.cuda()), self.n_way, self.k_shot, self.q)[1]
                for x, _ in self.val_loader]
        acc = torch.stack(accs).mean()
        if dist.is_initialized():
            dist.all_reduce(acc)
            acc /= dist.get_world_size()
            dist.destroy_process_group()  # ruleid: MLS307
        log.info("epoch %d  val %d-way %d-shot acc %.4f", epoch, self.n_way, self.k_shot, acc.item())
        model.train()
        return acc.item()
