# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Weight EMA and checkpoint averaging (how the zoo's reported `*_avg` weights are produced).

    python average_checkpoints.py output/run --last 5 --out output/run/avg5.safetensors
"""
import argparse
import copy
import glob
import os

import torch
from safetensors.torch import save_file


class ModelEma:
    def __init__(self, model, decay=0.9999):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        msd = model.state_dict()
        for k, ema_v in self.module.state_dict().items():
            v = msd[k].detach().to(ema_v.device)
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(v, alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                ema_v.copy_(v)  # ok: MLS302, MLS303, MLS304, MLS305


def average_checkpoints(paths, key="model"):
    avg = None
    for path in paths:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        sd = sd.get(key, sd)
        if avg is None:
            avg = {k: v.clone().double() if v.is_floating_point() else v.clone() for k, v in sd.items()}
            continue
        for k, v in sd.items():
            if v.is_floating_point():
                avg[k].add_(v.double())
    for k, v in avg.items():
        if v.is_floating_point():
            avg[k] = v.div_(len(paths)).float()  # ok: MLS302, MLS303, MLS304, MLS305
    return avg


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--last", type=int, default=5)
    p.add_argument("--key", default="model")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    paths = sorted(glob.glob(os.path.join(args.run_dir, "ep*.pth")))[-args.last:]
    if not paths:
        raise SystemExit(f"no checkpoints found in {args.run_dir}")  # ok: MLS307
    print("averaging:", *map(os.path.basename, paths))
    save_file(average_checkpoints(paths, args.key), args.out)


if __name__ == "__main__":
    main()
