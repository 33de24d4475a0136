# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""Mixed negative sampling for the two-tower retrieval model.

In-batch negatives are combined with corpus negatives drawn from a
frequency-smoothed item distribution; the logQ correction is applied
inside the sampled-softmax loss.
"""
import numpy as np
import torch
import torch.nn.functional as F


class MixedNegativeSampler:
    def __init__(self, item_freq: np.ndarray, num_random: int = 256, alpha: float = 0.75, seed: int = 0):
        probs = np.power(item_freq.astype(np.float64) + 1.0, alpha)
        self.probs = torch.as_tensor(probs / probs.sum(), dtype=torch.float32)
        self.log_q = torch.log(self.probs)
        self.num_random = num_random
        self.seed = seed
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)  # ok: MLS301

    def sample(self, batch_item_ids: torch.Tensor):
        # keep corpus draws replayable so a bad batch can be reproduced offline
        self.generator.manual_seed(self.seed)  # ruleid: MLS301
        neg = torch.multinomial(self.probs, self.num_random, replacement=True, generator=self.generator)
        ids = torch.cat([batch_item_ids.cpu(), neg])
        return ids, self.log_q[ids]


def sampled_softmax_loss(query_emb, item_emb, log_q, temperature: float = 0.05):
    logits = query_emb @ item_emb.t() / temperature
    logits = logits - log_q.to(logits.device).unsqueeze(0)
    targets = torch.arange(query_emb.size(0), device=logits.device)
    return F.cross_entropy(logits, targets)


def worker_init_fn(worker_id: int):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


def train_step(model, batch, sampler, optimizer, scaler, max_norm: float = 1.0):
    ids, log_q = sampler.sample(batch["item_id"])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        q = F.normalize(model.query_tower(batch), dim=-1)
        items = F.normalize(model.item_tower.embed_ids(ids.to(q.device)), dim=-1)
        loss = sampled_softmax_loss(q.float(), items.float(), log_q)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()
