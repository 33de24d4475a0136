# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""Train a feed-forward style transfer network with Hugging Face Accelerate."""
import argparse
import copy
import signal
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from PIL import Image
from torchvision import datasets, models, transforms


def conv(cin, cout, k, s=1, up=False):
    layers = [nn.Upsample(scale_factor=2)] if up else []
    return nn.Sequential(*layers, nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k, s),
                         nn.InstanceNorm2d(cout, affine=True), nn.ReLU())


def gram(f):
    b, c, h, w = f.shape
    return f.flatten(2) @ f.flatten(2).transpose(1, 2) / (c * h * w)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    acc = Accelerator(mixed_precision="fp16", gradient_accumulation_steps=4)
    set_seed(args.seed)  # ok: MLS301
    net = nn.Sequential(conv(3, 32, 9), conv(32, 64, 3, 2), conv(64, 128, 3, 2),
                        conv(128, 64, 3, up=True), conv(64, 32, 3, up=True), nn.Conv2d(32, 3, 9, padding=4))
    ema = copy.deepcopy(net).requires_grad_(False).to(acc.device)
    vgg = models.vgg16()
    vgg.load_state_dict(torch.load("weights/vgg16.pth", map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    vgg = vgg.features[:16].eval().requires_grad_(False).to(acc.device)
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(256), transforms.ToTensor()])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder("data/coco_train", tf), batch_size=8, shuffle=True)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    net, opt, loader = acc.prepare(net, opt, loader)
    style_gram = gram(vgg(tf(Image.open("styles/mosaic.jpg").convert("RGB")).unsqueeze(0).to(acc.device)))

    def on_sigterm(signum, frame):
        acc.save_state("ckpt/preempted")
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307
    for step, (imgs, _) in enumerate(loader):
        with acc.accumulate(net):
            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, (step + 1) / 500)  # ok: MLS302, MLS303, MLS304, MLS305
            fx, fy = vgg(imgs), vgg(net(imgs))
            loss = F.mse_loss(fy, fx) + 1e5 * F.mse_loss(gram(fy), style_gram.expand(fy.size(0), -1, -1))
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(net.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad()
        if acc.sync_gradients:
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), acc.unwrap_model(net).parameters()):
                    pe.mul_(0.999).add_(p.detach(), alpha=0.001)  # ok: MLS302, MLS303, MLS304, MLS305
        if acc.is_main_process and step % 2000 == 0:
            acc.save(ema.state_dict(), f"ckpt/ema_{step}.pt")  # ok: MLS308


if __name__ == "__main__":
    main()
