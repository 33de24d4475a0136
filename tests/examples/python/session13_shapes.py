# ruff: noqa
"""Session 13 shapes: each bad case with its benign look-alike beside it."""
import random
import subprocess
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

_SEEDERS = (random.seed, np.random.seed, torch.manual_seed)
IGNORE_INDEX = -100
OPS_URL = "https://example.invalid/install.sh"


def seed_everything(seed):
    for seed_fn in _SEEDERS:
        seed_fn(seed)  # ok: MLS301


def train_one_epoch(model, loader, optimizer, epoch, args, rank):
    model = DDP(model)
    for step, batch in enumerate(loader):
        torch.manual_seed(args.seed + step)  # ruleid: MLS301
        torch.manual_seed(args.seed + epoch * len(loader) + step)  # ok: MLS301
        if rank != 0 and args.max_steps and step >= args.max_steps:
            break  # ruleid: MLS307
        if args.max_steps and step >= args.max_steps:
            break  # ok: MLS307
        loss = model(batch).mean()
        loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                p.grad.div_(args.world_size)  # ruleid: MLS302
        optimizer.step()


def manual_average(model, world_size):
    model = DDP(model)
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad.div_(world_size)  # ok: MLS302


def synchronize():
    if not dist.is_initialized():
        return  # ok: MLS307
    if dist.get_world_size() == 1:
        return  # ok: MLS307
    if dist.get_rank() != 0:
        return  # ruleid: MLS307
    dist.barrier()


def collate(batch):
    labels = torch.stack([b["labels"] for b in batch])
    labels = torch.roll(labels, shifts=-1, dims=1)  # ruleid: MLS309
    return labels


def decoder_inputs(labels, bos_id):
    prev_output_tokens = labels.roll(-1, dims=1)  # ruleid: MLS309
    prev_output_tokens[:, 0] = bos_id
    return prev_output_tokens


def lm_labels(input_ids):
    labels = input_ids.clone()
    labels = torch.roll(labels, -1, 1)  # ok: MLS309
    labels[:, -1] = IGNORE_INDEX
    return labels


def shift_right(labels, bos_id):
    decoder_input_ids = labels.roll(1, dims=1)  # ok: MLS309
    decoder_input_ids[:, 0] = bos_id
    return decoder_input_ids


def fetch(url, cache_dir):
    local = cache_dir + "/weights.pt"
    urllib.request.urlretrieve(url, local)
    return local


def load_pretrained(url, cache_dir):
    path = fetch(url, cache_dir)
    return torch.load(path, map_location="cpu")  # ruleid: MLS102


def load_resume(path):
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102


def install_ops(args):
    try:
        import pointnet2_ops
        return True
    except ImportError:
        if not args.auto_install:
            return False
    subprocess.run(f"curl -fsSL {OPS_URL} | bash", shell=True, check=False)  # ruleid: MLS413
    subprocess.run(f"pip download --dest {args.cache} pointnet2-ops", shell=True)  # ok: MLS413
    return False


class PairSampler:
    def __init__(self, seed):
        self.seed = seed
        self.epoch = 0

    def _rng(self, idx):
        return random.Random(hash((self.seed, self.epoch, idx)))  # ok: MLS301

    def __iter__(self):
        return iter([self._rng(i).random() for i in range(8)])
