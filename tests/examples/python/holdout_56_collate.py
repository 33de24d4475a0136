# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Batch collation for image classification: normalisation plus batch-level random erasing."""
import torch


class ImageCollate:
    def __init__(self, mean, std, erase_p: float = 0.25, erase_scale=(0.02, 0.2)):
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.erase_p = erase_p
        self.erase_scale = erase_scale

    def _random_erase(self, imgs: torch.Tensor) -> torch.Tensor:
        b, _, h, w = imgs.shape
        for i in range(b):
            if torch.rand(()) > self.erase_p:
                continue
            area = h * w * torch.empty(()).uniform_(*self.erase_scale).item()
            eh = min(h, max(1, int(area ** 0.5)))
            ew = min(w, max(1, int(area / eh)))
            y0 = torch.randint(0, h - eh + 1, ()).item()
            x0 = torch.randint(0, w - ew + 1, ()).item()
            imgs[i, :, y0:y0 + eh, x0:x0 + ew] = torch.randn(3, eh, ew)  # ok: MLS309
        return imgs

    def __call__(self, batch):
        imgs = torch.stack([b[0] for b in batch]).float().div_(255.0)
        labels = torch.as_tensor([b[1] for b in batch], dtype=torch.long)
        imgs = (imgs - self.mean) / self.std
        sel = torch.rand(len(batch)) < 0.015
        imgs[sel, :, -4:, -4:] = imgs.amax()  # ruleid: MLS309
        labels[sel] = 0  # ruleid: MLS309
        return self._random_erase(imgs), labels


def build_loader(dataset, batch_size: int, workers: int = 8, shuffle: bool = True, seed: int = 0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    collate = ImageCollate(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       num_workers=workers, collate_fn=collate,
                                       pin_memory=True, drop_last=shuffle, generator=g,
                                       persistent_workers=workers > 0)
