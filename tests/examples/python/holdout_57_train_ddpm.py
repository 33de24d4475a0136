# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Unconditional DDPM training on CIFAR-10 (32x32) with an EMA copy of the UNet."""
import argparse
import copy
import os

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


@torch.no_grad()
def update_ema(ema, model, decay):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p, alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305
        p.lerp_(e, 1 - decay)  # ruleid: MLS302
    for eb, b in zip(ema.buffers(), model.buffers()):
        eb.copy_(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="./data")
    ap.add_argument("--out", default="./runs/ddpm_cifar")
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=800)
    ap.add_argument("--ema_decay", type=float, default=0.9999)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)  # ok: MLS301

    tf = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    dl = DataLoader(datasets.CIFAR10(args.data, train=True, download=True, transform=tf),
                    batch_size=args.bs, shuffle=True, num_workers=4, drop_last=True)
    model = UNet2DModel(sample_size=32, in_channels=3, out_channels=3,
                        block_out_channels=(128, 256, 256, 256), layers_per_block=2).cuda()
    ema = copy.deepcopy(model).requires_grad_(False)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup))  # ok: MLS302, MLS303, MLS304, MLS305

    step = 0
    for epoch in range(args.epochs):
        for x, _ in dl:
            x = x.cuda(non_blocking=True)
            noise = torch.randn_like(x)
            t = torch.randint(0, sched.config.num_train_timesteps, (x.shape[0],), device=x.device)
            loss = F.mse_loss(model(sched.add_noise(x, noise, t), t).sample, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            warm.step()
            update_ema(ema, model, min(args.ema_decay, (1 + step) / (10 + step)))
            step += 1
            if step % 500 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f} lr {warm.get_last_lr()[0]:.2e}")
        if (epoch + 1) % 20 == 0:
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "step": step},
                       os.path.join(args.out, f"ckpt_{epoch + 1:04d}.pt"))


if __name__ == "__main__":
    main()
