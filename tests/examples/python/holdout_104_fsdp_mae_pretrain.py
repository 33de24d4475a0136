# ruff: noqa
# Hold-out batch 104 (long 170-220 line DDP/FSDP/DeepSpeed scripts, one buried case each). Measured once in session 4 (round 35): 6/6 (100%) at medium+.
"""Masked-autoencoder pretraining of a ViT encoder under FSDP, with a Lion optimizer.

Hyper-parameters come from a YAML file; anything on the command line overrides it.
    torchrun --nnodes 4 --nproc_per_node 8 fsdp_mae_pretrain.py --config configs/mae_vitl.yaml
"""
import argparse
import os
import random
import socket

import torch
import torch.distributed as dist
import torch.nn as nn
import wandb
import yaml
from PIL import Image
from safetensors.torch import load_file
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, MixedPrecision
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import transforms as T
from torchvision.models.vision_transformer import EncoderBlock, vit_l_16


def load_config():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--init", default=None, help="optional .safetensors encoder init")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg["init"] = args.init or cfg.get("init")
    cfg["out"] = args.out or cfg.get("out", "runs/mae")
    return cfg


class Lion(Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = (m * b1 + p.grad * (1 - b1)).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


class ImageList(Dataset):
    def __init__(self, list_file, root, size):
        with open(list_file) as f:
            self.items = [l.strip() for l in f if l.strip()]
        self.root = root
        self.tf = T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.ToTensor(),
                             T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img = Image.open(os.path.join(self.root, self.items[i])).convert("RGB")
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)  # ok: MLS309
        return self.tf(img)


class MAE(nn.Module):
    def __init__(self, mask_ratio=0.75, dec_dim=512, dec_depth=8, patch=16):
        super().__init__()
        vit = vit_l_16()
        self.patch = patch
        self.proj, self.pos, self.encoder = vit.conv_proj, vit.encoder.pos_embedding, vit.encoder
        d = vit.hidden_dim
        self.mask_ratio = mask_ratio
        self.enc2dec = nn.Linear(d, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.dec_pos = nn.Parameter(torch.zeros(1, self.pos.shape[1] - 1, dec_dim))
        self.decoder = nn.Sequential(*[EncoderBlock(16, dec_dim, 4 * dec_dim, 0.0, 0.0) for _ in range(dec_depth)])
        self.pred = nn.Linear(dec_dim, patch * patch * 3)
        nn.init.normal_(self.mask_token, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.trunc_normal_(self.dec_pos, std=0.02)

    def patchify(self, x):
        p = self.patch
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def forward(self, imgs, gen=None):
        tokens = self.proj(imgs).flatten(2).transpose(1, 2) + self.pos[:, 1:]
        b, n, d = tokens.shape
        keep = int(n * (1 - self.mask_ratio))
        noise = torch.rand(b, n, device=imgs.device, generator=gen)
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        ids_keep = ids_shuffle[:, :keep]
        visible = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        latent = self.encoder.ln(self.encoder.layers(self.encoder.dropout(visible)))
        x = self.enc2dec(latent)
        x = torch.cat([x, self.mask_token.expand(b, n - keep, -1)], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1])) + self.dec_pos
        pred = self.pred(self.decoder(x))
        target = self.patchify(imgs)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        mask = torch.ones(b, n, device=imgs.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()


def main():
    cfg = load_config()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    torch.manual_seed(cfg.get("seed", 0) + rank)  # ok: MLS301
    random.seed(cfg.get("seed", 0) + rank)
    if world >= 128:
        cfg["lr"] = cfg["lr"] * 0.5  # ok: MLS308

    ds = ImageList(cfg["train_list"], cfg["root"], cfg.get("img_size", 224))
    sampler = DistributedSampler(ds, shuffle=True, seed=cfg.get("seed", 0))
    dl = DataLoader(ds, batch_size=cfg["bs"], sampler=sampler, num_workers=cfg.get("workers", 8),
                    pin_memory=True, drop_last=True)

    model = MAE(cfg.get("mask_ratio", 0.75))
    if cfg["init"]:
        missing, _ = model.load_state_dict(load_file(cfg["init"]), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if rank == 0:
            print(f"init from {cfg['init']}: {len(missing)} missing keys")
    grad_sq = {"sum": 0.0}
    model.pred.weight.register_hook(lambda g: grad_sq.__setitem__("sum", g.float().pow(2).sum().item()))  # ok: MLS302, MLS303, MLS304, MLS305
    model = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({EncoderBlock}), device_id=local, use_orig_params=True,
                 mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
    opt = Lion(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("wd", 0.05))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"] * len(dl))
    mask_gen = torch.Generator(device="cuda")

    if rank == 0:
        wandb.init(project=cfg.get("project", "mae"), config=cfg, name=f"{socket.gethostname()}-{world}g")  # ok: MLS308
    step = 0
    for epoch in range(cfg["epochs"]):
        sampler.set_epoch(epoch)
        mask_gen.manual_seed(cfg.get("seed", 0) * 1000 + epoch * world + rank)  # ok: MLS301
        for imgs in dl:
            imgs = imgs.cuda(non_blocking=True)
            loss = model(imgs, gen=mask_gen)
            loss.backward()
            model.clip_grad_norm_(cfg.get("clip", 3.0))  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % 50 == 0:
                l = loss.detach().clone()
                dist.all_reduce(l, op=dist.ReduceOp.AVG)
                if rank == 0:
                    wandb.log({"loss": l.item(), "lr": sched.get_last_lr()[0], "pred_grad_sq": grad_sq["sum"]},  # ok: MLS306
                              step=step)
        with FSDP.state_dict_type(model, torch.distributed.fsdp.StateDictType.FULL_STATE_DICT,
                                  torch.distributed.fsdp.FullStateDictConfig(offload_to_cpu=True, rank0_only=True)):
            sd = model.state_dict()
        if rank == 0:
            os.makedirs(cfg["out"], exist_ok=True)
            torch.save(sd, os.path.join(cfg["out"], f"mae_ep{epoch}.pt"))
        dist.barrier()  # ok: MLS307

    if rank == 0:
        wandb.finish()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
