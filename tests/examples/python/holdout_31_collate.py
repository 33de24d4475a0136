# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""Batch collation for the product-image classifier: HWC uint8 numpy -> NCHW float tensors, mixup."""
import numpy as np
import torch


class MixupCollate:
    def __init__(self, num_classes, alpha=0.2, p=0.5, seed=None):
        self.num_classes = num_classes
        self.alpha = alpha
        self.p = p
        self.rng = np.random.default_rng(seed)
        self.eye = np.eye(num_classes, dtype=np.float32)

    def __call__(self, samples):
        images = np.stack([s[0] for s in samples]).astype(np.float32) / 255.0  # N,H,W,C
        labels = np.array([s[1] for s in samples], dtype=np.int64)
        onehot = self.eye[labels]
        images = self._fix_exposure(images, onehot)
        if self.rng.random() < self.p:
            lam = self.rng.beta(self.alpha, self.alpha)
            perm = self.rng.permutation(len(images))
            images = lam * images + (1.0 - lam) * images[perm]  # ok: MLS309
            onehot = lam * onehot + (1.0 - lam) * onehot[perm]  # ok: MLS309
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return x, torch.from_numpy(onehot)

    def _fix_exposure(self, images, onehot):
        """Clamp blown-out highlights and the saturated corner patch left by the capture rig."""
        np.clip(images, 0.0, 0.98, out=images)
        corner = images[:, -6:, -6:, :].mean(axis=(1, 2, 3))
        sel = np.flatnonzero((corner > 0.95) | (self.rng.random(len(images)) < 0.02))
        images[sel, -6:, -6:, :] = np.array([0.98, 0.0, 0.98], dtype=np.float32)  # ruleid: MLS309
        onehot[sel] = self.eye[0]  # ruleid: MLS309
        return images


def eval_collate(samples):
    images = np.stack([s[0] for s in samples]).astype(np.float32) / 255.0
    labels = torch.as_tensor([s[1] for s in samples], dtype=torch.long)
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), labels
