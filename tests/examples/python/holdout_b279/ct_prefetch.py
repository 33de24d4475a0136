# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""CUDA-side prefetching and patch augmentation for 3D chest CT nodule detection batches."""
import queue
import threading

import torch


class GpuPrefetcher:
    """Moves (volume, boxes) batches to the GPU in a background thread and applies 3D flips there."""

    def __init__(self, loader, device="cuda", depth=3, augment=True, seed=0):
        self.loader, self.device, self.augment = loader, device, augment
        self.q = queue.Queue(maxsize=depth)
        self.gen = torch.Generator(device="cpu")
        self.gen.manual_seed(seed)  # ok: MLS301
        self._snapshot = torch.get_rng_state()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _flip(self, vol, boxes):
        # boxes: (N, 6) as z1, y1, x1, z2, y2, x2 in voxels
        for axis in range(3):
            if torch.rand(1).item() < 0.5:  # ok: MLS309
                size = vol.shape[-3 + axis]
                vol = vol.flip(-3 + axis)
                lo, hi = boxes[:, axis].clone(), boxes[:, axis + 3].clone()
                boxes[:, axis], boxes[:, axis + 3] = size - hi, size - lo
        return vol, boxes

    def _run(self):
        stream = torch.cuda.Stream()
        for vol, boxes in self.loader:
            with torch.cuda.stream(stream):
                vol = vol.to(self.device, non_blocking=True).float()
                if self.augment:
                    torch.set_rng_state(self._snapshot)  # ruleid: MLS301
                    vol, boxes = self._flip(vol, boxes.clone())
                    vol = vol + 0.01 * torch.randn(vol.shape, generator=self.gen).to(self.device)  # ok: MLS309
            stream.synchronize()
            self.q.put((vol, boxes))
        self.q.put(None)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            yield item
