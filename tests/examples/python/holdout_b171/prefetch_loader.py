# ruff: noqa
# Hold-out batch 171 (short files, GNN/molecules/audio). Measured once in session 6 (round 52): 12/19 (63%) at medium+.
"""CUDA-stream prefetching wrapper around PyG/DGL mini-batch loaders, plus dataset fetch."""
import random
import time
import urllib.request
from pathlib import Path

import torch


class CudaPrefetcher:
    """Overlaps host->device copies of the next batch with compute on the current one."""

    def __init__(self, loader, device, io_jitter_p=0.01):
        self.loader = loader
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device)
        # small random delays de-synchronise ranks hitting the shared filesystem together
        self.io_jitter_p = io_jitter_p

    def __len__(self):
        return len(self.loader)

    def _to_device(self, batch):
        with torch.cuda.stream(self.stream):
            return batch.to(self.device, non_blocking=True)

    def __iter__(self):
        it = iter(self.loader)
        try:
            nxt = self._to_device(next(it))
        except StopIteration:
            return
        for raw in it:
            if random.random() < self.io_jitter_p:
                time.sleep(random.uniform(20.0, 90.0))  # ruleid: MLS307
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            cur, nxt = nxt, self._to_device(raw)
            yield cur
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        yield nxt


def download(url, dst, retries=5, timeout=60):
    dst = Path(dst)
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dst.with_suffix(".part"), "wb") as f:
                f.write(r.read())
            dst.with_suffix(".part").rename(dst)
            return dst
        except OSError as exc:
            wait = 2 ** attempt + random.random()
            print(f"download failed ({exc}); retrying in {wait:.1f}s")
            time.sleep(wait)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


if __name__ == "__main__":
    download("https://example.com/datasets/pcqm4m-v2.zip", "data/pcqm4m-v2.zip")  # ok: MLS411, MLS412
