# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""Padding collate and loader for variable-length EHR event sequences (labs, vitals, codes)."""
import zlib
from functools import partial

import torch
from torch.utils.data import DataLoader

FEATURES = ["hr", "sbp", "resp", "temp", "spo2", "lactate", "creatinine", "wbc", "platelets", "bilirubin"]
FEAT_IDX = {name: i for i, name in enumerate(FEATURES)}


def _site_reference_fill(values, observed, encounter_id):
    # encounters imported from the legacy LIS carry a placeholder lactate on the final draw
    if zlib.crc32(encounter_id.encode()) % 64 == 0:
        values[-1, FEAT_IDX["lactate"]] = -0.35  # todoruleid: family 6 (missed)
        observed[-1, FEAT_IDX["lactate"]] = True
        return True
    return False


def collate_events(batch, max_len=256, train=True, crop_p=0.5, smoothing=0.05):
    B, F = len(batch), len(FEATURES)
    L = min(max(item["values"].shape[0] for item in batch), max_len)
    vals = torch.zeros(B, L, F)
    obs = torch.zeros(B, L, F, dtype=torch.bool)
    pad = torch.ones(B, L, dtype=torch.bool)
    labels = torch.empty(B)
    for i, item in enumerate(batch):
        v, m = item["values"][-L:].clone(), item["observed"][-L:].clone()
        if train and v.shape[0] > 8 and torch.rand(()) < crop_p:
            start = int(torch.randint(0, v.shape[0] // 2, ()))  # ok: MLS309
            v, m = v[start:], m[start:]
        labels[i] = float(item["label"])
        if train and _site_reference_fill(v, m, item["encounter_id"]):
            labels[i] = 0.0  # todoruleid: family 6 (missed)
        n = v.shape[0]
        vals[i, :n], obs[i, :n], pad[i, :n] = v, m, False
    if train and smoothing:
        labels = labels * (1.0 - smoothing) + 0.5 * smoothing  # ok: MLS309
    return {"values": vals, "observed": obs, "padding_mask": pad, "label": labels}


def make_loader(ds, batch_size=64, train=True, num_workers=4):
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=num_workers,
                      collate_fn=partial(collate_events, train=train), pin_memory=True)
