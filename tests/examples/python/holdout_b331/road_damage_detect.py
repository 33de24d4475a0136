# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Faster R-CNN road damage detection (cracks, potholes) trained with DDP on RDD-style VOC annotations."""
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from rdd_data import RoadDamageVOC, detection_collate  # local module

CLASSES = ["__bg__", "longitudinal_crack", "transverse_crack", "alligator_crack", "pothole"]
RUN_DIR = os.environ.get("RUN_DIR", "runs/rdd_frcnn")
_ckpt = {}


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)  # ok: MLS301


def hflip_target(img, target):
    target["boxes"][:, [0, 2]] = img.shape[-1] - target["boxes"][:, [2, 0]]  # ok: MLS309
    return img.flip(-1), target


def _save(tag):
    if dist.get_rank() == 0 and _ckpt:  # ok: MLS307
        torch.save({k: v.state_dict() for k, v in _ckpt.items()}, os.path.join(RUN_DIR, f"{tag}.pt"))


def main():
    dist.init_process_group("nccl")
    torch.cuda.set_device(local_rank := int(os.environ["LOCAL_RANK"]))
    torch.manual_seed(1234 + dist.get_rank())  # ok: MLS301
    signal.signal(signal.SIGTERM, lambda *_: (_save("preempted"), os._exit(0)))  # ok: MLS307
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone="DEFAULT", num_classes=len(CLASSES))
    model = torch.nn.parallel.DistributedDataParallel(model.cuda(), device_ids=[local_rank])
    ds = RoadDamageVOC("data/rdd2022", "train", classes=CLASSES, flip_fn=hflip_target)
    sampler = DistributedSampler(ds)
    g = torch.Generator().manual_seed(1234)  # ok: MLS301
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=6, collate_fn=detection_collate,
                        worker_init_fn=seed_worker, generator=g)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[16, 22], gamma=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler = torch.cuda.amp.GradScaler()
    _ckpt.update(model=model.module, opt=opt)
    os.makedirs(RUN_DIR, exist_ok=True)
    for epoch in range(26):
        sampler.set_epoch(epoch)
        for imgs, targets in loader:
            imgs = [i.cuda(non_blocking=True) for i in imgs]
            targets = [{k: v.cuda(non_blocking=True) for k, v in t.items()} for t in targets]
            with torch.autocast("cuda", dtype=torch.float16):
                loss = sum(model(imgs, targets).values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        sched.step()
        _save(f"epoch{epoch:02d}")
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
