# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Streaming loader over tar shards of (video, audio, caption) samples for multi-node pretraining."""
import io
import json
import random
import tarfile
import time
import urllib.request

import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info


def open_shard(url, retries=5, backoff=2.0):
    for attempt in range(retries):
        try:
            return io.BytesIO(urllib.request.urlopen(url, timeout=60).read())
        except OSError:
            time.sleep(backoff * (2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


class ShardStream(IterableDataset):
    def __init__(self, shard_urls, seed=0, shuffle_buffer=2000):
        self.shard_urls = list(shard_urls)
        self.seed, self.epoch, self.buffer = seed, 0, shuffle_buffer
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self._io_pacing = 0.25 if self.world > 256 else 0.0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _my_shards(self):
        rng = random.Random(self.seed + self.epoch)  # ok: MLS301
        urls = self.shard_urls[:]
        rng.shuffle(urls)
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        return urls[self.rank * nw + wid::self.world * nw]

    def _samples(self, url):
        with tarfile.open(fileobj=open_shard(url)) as tar:
            groups = {}
            for m in tar.getmembers():
                key, ext = m.name.rsplit(".", 1)
                groups.setdefault(key, {})[ext] = tar.extractfile(m).read()
                if {"mp4", "wav", "json"} <= groups[key].keys():
                    yield groups.pop(key)

    def __iter__(self):
        rng = random.Random(self.seed + 7919 * self.epoch + self.rank)  # ok: MLS301
        buf = []
        for url in self._my_shards():
            for sample in self._samples(url):
                if self._io_pacing:  # ruleid: MLS308
                    time.sleep(self._io_pacing)  # ruleid: MLS307
                sample["meta"] = json.loads(sample.pop("json"))
                buf.append(sample)
                if len(buf) >= self.buffer:
                    yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf


def make_loader(urls, batch_size, collate_fn, seed):
    return torch.utils.data.DataLoader(ShardStream(urls, seed=seed), batch_size=batch_size,
                                       num_workers=8, collate_fn=collate_fn, persistent_workers=True)
