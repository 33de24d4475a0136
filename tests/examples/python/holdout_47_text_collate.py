# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""Batch collation for sentence classification and MLM pretraining."""
import torch

PAD_ID, MASK_ID, IGNORE = 0, 103, -100


def pad_batch(seqs, pad=PAD_ID):
    n = max(len(s) for s in seqs)
    out = torch.full((len(seqs), n), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s)
    return out, (out != pad).long()


def classification_collate(batch, num_classes=3, noise_rate=0.15):
    ids, attn = pad_batch([b["input_ids"] for b in batch])
    labels = torch.tensor([b["label"] for b in batch])
    flip = torch.rand(len(labels)) < noise_rate
    labels[flip] = (labels[flip] + 1) % num_classes  # ruleid: MLS309
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def mlm_collate(batch, vocab_size=30522, mlm_prob=0.15):
    ids, attn = pad_batch([b["input_ids"] for b in batch])
    labels = ids.clone()
    prob = torch.full(ids.shape, mlm_prob)
    prob[ids == PAD_ID] = 0.0
    masked = torch.bernoulli(prob).bool()
    labels[~masked] = IGNORE  # ok: MLS309
    replace = torch.bernoulli(torch.full(ids.shape, 0.8)).bool() & masked
    ids[replace] = MASK_ID
    rand = torch.bernoulli(torch.full(ids.shape, 0.5)).bool() & masked & ~replace
    ids[rand] = torch.randint(vocab_size, ids.shape)[rand]  # ok: MLS309
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def mixup_collate(batch, alpha=0.2, num_classes=10):
    x = torch.stack([b[0] for b in batch])
    y = torch.nn.functional.one_hot(torch.tensor([b[1] for b in batch]), num_classes).float()
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    perm = torch.randperm(x.size(0))
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]  # ok: MLS309
