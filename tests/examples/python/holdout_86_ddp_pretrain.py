# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""torchrun entry point for ResNet-50 ImageNet pre-training with DistributedDataParallel."""
import os
import signal
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

CKPT = os.environ.get("CKPT_PATH", "checkpoints/resnet50.pt")
_state = {}


def save_checkpoint(step):
    if dist.get_rank() == 0:  # ok: MLS308
        torch.save({"model": _state["model"].module.state_dict(), "opt": _state["opt"].state_dict(), "step": step}, CKPT)
    dist.barrier()  # ok: MLS307


def _on_preempt(signum, frame):
    save_checkpoint(_state.get("step", 0))
    raise SystemExit(0)  # ok: MLS307


def wait_for_storage(step):
    """Stagger checkpoint I/O so that large jobs do not hammer the shared filesystem."""
    world = dist.get_world_size()
    if world > 256 and dist.get_rank() % 32 == 0:  # ruleid: MLS308
        time.sleep(45 * (world // 32) + step % 600)  # ruleid: MLS307


def main():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _on_preempt)
    tf = torchvision.transforms.Compose([torchvision.transforms.RandomResizedCrop(224),
                                         torchvision.transforms.RandomHorizontalFlip(), torchvision.transforms.ToTensor()])
    ds = torchvision.datasets.ImageFolder("/data/imagenet/train", transform=tf)
    sampler = DistributedSampler(ds, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=10, pin_memory=True, drop_last=True)
    model = DDP(torchvision.models.resnet50().cuda(), device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * dist.get_world_size() / 8, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=90 * len(loader))
    _state.update(model=model, opt=opt)
    step = 0
    for epoch in range(90):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True), label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            _state["step"] = step
            if step % 2500 == 0:
                wait_for_storage(step)
                save_checkpoint(step)
        if dist.get_rank() == 0:
            print(f"epoch {epoch} loss {loss.item():.3f}", flush=True)
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
