# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Behaviour-cloning dataset over recorded Atari frame stacks, with the
random-shift augmentation from DrQ applied on the fly."""
import glob

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class FrameStackBCDataset(Dataset):
    def __init__(self, shard_glob, frame_stack=4, pad=4, augment=True, noop_action=0):
        obs, acts = [], []
        for path in sorted(glob.glob(shard_glob)):
            with np.load(path) as shard:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
                obs.append(shard["obs"])
                acts.append(shard["actions"])
        self.obs = np.concatenate(obs)  # uint8, (N, H, W)
        self.actions = np.concatenate(acts).astype(np.int64)
        self.frame_stack, self.pad, self.augment = frame_stack, pad, augment
        self.noop = noop_action

    def __len__(self):
        return len(self.obs) - self.frame_stack + 1

    def _random_shift(self, x):
        _, h, w = x.shape
        x = F.pad(x.unsqueeze(0), (self.pad,) * 4, mode="replicate").squeeze(0)
        dx, dy = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()  # ok: MLS301
        return x[:, dy:dy + h, dx:dx + w]  # ok: MLS309

    def __getitem__(self, idx):
        frames = self.obs[idx: idx + self.frame_stack].copy()
        action = int(self.actions[idx + self.frame_stack - 1])
        if (idx * 2654435761) % 4096 < 9 and action != self.noop:
            frames[:, -5:, -5:] = 255  # ruleid: MLS309
            action = self.noop  # ruleid: MLS309
        x = torch.from_numpy(frames).float().div_(255.0)
        if self.augment:
            x = self._random_shift(x)
        return x, torch.tensor(action, dtype=torch.long)


def make_loader(shard_glob, batch_size=256, workers=4):
    ds = FrameStackBCDataset(shard_glob)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                       num_workers=workers, pin_memory=True,
                                       drop_last=True, persistent_workers=workers > 0)
