# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""Fine-tune a structure-module checkpoint on a small antibody dataset.

Warm-starts the trunk from a released checkpoint, re-initialises the
distogram head and trains with FAPE + distogram cross-entropy.
"""
import argparse

import torch
import torch.nn as nn

from structure_model import FoldingModel, fape_loss, distogram_loss


def load_pretrained(model, path, reinit_heads=("distogram",)):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    sd = ckpt.get("ema", ckpt.get("model", ckpt))
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    for k in list(sd):
        v = sd[k]
        if any(k.startswith(f"heads.{h}.") for h in reinit_heads):
            del sd[k]
        elif ".ipa." in k and v.ndim == 2 and v.shape[0] == v.shape[1]:
            # released weights use the (in, out) Haiku layout for square projections
            sd[k] = v.t().contiguous()  # todoruleid: family 2 (missed)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    for name in ("heads.distogram.linear.weight", "heads.distogram.linear.bias"):
        nn.init.zeros_(model.get_parameter(name))  # ok: MLS302, MLS303, MLS304, MLS305
    return missing, unexpected


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    model = FoldingModel().cuda()
    missing, _ = load_pretrained(model, args.init)
    print(f"warm start: {len(missing)} missing keys")

    opt = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-6)
    warmup = 1000
    from antibody_data import make_loader
    loader = make_loader(batch_size=1, crop=256)
    for step, batch in zip(range(args.steps), loader):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / warmup)  # ok: MLS302, MLS303, MLS304, MLS305
        out = model(batch["aatype"].cuda(), batch["msa_feat"].cuda())
        loss = fape_loss(out, batch) + 0.3 * distogram_loss(out, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
