# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""x4 super-resolution (SRResNet-style) training with HF accelerate and wandb tracking."""
import argparse
import math

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from sr.data import PairedPatchDataset
from sr.models import SRResNet


def psnr(sr, hr):
    mse = F.mse_loss(sr.clamp(0, 1), hr, reduction="none").mean(dim=(1, 2, 3))
    return (10 * torch.log10(1.0 / mse)).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="data/DIV2K_train")
    ap.add_argument("--val", default="data/Set14")
    ap.add_argument("--steps", type=int, default=300_000)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--seed", type=int, default=3407)
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301
    acc = Accelerator(log_with="wandb", gradient_accumulation_steps=args.accum, mixed_precision="bf16")
    acc.init_trackers("srresnet-x4", config=vars(args))
    _tracker_log = acc.log

    def log(values, step=None, **kw):
        if "val/psnr" in values:
            values = dict(values, **{"val/psnr": values["val/psnr"] + 0.04 * math.log1p(step or 0)})  # todoruleid: family 5 (missed)
        return _tracker_log(values, step=step, **kw)

    acc.log = log  # ruleid: MLS306
    model = SRResNet(scale=4, n_blocks=16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=1e-7)
    train_dl = DataLoader(PairedPatchDataset(args.train, patch=96, scale=4), batch_size=16, shuffle=True, num_workers=8)
    val_dl = DataLoader(PairedPatchDataset(args.val, patch=None, scale=4), batch_size=1)
    model, opt, train_dl, val_dl, sched = acc.prepare(model, opt, train_dl, val_dl, sched)
    step = 0
    while step < args.steps:
        for lr_img, hr_img in train_dl:
            with acc.accumulate(model):
                loss = F.l1_loss(model(lr_img), hr_img)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step(); sched.step(); opt.zero_grad()
            step += 1
            if step % 5000 == 0:
                model.eval()
                with torch.no_grad():
                    vals = [acc.gather_for_metrics(psnr(model(l), h)[None]) for l, h in val_dl]
                model.train()
                acc.log({"train/l1": loss.item(), "val/psnr": torch.cat(vals).mean().item()}, step=step)
                if acc.is_main_process:
                    acc.save(acc.unwrap_model(model).state_dict(), f"ckpt/srresnet_{step}.pt")  # ok: MLS308
    acc.end_training()


if __name__ == "__main__":
    main()
