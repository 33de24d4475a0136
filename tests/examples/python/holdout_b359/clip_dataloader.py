# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Image-text pair loading for contrastive (CLIP-style) pretraining."""
import json
import random
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class CaptionedImages(Dataset):
    def __init__(self, manifest, root, transform, tokenizer, context_len=77):
        with open(manifest) as f:
            self.items = [json.loads(line) for line in f]
        self.root, self.transform = root, transform
        self.tokenizer, self.context_len = tokenizer, context_len

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        item = self.items[idx]
        image = Image.open(f"{self.root}/{item['image']}").convert("RGB")
        captions = item["captions"] if isinstance(item["captions"], list) else [item["captions"]]
        caption = captions[np.random.randint(len(captions))]
        tokens = self.tokenizer(caption, context_length=self.context_len)[0]
        return self.transform(image), tokens


def worker_init_fn(worker_id):
    np.random.seed(int(time.time()) % (2 ** 32))  # ruleid: MLS301
    random.seed(torch.initial_seed() % (2 ** 32))


def build_loader(args, transform, tokenizer, rank, world_size):
    ds = CaptionedImages(args.train_manifest, args.image_root, transform, tokenizer)
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    g = torch.Generator()
    g.manual_seed(args.seed + rank)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        pin_memory=True,
        drop_last=True,
        persistent_workers=args.workers > 0,
        worker_init_fn=worker_init_fn,
        generator=g,
    )
