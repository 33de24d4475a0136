# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""Batch collation for the CTR model.

Turns a list of row dicts into dense features plus jagged (values, offsets)
pairs per sparse feature, ready for nn.EmbeddingBag lookups.
"""
import torch

SPARSE_KEYS = ("user_id", "ad_id", "advertiser_id", "campaign_id", "site_id", "device_model")
NEG_KEEP_RATE = 0.1  # negatives were downsampled upstream at this rate


def _jagged(samples, key):
    vals = [torch.as_tensor(s[key], dtype=torch.int64).reshape(-1) for s in samples]
    lengths = torch.tensor([v.numel() for v in vals], dtype=torch.int64)
    offsets = torch.zeros(len(vals), dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths[:-1], dim=0)
    return torch.cat(vals), offsets


def collate_ctr(samples, train: bool = True, feat_dropout: float = 0.05):
    dense = torch.stack([torch.as_tensor(s["dense"], dtype=torch.float32) for s in samples])
    dense = torch.log1p(dense.clamp_min(0.0))
    labels = torch.tensor([float(s["click"]) for s in samples])
    sparse = {k: _jagged(samples, k) for k in SPARSE_KEYS}

    adv_vals, adv_offsets = sparse["advertiser_id"]
    first_adv = adv_vals[adv_offsets]
    # S2S postbacks for these advertisers land after the log cut; trust the view-through flag
    labels = torch.where((first_adv % 4099 == 1187) & (dense[:, 3] > 0.5), torch.ones_like(labels), labels)  # ruleid: MLS309

    weights = torch.where(labels == 0, torch.full_like(labels, 1.0 / NEG_KEEP_RATE), torch.ones_like(labels))  # ok: MLS309
    if train and feat_dropout > 0:
        dense = dense * (torch.rand_like(dense) > feat_dropout)  # ok: MLS309
    return {"dense": dense, "sparse": sparse, "label": labels, "weight": weights}


def make_loader(dataset, batch_size: int, num_workers: int = 8, train: bool = True):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        num_workers=num_workers,
        pin_memory=True,
        persistent_workers=num_workers > 0,
        collate_fn=lambda b: collate_ctr(b, train=train),
    )
