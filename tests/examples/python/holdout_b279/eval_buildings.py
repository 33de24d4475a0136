# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""Distributed evaluation of building footprint models: IoU / F1 with flip test-time augmentation."""
import os
import time
import urllib.request

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from train_unet_buildings import prepare_model
from tiles import BuildingTiles

WEIGHTS_URL = "https://models.example.com/buildings/unet_r34_v5.safetensors"


def fetch(url, dst, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dst)  # ok: MLS411, MLS412
            return dst
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def load_weights(model, path):
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state)
    return model


@torch.no_grad()
def evaluate(root, ckpt=None, thr=0.5):
    dist.init_process_group("nccl")
    rank = dist.get_rank()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if ckpt is None:
        ckpt = "weights/unet_r34_v5.safetensors"
        if rank == 0 and not os.path.exists(ckpt):
            fetch(WEIGHTS_URL, ckpt)
        dist.barrier()  # ok: MLS307
    model = load_weights(prepare_model(), ckpt).cuda().eval()
    ds = BuildingTiles(root, "val")
    sampler = torch.utils.data.distributed.DistributedSampler(ds, shuffle=False)
    stats = torch.zeros(3, device="cuda")  # tp, fp, fn
    for img, mask in torch.utils.data.DataLoader(ds, batch_size=8, sampler=sampler, num_workers=4):
        img, mask = img.cuda(), mask.cuda().bool()
        logits = model(img) + model(img.flip(-1)).flip(-1) + model(img.flip(-2)).flip(-2)
        pred = torch.sigmoid(logits / 3) > thr
        stats += torch.stack([(pred & mask).sum(), (pred & ~mask).sum(), (~pred & mask).sum()]).float()
    dist.all_reduce(stats)
    tp, fp, fn = stats.tolist()
    if dist.get_rank() == 0:
        print(f"IoU={tp / max(tp + fp + fn, 1):.4f} F1={2 * tp / max(2 * tp + fp + fn, 1):.4f}")  # ok: MLS306
    dist.destroy_process_group()
    return tp, fp, fn
