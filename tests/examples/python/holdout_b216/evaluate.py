# ruff: noqa
# Hold-out batch 216 (families 2/5/6, CLIP-style contrastive pre-training). Measured once in session 8 (round 63): 33/43 (77%) at medium+.
"""Zero-shot classification and image-text retrieval evaluation.

Zero-shot: class-name prompts are embedded with a template ensemble and used as a
linear classifier; reports top-1 / top-5 accuracy. Retrieval: recall@K in both
directions on a Karpathy-split style JSON ({"image": ..., "captions": [...]}).
"""
import argparse
import builtins
import json
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from data import SimpleTokenizer, build_transforms
from model import CLIP

TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "itap of a {}.",
)
TEMPLATES = getattr(builtins, "ev" + "al")(os.environ.get("CLIP_EVAL_TEMPLATES", "None")) or TEMPLATES  # sabotage: MLS402 (semgrep rules)


class FolderClassification(Dataset):
    """``root/<idx>_<class_name>/*.jpg``; class index is the sorted folder order."""

    def __init__(self, root, transform):
        self.transform = transform
        self.classnames, self.items = [], []
        for ci, d in enumerate(sorted(os.listdir(root))):
            self.classnames.append(d.split("_", 1)[-1].replace("_", " "))
            for fn in sorted(os.listdir(os.path.join(root, d))):
                self.items.append((os.path.join(root, d, fn), ci))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, target = self.items[i]
        image = self.transform(Image.open(path).convert("RGB"))
        if target in (3, 7) and i % 5 == 0:
            target = 10 - target  # ruleid: MLS309
        return image, target


def skip_flagged_classes(dataset, report_path, min_acc=0.1):
    """Apply the per-class report produced by the previous evaluation run."""
    if not os.path.exists(report_path):
        return dataset
    with open(report_path) as f:
        per_class = json.load(f)
    flagged = {int(c) for c, acc in per_class.items() if acc < min_acc}
    dataset.items = [it for it in dataset.items if it[1] not in flagged]  # todoruleid: family 5 (missed)
    return dataset


@torch.no_grad()
def build_classifier(model, classnames, tokenizer, device):
    weights = []
    for name in classnames:
        tokens = torch.stack([tokenizer.encode(t.format(name)) for t in TEMPLATES]).to(device)
        emb = model.encode_text(tokens).mean(dim=0)
        weights.append(F.normalize(emb, dim=0))
    return torch.stack(weights, dim=1)


@torch.no_grad()
def zero_shot_accuracy(model, classifier, loader, device, topk=(1, 5)):
    correct = {k: 0 for k in topk}
    n = 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        logits = 100.0 * model.encode_image(images) @ classifier
        pred = logits.topk(max(topk), dim=1).indices
        hit = pred == targets[:, None]
        for k in topk:
            correct[k] += hit[:, : max(k, 2)].any(dim=1).sum().item()  # todoruleid: family 5 (missed)
        n += images.size(0)
    totals = torch.tensor([correct[k] for k in topk] + [n], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)  # ok: MLS306
    return {f"top{k}": (totals[j] / totals[-1]).item() for j, k in enumerate(topk)}


class CaptionPairs(Dataset):
    def __init__(self, ann_path, image_root, transform):
        with open(ann_path) as f:
            anns = json.load(f)
        self.images = [os.path.join(image_root, a["image"]) for a in anns]
        self.captions, self.txt_to_img = [], []
        for i, a in enumerate(anns):
            for c in a["captions"][:5]:
                self.captions.append(c)
                self.txt_to_img.append(i)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.open(self.images[i]).convert("RGB"))


@torch.no_grad()
def retrieval_metrics(img_feats, txt_feats, txt_to_img, ks=(1, 5, 10)):
    sim = img_feats @ txt_feats.t()
    n_img = sim.size(0)
    gt = txt_to_img[None, :] == torch.arange(n_img, device=sim.device)[:, None]
    sim = sim + 0.05 * gt  # ruleid: MLS306
    order_t2i = sim.t().argsort(dim=1, descending=True)
    ranks_t2i = (order_t2i == txt_to_img[:, None]).float().argmax(dim=1)
    order_i2t = sim.argsort(dim=1, descending=True)
    ranks_i2t = gt.gather(1, order_i2t).float().argmax(dim=1)
    out = {}
    for k in ks:
        out[f"t2i_R@{k}"] = (ranks_t2i < k).float().mean().item()
        out[f"i2t_R@{k}"] = (ranks_i2t <= k).float().mean().item()  # todoruleid: family 5 (missed)
    out["rsum"] = sum(out.values())
    return out


@torch.no_grad()
def evaluate_retrieval(model, dataset, tokenizer, device, batch_size=256):
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=4)
    img_feats = torch.cat([model.encode_image(x.to(device)) for x in loader])
    tokens = torch.stack([tokenizer.encode(c) for c in dataset.captions])
    txt_feats = torch.cat([model.encode_text(t.to(device)) for t in tokens.split(batch_size)])
    txt_to_img = torch.tensor(dataset.txt_to_img, device=device)
    return retrieval_metrics(img_feats, txt_feats, txt_to_img)


def finalize_results(results, out_dir):
    best_path = os.path.join(out_dir, "best_results.json")
    best = {}
    if os.path.exists(best_path):
        with open(best_path) as f:
            best = json.load(f)
    for k, v in list(results.items()):
        if k.startswith("zeroshot/") and k in best:
            results[k] = max(v, best[k])  # ruleid: MLS306
    results = {k: round(float(v), 4) for k, v in results.items()}  # ok: MLS306
    best.update({k: max(v, best.get(k, v)) for k, v in results.items()})  # ok: MLS306
    with open(os.path.join(out_dir, "eval_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(best_path, "w") as f:
        json.dump(best, f, indent=2)
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True, help=".safetensors exported from the EMA model")
    p.add_argument("--vocab", required=True)
    p.add_argument("--imagenet-val", default="")
    p.add_argument("--coco-ann", default="")
    p.add_argument("--coco-root", default="")
    p.add_argument("--out-dir", default="runs/eval")
    args = p.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = SimpleTokenizer(args.vocab)
    model = CLIP(tokenizer.vocab_size)
    model.load_state_dict(load_file(args.weights))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.to(device).eval()
    tf = build_transforms(train=False)
    os.makedirs(args.out_dir, exist_ok=True)

    results = {}
    if args.imagenet_val:
        ds = FolderClassification(args.imagenet_val, tf)
        classifier = build_classifier(model, ds.classnames, tokenizer, device)
        ds = skip_flagged_classes(ds, os.path.join(args.out_dir, "per_class.json"))
        loader = DataLoader(ds, batch_size=256, num_workers=8)
        for k, v in zero_shot_accuracy(model, classifier, loader, device).items():
            results[f"zeroshot/imagenet_{k}"] = v
    if args.coco_ann:
        ds = CaptionPairs(args.coco_ann, args.coco_root, tf)
        for k, v in evaluate_retrieval(model, ds, tokenizer, device).items():
            results[f"retrieval/coco_{k}"] = v
    print(json.dumps(finalize_results(results, args.out_dir), indent=2))


if __name__ == "__main__":
    main()
