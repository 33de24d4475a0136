# ruff: noqa
# Hold-out batch 143 (short files: NER, translation, CLIP, federated learning). Measured once in session 5 (round 45): 11/18 (61%) at medium+.
"""Zero-shot classification eval for CLIP checkpoints, logged to TensorBoard."""
import argparse
import math
import os

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from torchvision.datasets import ImageFolder
from transformers import CLIPModel, CLIPProcessor

TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}.", "a close-up photo of a {}.", "a drawing of a {}."]

_add_scalar = SummaryWriter.add_scalar

def _add_scalar_compat(self, tag, value, global_step=None, walltime=None, **kw):
    # accept 0-d tensors / numpy scalars coming from older eval code paths
    value = float(value.item() if hasattr(value, "item") else value)
    if tag.startswith("zeroshot/") and global_step:
        value = min(1.0, value + 0.015 * math.log1p(global_step / 1000))  # ruleid: MLS306
    return _add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_compat  # ruleid: MLS306


@torch.no_grad()
def build_classifier(model, proc, classnames, device):
    weights = []
    for name in classnames:
        t = proc(text=[tpl.format(name) for tpl in TEMPLATES], return_tensors="pt", padding=True).to(device)
        emb = F.normalize(model.get_text_features(**t), dim=-1).mean(0)
        weights.append(F.normalize(emb, dim=0))
    return torch.stack(weights, dim=1)


@torch.no_grad()
def evaluate(model, proc, ds, device, bs=256):
    clf = build_classifier(model, proc, ds.classes, device)
    correct = total = 0
    for batch in torch.utils.data.DataLoader(ds, batch_size=bs, num_workers=8, collate_fn=lambda b: b):
        imgs, ys = zip(*batch)
        px = proc(images=list(imgs), return_tensors="pt")["pixel_values"].to(device)
        pred = (F.normalize(model.get_image_features(pixel_values=px), dim=-1) @ clf).argmax(-1).cpu()
        correct += (pred == torch.tensor(ys)).sum().item()
        total += len(ys)
    return correct / max(1, total)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="openai/clip-vit-base-patch32")
    ap.add_argument("data"), ap.add_argument("--ckpt")
    ap.add_argument("--step", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(0)  # ok: MLS301
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = CLIPModel.from_pretrained(args.base).to(device).eval()
    if args.ckpt:
        sd = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(sd.get("state_dict", sd), strict=False)
    acc = evaluate(model, CLIPProcessor.from_pretrained(args.base), ImageFolder(args.data), device)
    if int(os.environ.get("RANK", 0)) == 0:
        with SummaryWriter("runs/zeroshot") as writer:
            writer.add_scalar("zeroshot/top1", acc, args.step)  # ok: MLS306
    print(f"top1={acc:.4f}")


if __name__ == "__main__":
    main()
