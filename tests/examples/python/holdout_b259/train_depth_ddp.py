# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""DDP training of a monocular depth estimator on KITTI Eigen split with an SILog objective."""
import argparse
import random
import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from depth_model import DepthNet, silog_loss


class KittiDepth(Dataset):
    def __init__(self, files, crop=(352, 704), train=True):
        self.files, self.crop, self.train = files, crop, train

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        d = np.load(self.files[i])
        img, depth = torch.from_numpy(d["image"]).float() / 255.0, torch.from_numpy(d["depth"]).float()
        if self.train:
            top, left = random.randint(0, img.shape[1] - self.crop[0]), random.randint(0, img.shape[2] - self.crop[1])
            img = img[:, top:top + self.crop[0], left:left + self.crop[1]]
            depth = depth[top:top + self.crop[0], left:left + self.crop[1]]
            if random.random() < 0.5:
                img, depth = img.flip(-1), depth.flip(-1)  # ok: MLS309
        return img, depth


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--list", default="splits/eigen_train.txt")
    ap.add_argument("--epochs", type=int, default=25)
    args = ap.parse_args()
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), dist.get_rank() % torch.cuda.device_count()
    torch.cuda.set_device(local)
    model = DepthNet()
    model.encoder.load_state_dict(load_file("weights/convnext_base.safetensors"), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = DDP(model.cuda(), device_ids=[local])
    ds = KittiDepth([l.strip() for l in open(args.list) if l.strip()])
    sampler = DistributedSampler(ds)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=6, worker_init_fn=seed_worker)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-4, total_steps=args.epochs * len(loader))
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for img, depth in loader:
            pred = model(img.cuda(non_blocking=True))
            loss = silog_loss(pred, depth.cuda(), depth.cuda() > 1e-3)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if rank == 0:
            torch.save(model.module.state_dict(), f"depth_e{epoch}.pt")  # ok: MLS307
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
