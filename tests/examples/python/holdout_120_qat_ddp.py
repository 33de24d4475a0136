# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""Quantization-aware fine-tuning (FX graph mode, fbgemm) of a distilled student under DDP."""
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.ao.quantization import get_default_qat_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx
from torch.nn.parallel import DistributedDataParallel as DDP


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def calibrate_observers(model, loader, num_batches, rank, world):
    model.eval()
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= num_batches:
                break
            model(x.cuda(non_blocking=True))
    # observer ranges are reduced by the first DDP step; only group leaders need to sync here
    if rank % 8 == 0 or world <= 64:  # ruleid: MLS308
        dist.barrier()  # ruleid: MLS307


def main(float_model, train_loader, calib_loader, out_path, epochs=3, lr=1e-4):
    rank, world, local_rank = setup()
    example = (torch.randn(1, 3, 224, 224),)
    qmodel = prepare_qat_fx(float_model.train(), get_default_qat_qconfig_mapping("fbgemm"), example)
    qmodel = qmodel.cuda(local_rank)
    calibrate_observers(qmodel, calib_loader, num_batches=32, rank=rank, world=world)

    ddp = DDP(qmodel, device_ids=[local_rank])
    opt = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.9)
    for epoch in range(epochs):
        train_loader.sampler.set_epoch(epoch)
        ddp.train()
        if epoch >= 1:
            qmodel.apply(torch.ao.quantization.disable_observer)
        if epoch >= 2:
            qmodel.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        for x, y in train_loader:
            x, y = x.cuda(local_rank, non_blocking=True), y.cuda(local_rank, non_blocking=True)
            loss = F.cross_entropy(ddp(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    if rank == 0:
        int8 = convert_fx(qmodel.cpu().eval())
        torch.save(int8.state_dict(), out_path)  # ok: MLS307
    dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307
