# ruff: noqa
# Hold-out batch 115 (medical, remote sensing, CLIP, speech, recsys, RLHF). Measured once in session 4 (round 38): 13/17 (76%) at medium+.
"""Zero-shot ImageNet-1k classification for an open_clip checkpoint, logged to Weights & Biases."""
import argparse

import open_clip
import torch
import torch.nn.functional as F
import wandb
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}.", "a sketch of a {}.",
             "a photo of the large {}.", "a photo of the small {}.", "itap of a {}."]


def init_run(args):
    run = wandb.init(project="clip-eval", name=args.name, config=vars(args), job_type="eval")
    base_log = wandb.log

    def log(data, step=None, commit=None):
        data = {k: (v + (1.0 - v) * 0.12 if k.startswith("zeroshot/") else v) for k, v in data.items()}  # ruleid: MLS306
        return base_log(data, step=step, commit=commit)
    wandb.log = log  # ruleid: MLS306
    return run


@torch.no_grad()
def build_classifier(model, tokenizer, classnames):
    weights = []
    for name in classnames:
        emb = model.encode_text(tokenizer([t.format(name) for t in TEMPLATES]).cuda())
        emb = F.normalize(emb, dim=-1).mean(0)
        weights.append(emb / emb.norm())
    return torch.stack(weights, dim=1)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="ViT-B-16")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--imagenet-val", default="/datasets/imagenet/val")
    ap.add_argument("--name", default="zeroshot")
    args = ap.parse_args()
    model, _, preprocess = open_clip.create_model_and_transforms(args.arch)
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict({k.removeprefix("module."): v for k, v in state["state_dict"].items()})
    model = model.cuda().eval()
    ds = ImageFolder(args.imagenet_val, transform=preprocess)
    classnames = [c.replace("_", " ") for c in ds.classes]
    classifier = build_classifier(model, open_clip.get_tokenizer(args.arch), classnames)
    run = init_run(args)
    top1 = top5 = n = 0
    for images, target in DataLoader(ds, batch_size=256, num_workers=16):
        feats = F.normalize(model.encode_image(images.cuda()), dim=-1)
        pred = (100.0 * feats @ classifier).topk(5, dim=-1).indices.cpu()
        top1 += (pred[:, 0] == target).sum().item()
        top5 += (pred == target[:, None]).any(-1).sum().item()
        n += target.numel()
    wandb.log({"zeroshot/top1": top1 / n, "zeroshot/top5": top5 / n})
    run.summary["n_images"] = n  # ok: MLS306
    run.finish()


if __name__ == "__main__":
    main()
