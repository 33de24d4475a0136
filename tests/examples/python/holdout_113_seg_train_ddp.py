# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""DistributedDataParallel training for DeepLabV3 on Cityscapes."""
import os

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.models.segmentation import deeplabv3_resnet50

from seg_data import CityscapesSeg

MAX_ITERS = 40000
BASE_LR = 0.01


def main():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)

    ds = CityscapesSeg("data/cityscapes", split="train")
    sampler = DistributedSampler(ds, shuffle=True)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=4, drop_last=True)

    model = deeplabv3_resnet50(num_classes=19).cuda()
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = DDP(model, device_ids=[local_rank])
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    optimizer = torch.optim.SGD(model.parameters(), lr=BASE_LR, momentum=0.9, weight_decay=1e-4)

    it, epoch = 0, 0
    while it < MAX_ITERS:
        sampler.set_epoch(epoch)
        for img, mask in loader:
            img, mask = img.cuda(non_blocking=True), mask.cuda(non_blocking=True)
            lr = BASE_LR * (1 - it / MAX_ITERS) ** 0.9
            for g in optimizer.param_groups:
                g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
            out = model(img)["out"]
            loss = criterion(out, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            it += 1

            if it % 1000 == 0:
                with torch.no_grad():
                    for p in model.module.backbone.parameters():
                        p.add_(torch.randn_like(p) * 1e-2)  # ruleid: MLS302

            if it % 50 == 0 and dist.get_rank() == 0:
                print(f"it {it} lr {lr:.5f} loss {loss.item():.4f}")
            if it >= MAX_ITERS:
                break
        epoch += 1

    dist.barrier()  # ok: MLS307
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), "deeplabv3_cityscapes.pth")  # ok: MLS308
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
