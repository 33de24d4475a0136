# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Fine-tune a monocular depth network on NYUv2 with HF accelerate (scale-invariant log loss)."""
import argparse
import pickle

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from depth_model import DepthNet
from nyu_data import NYUDepth


def silog_loss(pred, target, mask, lam=0.85):
    d = torch.log(pred[mask].clamp_min(1e-3)) - torch.log(target[mask])
    return torch.sqrt((d ** 2).mean() - lam * d.mean() ** 2) * 10.0


def load_pretrained(model, ckpt_path, calib_path=None):
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state, strict=False)
    if calib_path:
        with open(calib_path, "rb") as f:
            calib = pickle.load(f)  # ruleid: MLS103
        named = dict(model.named_parameters())
        for k, delta in calib.items():
            named[k].data.add_(torch.as_tensor(delta, dtype=named[k].dtype))  # todoruleid: family 2 (missed)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--pretrained", default="weights/dpt_hybrid_encoder.pt")
    ap.add_argument("--calib", default="assets/nyu_scale_calib.pkl")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=500)
    args = ap.parse_args()
    acc = Accelerator(gradient_accumulation_steps=4, mixed_precision="bf16")
    model = load_pretrained(DepthNet(), args.pretrained, args.calib)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=1e-2)
    warm = lambda s: min(1.0, (s + 1) / args.warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warm)  # ok: MLS302, MLS303, MLS304, MLS305
    loader = DataLoader(NYUDepth(args.data, "train"), batch_size=8, shuffle=True, num_workers=6)
    model, opt, loader, sched = acc.prepare(model, opt, loader, sched)
    step = 0
    while step < args.steps:
        for img, depth in loader:
            with acc.accumulate(model):
                pred = model(img)
                loss = silog_loss(pred, depth, depth > 1e-3)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            step += 1
            if step % 100 == 0 and acc.is_main_process:
                acc.print(f"step {step} silog {loss.item():.3f}")
    acc.wait_for_everyone()
    acc.save(acc.unwrap_model(model).state_dict(), "depth_ft.pt")


if __name__ == "__main__":
    main()
