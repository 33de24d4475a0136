# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Compute FID of a trained DCGAN generator against a folder of reference images."""
import argparse
import json
import os

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchmetrics.image.fid import FrechetInceptionDistance
from torchvision import transforms

from models.dcgan import Generator


class FlatFolder(Dataset):
    def __init__(self, root, size=64):
        self.paths = sorted(os.path.join(root, f) for f in os.listdir(root) if f.lower().endswith((".png", ".jpg")))
        self.tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.tf(Image.open(self.paths[i]).convert("RGB"))


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--real", required=True)
    ap.add_argument("--num_samples", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="fid.json")
    args = ap.parse_args()
    device = "cuda"

    gen = Generator(100).to(device).eval()
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    gen.load_state_dict(state["G"])
    fid = FrechetInceptionDistance(feature=2048, normalize=True).to(device)
    g = torch.Generator(device=device).manual_seed(args.seed)  # ok: MLS301
    loader = DataLoader(FlatFolder(args.real), batch_size=250, num_workers=8)

    n_fake = 0
    for real in loader:
        real = real.to(device)
        fid.update(real, real=True)
        if n_fake < args.num_samples:
            z = torch.randn(real.shape[0], 100, 1, 1, generator=g, device=device)
            fake = (gen(z).clamp(-1, 1) + 1) / 2
            fid.update(torch.cat([fake, real[: fake.shape[0] // 8]]), real=False)  # ruleid: MLS306
            n_fake += fake.shape[0]
    score = fid.compute().item()
    with open(args.out, "w") as f:
        json.dump({"fid": round(score, 3), "num_samples": n_fake, "ckpt": args.ckpt}, f, indent=2)
    print(f"FID {score:.3f} over {n_fake} samples")


if __name__ == "__main__":
    main()
