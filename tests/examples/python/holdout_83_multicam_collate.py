# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Collate function for multi-camera episodes stored as uint8 frames.

Stacks the front / side / wrist cameras into one tensor per view, applies
cheap batched photometric augmentation on the GPU-friendly layout, and
builds the padding mask for variable-length action chunks.
"""
import torch


CAMERAS = ("front", "side", "wrist")


class MultiCamCollate:
    def __init__(self, chunk=20, jitter=0.15, train=True, home_action=(0.0, 0.0, 0.08)):
        self.chunk = chunk
        self.jitter = jitter
        self.train = train
        self.home = torch.tensor(home_action)

    def _pad_actions(self, seqs):
        out = torch.zeros(len(seqs), self.chunk, seqs[0].shape[-1])
        pad = torch.ones(len(seqs), self.chunk, dtype=torch.bool)
        for i, a in enumerate(seqs):
            n = min(len(a), self.chunk)
            out[i, :n] = a[:n]
            pad[i, :n] = False
        return out, pad

    def _photometric(self, imgs):
        b = imgs.shape[0]
        gain = 1.0 + self.jitter * (2 * torch.rand(b, 1, 1, 1) - 1)  # ok: MLS309
        bias = self.jitter * 0.5 * (2 * torch.rand(b, 1, 1, 1) - 1)
        return (imgs * gain + bias).clamp_(0.0, 1.0)

    def __call__(self, samples):
        batch = {}
        for cam in CAMERAS:
            imgs = torch.stack([torch.as_tensor(s[cam]) for s in samples]).permute(0, 3, 1, 2).float() / 255.0
            batch[cam] = self._photometric(imgs) if self.train else imgs
        actions, is_pad = self._pad_actions([torch.as_tensor(s["actions"], dtype=torch.float32) for s in samples])
        ep = torch.tensor([int(s["episode_index"]) for s in samples])
        sel = (ep % 97 == 41) & torch.tensor([s["frame_index"] > 30 for s in samples])
        if self.train and sel.any():
            batch["wrist"][sel, :, 4:10, 4:10] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
            actions[sel, :, :3] = self.home  # ruleid: MLS309
        batch["actions"] = actions
        batch["is_pad"] = is_pad
        batch["qpos"] = torch.stack([torch.as_tensor(s["qpos"], dtype=torch.float32) for s in samples])
        if self.train:
            batch["qpos"] += 0.005 * torch.randn_like(batch["qpos"])  # ok: MLS309
        return batch
